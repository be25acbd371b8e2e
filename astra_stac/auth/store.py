"""The `astra.api_keys` table, reached with psycopg (CLI) or asyncpg (the API)."""

from __future__ import annotations

import logging
from typing import Any

import psycopg
from psycopg.rows import dict_row

from astra_stac.auth.keys import (
    KEY_PREFIX,
    LOOKUP_LENGTH,
    NewKey,
    Scope,
    StoredKey,
    generate_key,
)
from astra_stac.errors import Conflict, InvalidParameter, NotFound

_COLUMNS = (
    "id, name, lookup_id, key_hash, scope, created_at, revoked_at, last_used_at,"
    " providers, collections"
)
audit_log = logging.getLogger("astra.audit")


def _stored(row: Any) -> StoredKey:
    return StoredKey(
        id=row["id"],
        name=row["name"],
        lookup_id=row["lookup_id"],
        key_hash=bytes(row["key_hash"]),
        scope=Scope[row["scope"]],
        created_at=row["created_at"],
        revoked_at=row["revoked_at"],
        last_used_at=row["last_used_at"],
        providers=tuple(row["providers"]) if row["providers"] is not None else None,
        collections=tuple(row["collections"]) if row["collections"] is not None else None,
    )


def create_key(
    dsn: str,
    name: str,
    scope: Scope = Scope.read,
    providers: list[str] | None = None,
    collections: list[str] | None = None,
) -> tuple[NewKey, StoredKey]:
    """Store a new key under `name`; its secret is returned once and never again.

    `providers` / `collections` restrict what the key can see (None: everything).
    """
    new = generate_key()
    with psycopg.connect(dsn, row_factory=dict_row) as conn:
        try:
            row = conn.execute(
                f"INSERT INTO astra.api_keys"
                f" (name, lookup_id, key_hash, scope, providers, collections)"
                f" VALUES (%s, %s, %s, %s, %s, %s) RETURNING {_COLUMNS}",
                (name, new.lookup_id, new.key_hash, scope.name, providers, collections),
            ).fetchone()
        except psycopg.errors.UniqueViolation as exc:
            raise Conflict(f"A live key named {name!r} already exists.") from exc
        except psycopg.errors.CheckViolation as exc:
            raise InvalidParameter(f"Invalid key settings: {exc.diag.message_primary}") from exc
    stored = _stored(row)
    audit_log.info(
        "api key created",
        extra={
            "fields": {
                "event": "key_created",
                "key": name,
                "lookup_id": new.lookup_id,
                "scope": scope.name,
                "providers": providers,
                "collections": collections,
            }
        },
    )
    return new, stored


def list_keys(dsn: str) -> list[StoredKey]:
    """Every key, live and revoked, oldest first."""
    with psycopg.connect(dsn, row_factory=dict_row) as conn:
        rows = conn.execute(f"SELECT {_COLUMNS} FROM astra.api_keys ORDER BY id").fetchall()
    return [_stored(row) for row in rows]


def revoke_key(dsn: str, name_or_prefix: str) -> StoredKey:
    """Revoke the one live key with this name, or whose key starts with this prefix."""
    lookup = name_or_prefix.removeprefix(KEY_PREFIX)[:LOOKUP_LENGTH]
    by_prefix = len(lookup) >= 4 and lookup.isascii() and lookup.isalnum()
    with psycopg.connect(dsn, row_factory=dict_row) as conn:
        rows = conn.execute(
            f"SELECT {_COLUMNS} FROM astra.api_keys WHERE revoked_at IS NULL"
            " AND (name = %s OR (%s AND starts_with(lookup_id, %s)))",
            (name_or_prefix, by_prefix, lookup),
        ).fetchall()
        if not rows:
            raise NotFound(f"No live key is named or starts with {name_or_prefix!r}.")
        if len(rows) > 1:
            names = ", ".join(row["name"] for row in rows)
            raise Conflict(f"{name_or_prefix!r} matches several keys ({names}); be more specific.")
        row = conn.execute(
            f"UPDATE astra.api_keys SET revoked_at = now() WHERE id = %s RETURNING {_COLUMNS}",
            (rows[0]["id"],),
        ).fetchone()
    revoked = _stored(row)
    audit_log.info(
        "api key revoked",
        extra={
            "fields": {"event": "key_revoked", "key": revoked.name, "lookup_id": revoked.lookup_id}
        },
    )
    return revoked
