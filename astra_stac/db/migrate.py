"""Apply pgstac's migrations (through pypgstac) and astra's own from `migrations/`.

astra migrations are SQL files named `astra--X.Y.Z.sql` (a full version) or
`astra--A.B.C--X.Y.Z.sql` (an upgrade from A.B.C); the first release is the only
full file, every later one is an upgrade. Applied versions are recorded in
`astra.migrations`. Running it twice changes nothing; two runs at once wait for
each other on an advisory lock.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

import psycopg
from pypgstac.db import PgstacDB
from pypgstac.migrate import Migrate

MIGRATIONS_DIR = Path(
    os.environ.get("ASTRA_MIGRATIONS_DIR", Path(__file__).resolve().parents[2] / "migrations")
)
_FILE = re.compile(r"astra--(?:(?P<source>\d+\.\d+\.\d+)--)?(?P<target>\d+\.\d+\.\d+)\.sql")
_LOCK_ID = 0x61737472  # "astr"


@dataclass(frozen=True)
class Migration:
    """One astra migration file."""

    path: Path
    source: str | None
    target: str

    @property
    def target_key(self) -> tuple[int, ...]:
        return tuple(int(x) for x in self.target.split("."))


def available_migrations(folder: Path = MIGRATIONS_DIR) -> list[Migration]:
    """astra migrations in version order."""
    found = []
    for path in folder.glob("astra--*.sql"):
        match = _FILE.fullmatch(path.name)
        if match:
            found.append(Migration(path, match["source"], match["target"]))
    return sorted(found, key=lambda m: (m.target_key, m.source is not None))


def migrate_pgstac(dsn: str) -> str:
    """Bring pgstac to the version that matches the installed pypgstac."""
    with PgstacDB(dsn=dsn) as db:
        return str(Migrate(db).run_migration())


def migrate_astra(dsn: str, folder: Path = MIGRATIONS_DIR) -> list[str]:
    """Apply the astra migrations not yet recorded; return the versions applied."""
    applied: list[str] = []
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("SELECT pg_advisory_lock(%s)", (_LOCK_ID,))
        try:
            conn.execute("CREATE SCHEMA IF NOT EXISTS astra")
            conn.execute(
                "CREATE TABLE IF NOT EXISTS astra.migrations ("
                " version text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
            )
            done = {row[0] for row in conn.execute("SELECT version FROM astra.migrations")}
            for migration in available_migrations(folder):
                if migration.target in done:
                    continue
                if migration.source is None and done:
                    continue  # a full install file applies only to an empty schema
                if migration.source is not None and migration.source not in done:
                    continue
                with conn.transaction():
                    conn.execute(migration.path.read_text("utf-8"))
                    conn.execute(
                        "INSERT INTO astra.migrations (version) VALUES (%s)", (migration.target,)
                    )
                done.add(migration.target)
                applied.append(migration.target)
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (_LOCK_ID,))
    return applied


def migrate(dsn: str) -> tuple[str, list[str]]:
    """Run every migration: pgstac first, then astra."""
    return migrate_pgstac(dsn), migrate_astra(dsn)
