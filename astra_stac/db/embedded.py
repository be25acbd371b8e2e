"""An embedded PostgreSQL: its own data directory, an unprivileged OS user, loopback only.

Used by `astra-stac serve` when no database is configured, and by the tests.
PostgreSQL refuses to run as root, so when we are root the cluster belongs to
the `postgres` system user (or `astra`, created when missing).
"""

from __future__ import annotations

import contextlib
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

SUPERUSER = "astra"
DATABASE = "astra"
_UNPRIVILEGED_CANDIDATES = ("postgres", "astra")


class EmbeddedPostgresError(RuntimeError):
    """The embedded PostgreSQL could not be set up or started."""


def find_bindir() -> Path:
    """The newest PostgreSQL server binaries on this machine."""
    env = os.environ.get("ASTRA_PG_BINDIR")
    if env:
        return Path(env)
    candidates = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/initdb"),
        key=lambda p: int(p.parent.parent.name) if p.parent.parent.name.isdigit() else 0,
    )
    if candidates:
        return candidates[-1].parent
    initdb = shutil.which("initdb")
    if initdb:
        return Path(initdb).parent
    raise EmbeddedPostgresError(
        "PostgreSQL server binaries (initdb, pg_ctl) were not found. On Debian/Ubuntu: "
        "apt-get install postgresql postgresql-15-postgis-3 (or run `make demo`)."
    )


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _ensure_os_user() -> pwd.struct_passwd:
    for name in _UNPRIVILEGED_CANDIDATES:
        with contextlib.suppress(KeyError):
            return pwd.getpwnam(name)
    subprocess.run(
        ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", "astra"],
        check=True,
    )
    return pwd.getpwnam("astra")


@dataclass
class EmbeddedPostgres:
    """A PostgreSQL cluster kept under `data_dir/pg`, started and stopped with pg_ctl."""

    data_dir: Path

    def __post_init__(self) -> None:
        self.data_dir = Path(self.data_dir).resolve()
        self.bindir = find_bindir()

    @property
    def cluster_dir(self) -> Path:
        return self.data_dir / "pg"

    @property
    def socket_dir(self) -> Path:
        return self.data_dir / "run"

    @property
    def _password_file(self) -> Path:
        return self.data_dir / "pg-password"

    @property
    def _port_file(self) -> Path:
        return self.data_dir / "pg-port"

    @property
    def port(self) -> int:
        return int(self._port_file.read_text().strip())

    @property
    def password(self) -> str:
        return self._password_file.read_text().strip()

    def dsn(self, database: str = DATABASE) -> str:
        """A loopback TCP connection string with the generated password."""
        return (
            f"postgresql://{SUPERUSER}:{quote(self.password, safe='')}@127.0.0.1:"
            f"{self.port}/{database}"
        )

    def _run_as_owner(self, args: list[str], **kwargs: object) -> subprocess.CompletedProcess:
        command = [str(self.bindir / args[0]), *args[1:]]
        if os.geteuid() == 0:
            owner = _ensure_os_user()
            command = ["runuser", "-u", owner.pw_name, "--", *command]
        return subprocess.run(command, check=True, capture_output=True, text=True, **kwargs)  # type: ignore[call-overload]

    def _hand_over(self, path: Path) -> None:
        """Give a directory to the unprivileged owner when we are root."""
        if os.geteuid() != 0:
            return
        owner = _ensure_os_user()
        os.chown(path, owner.pw_uid, owner.pw_gid)

    def initialized(self) -> bool:
        return (self.cluster_dir / "PG_VERSION").exists()

    def init(self) -> None:
        """Create the cluster with a random superuser password (kept in `pg-password`, 0600)."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.data_dir, 0o755)
        if not self._password_file.exists():
            self._password_file.write_text(secrets.token_urlsafe(24))
            os.chmod(self._password_file, 0o600)
        if not self._port_file.exists():
            self._port_file.write_text(str(_free_port()))
        for folder in (self.cluster_dir, self.socket_dir):
            folder.mkdir(mode=0o700, exist_ok=True)
            self._hand_over(folder)
        pwfile = self.socket_dir / "initdb-pw"
        pwfile.write_text(self.password)
        self._hand_over(pwfile)
        try:
            self._run_as_owner(
                [
                    "initdb",
                    "-D",
                    str(self.cluster_dir),
                    "-U",
                    SUPERUSER,
                    "--pwfile",
                    str(pwfile),
                    "--auth-host=scram-sha-256",
                    "--auth-local=scram-sha-256",
                    "--encoding=UTF8",
                    "--locale=C",
                ]
            )
        except subprocess.CalledProcessError as exc:
            raise EmbeddedPostgresError(
                f"initdb failed in {self.cluster_dir}: {exc.stderr.strip()}\n"
                "The directory must be reachable by an unprivileged user; "
                "choose another --data-dir if it sits under a private home directory."
            ) from exc
        finally:
            pwfile.unlink(missing_ok=True)

    def running(self) -> bool:
        if not self.initialized():
            return False
        try:
            self._run_as_owner(["pg_ctl", "status", "-D", str(self.cluster_dir)])
        except subprocess.CalledProcessError:
            return False
        return True

    def start(self) -> None:
        """Start on 127.0.0.1 only; a no-op when it is already running."""
        if not self.initialized():
            self.init()
        if self.running():
            return
        options = (
            f"-c listen_addresses=127.0.0.1 -c port={self.port} "
            f"-c unix_socket_directories={self.socket_dir} "
            "-c max_connections=200 -c shared_buffers=256MB -c fsync=on "
            "-c log_min_messages=warning"
        )
        log = self.data_dir / "postgresql.log"
        log.touch()
        self._hand_over(log)
        try:
            self._run_as_owner(
                [
                    "pg_ctl",
                    "start",
                    "-w",
                    "-t",
                    "60",
                    "-D",
                    str(self.cluster_dir),
                    "-l",
                    str(log),
                    "-o",
                    options,
                ]
            )
        except subprocess.CalledProcessError as exc:
            tail = log.read_text(errors="replace")[-2000:]
            raise EmbeddedPostgresError(f"PostgreSQL did not start:\n{tail}") from exc
        self._ensure_database()

    def stop(self) -> None:
        if self.running():
            self._run_as_owner(["pg_ctl", "stop", "-w", "-m", "fast", "-D", str(self.cluster_dir)])

    def _ensure_database(self, name: str = DATABASE) -> None:
        import psycopg

        deadline = time.monotonic() + 30
        while True:
            try:
                with psycopg.connect(self.dsn("postgres"), autocommit=True) as conn:
                    exists = conn.execute(
                        "SELECT 1 FROM pg_database WHERE datname = %s", (name,)
                    ).fetchone()
                    if not exists:
                        conn.execute(f'CREATE DATABASE "{name}"')
                return
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)


@contextlib.contextmanager
def running_cluster(data_dir: Path) -> Iterator[EmbeddedPostgres]:
    """Use the cluster under `data_dir`; start it for the block if it was not running."""
    cluster = EmbeddedPostgres(data_dir)
    was_running = cluster.running()
    cluster.start()
    try:
        yield cluster
    finally:
        if not was_running:
            cluster.stop()
