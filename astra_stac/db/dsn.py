"""Which PostgreSQL to use: `ASTRA_DATABASE_URL`, the `PG*` variables, or none (embedded)."""

from __future__ import annotations

import os

from astra_stac.settings import DatabaseSettings

LIBPQ_VARIABLES = ("PGHOST", "PGPORT", "PGDATABASE", "PGUSER", "PGSERVICE")


def configured_dsn(settings: DatabaseSettings | None = None) -> str | None:
    """The configured connection string; "" means "from the PG* variables"; None means none."""
    settings = settings or DatabaseSettings()
    if settings.url:
        return settings.url
    if any(os.environ.get(name) for name in LIBPQ_VARIABLES):
        return ""
    return None
