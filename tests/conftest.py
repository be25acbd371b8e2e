"""Fixtures: one embedded PostgreSQL per session, migrated template databases,
a fresh database per test cloned from them, the app in-process and over HTTP."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from pytest_postgresql.janitor import DatabaseJanitor

from astra_stac.app import create_app
from astra_stac.auth import store
from astra_stac.auth.keys import Scope
from astra_stac.db.embedded import SUPERUSER, EmbeddedPostgres
from astra_stac.db.migrate import migrate
from astra_stac.demo import load_demo
from astra_stac.providers import ProviderRegistry, load_registry
from astra_stac.settings import ApiSettings

DATA = Path(__file__).parent / "data"
REAL_FIXTURES = DATA / "real"
EMPTY_TEMPLATE = "astra_template"
DEMO_TEMPLATE = "astra_demo_template"


@dataclass
class Server:
    """PostgreSQL reachable by the tests."""

    cluster: EmbeddedPostgres
    storage: Path

    def janitor(self, dbname: str, template: str | None = None) -> DatabaseJanitor:
        return DatabaseJanitor(
            user=SUPERUSER,
            host="127.0.0.1",
            port=self.cluster.port,
            password=self.cluster.password,
            dbname=dbname,
            template_dbname=template,
            version=15,
        )


@pytest.fixture(scope="session")
def pg_server() -> Iterator[Server]:
    """An embedded PostgreSQL for the whole session (run by an unprivileged user)."""
    base = Path(tempfile.mkdtemp(prefix="astra-tests-", dir="/tmp"))
    os.chmod(base, 0o755)
    cluster = EmbeddedPostgres(base / "db")
    cluster.start()
    server = Server(cluster, base / "storage")
    server.janitor(EMPTY_TEMPLATE).init()
    migrate(cluster.dsn(EMPTY_TEMPLATE))
    server.janitor(DEMO_TEMPLATE, EMPTY_TEMPLATE).init()
    load_demo(cluster.dsn(DEMO_TEMPLATE), load_registry(), server.storage)
    # The demo band files live here: every app built in the tests (and the live
    # server, which inherits the environment) serves and signs them from it.
    try:
        with pytest.MonkeyPatch.context() as patch:
            patch.setenv("ASTRA_STORAGE_ROOT", str(server.storage))
            yield server
    finally:
        cluster.stop()
        shutil.rmtree(base, ignore_errors=True)


def _fresh_database(server: Server, template: str) -> Iterator[str]:
    name = f"test_{uuid.uuid4().hex[:12]}"
    janitor = server.janitor(name, template)
    janitor.init()
    try:
        yield server.cluster.dsn(name)
    finally:
        janitor.drop()


@pytest.fixture
def empty_dsn(pg_server: Server) -> Iterator[str]:
    """A migrated database with no collections or items."""
    yield from _fresh_database(pg_server, EMPTY_TEMPLATE)


@pytest.fixture
def dsn(pg_server: Server) -> Iterator[str]:
    """A migrated database holding the demo scenes."""
    yield from _fresh_database(pg_server, DEMO_TEMPLATE)


@pytest.fixture(scope="session")
def registry() -> ProviderRegistry:
    return load_registry()


def make_client(dsn: str, **settings: object) -> TestClient:
    settings = {"collection_cache_seconds": 0, "rate_limits_enabled": False, **settings}
    api_settings = ApiSettings(**settings)  # type: ignore[arg-type]
    return TestClient(create_app(api_settings=api_settings, dsn=dsn))


@pytest.fixture
def client(dsn: str) -> Iterator[TestClient]:
    with make_client(dsn) as test_client:
        yield test_client


@pytest.fixture
def read_key(dsn: str) -> str:
    return store.create_key(dsn, "tests-read", Scope.read)[0].secret


@pytest.fixture
def auth(read_key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {read_key}"}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class LiveServer:
    """astra-stac under a real uvicorn on loopback."""

    url: str
    key: str
    dsn: str


@pytest.fixture(scope="module")
def live_server(pg_server: Server) -> Iterator[LiveServer]:
    """A real uvicorn serving a clone of the demo database."""
    database = _fresh_database(pg_server, DEMO_TEMPLATE)
    dsn = next(database)
    key = store.create_key(dsn, "live", Scope.read)[0].secret
    port = _free_port()
    env = {
        **os.environ,
        "ASTRA_DATABASE_URL": dsn,
        "ASTRA_COLLECTION_CACHE_SECONDS": "0",
        "ASTRA_RATE_LIMITS_ENABLED": "false",
        "ASTRA_JSON_LOGS": "false",
    }
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "astra_stac.app:create_app",
            "--factory",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--log-level",
            "warning",
        ],
        env=env,
    )
    url = f"http://127.0.0.1:{port}/api/v1"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/_mgmt/ping", timeout=1).status_code == 200:
                break
        except httpx.TransportError:
            time.sleep(0.1)
    else:
        process.kill()
        raise RuntimeError("uvicorn did not start")
    try:
        yield LiveServer(url=url, key=key, dsn=dsn)
    finally:
        process.terminate()
        process.wait(timeout=10)
        next(database, None)
