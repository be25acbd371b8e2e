"""Checking Bearer keys on each request, and the middleware that does it."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from asyncpg import Pool
from starlette.datastructures import Headers, QueryParams
from starlette.types import ASGIApp, Receive, Send
from starlette.types import Scope as ASGIScope

from astra_stac.auth.keys import Scope, StoredKey, current_key, hash_key, lookup_id_of, matches
from astra_stac.auth.ratelimit import RateLimiter
from astra_stac.errors import (
    DATABASE_UNAVAILABLE,
    DATABASE_UNAVAILABLE_MESSAGE,
    AstraError,
    Forbidden,
    NotFound,
    ServiceUnavailable,
    Unauthorized,
    error_response,
)

logger = logging.getLogger(__name__)
audit_log = logging.getLogger("astra.audit")
_NO_SUCH_KEY = hash_key("astra_sk_live_no-such-key")


class KeyVerifier:
    """Verifies keys against `astra.api_keys` on the primary database.

    Every request reads the key row (an index lookup), so a revoked key fails on
    its next request. Last-used times are kept in memory and written in one
    statement every `flush_seconds`, not on every request.
    """

    def __init__(self, pool: Pool, flush_seconds: float = 30.0) -> None:
        self._pool = pool
        self._flush_seconds = flush_seconds
        self._last_used: dict[int, datetime] = {}
        self._task: asyncio.Task[None] | None = None

    async def verify(self, secret: str) -> StoredKey:
        """The stored key behind `secret`, or `Unauthorized`."""
        lookup_id = lookup_id_of(secret)
        row = None
        if lookup_id is not None:
            row = await self._pool.fetchrow(
                "SELECT id, name, lookup_id, key_hash, scope, revoked_at, providers, collections"
                " FROM astra.api_keys WHERE lookup_id = $1",
                lookup_id,
            )
        stored_hash = bytes(row["key_hash"]) if row is not None else _NO_SUCH_KEY
        if not matches(secret, stored_hash) or row is None or row["revoked_at"] is not None:
            raise Unauthorized("Missing or invalid API key.")
        self._last_used[row["id"]] = datetime.now(UTC)
        return StoredKey(
            id=row["id"],
            name=row["name"],
            lookup_id=row["lookup_id"],
            key_hash=stored_hash,
            scope=Scope[row["scope"]],
            providers=tuple(row["providers"]) if row["providers"] is not None else None,
            collections=tuple(row["collections"]) if row["collections"] is not None else None,
        )

    async def flush(self) -> None:
        """Write the collected last-used times."""
        if not self._last_used:
            return
        pending, self._last_used = self._last_used, {}
        await self._pool.execute(
            "UPDATE astra.api_keys k SET last_used_at = GREATEST(k.last_used_at, u.used)"
            " FROM unnest($1::bigint[], $2::timestamptz[]) AS u(id, used) WHERE k.id = u.id",
            list(pending),
            list(pending.values()),
        )

    async def _flush_forever(self) -> None:
        while True:
            await asyncio.sleep(self._flush_seconds)
            try:
                await self.flush()
            except Exception:  # the database may be away; try again next round
                logger.warning("could not record API key last-used times", exc_info=True)

    def start(self) -> None:
        self._task = asyncio.create_task(self._flush_forever())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        with contextlib.suppress(Exception):
            await self.flush()


def bearer_secret(headers: Headers) -> str | None:
    """The key from `Authorization: Bearer <key>`, if any."""
    scheme, _, value = headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        return None
    return value.strip()


@dataclass(frozen=True)
class AccessPolicy:
    """Which paths are public and which method/path pairs need more than read scope."""

    public_paths: frozenset[str]
    read_only_posts: frozenset[str]
    admin_paths: frozenset[str] = frozenset()
    write_methods: frozenset[str] = frozenset({"POST", "PUT", "PATCH", "DELETE"})
    # GET/HEAD under these prefixes is public because the route checks its own
    # authorisation (signed download URLs).
    public_prefixes: frozenset[str] = frozenset()
    # POSTs that only read, matched in full as regular expressions (tiler statistics).
    read_only_post_patterns: tuple[str, ...] = ()
    # `{prefix}/collections`: paths below it name a collection a restricted key
    # must be allowed to see.
    collections_path: str | None = None

    def collection_of(self, path: str) -> str | None:
        """The collection id a `/collections/{id}[/…]` path names, if any."""
        if self.collections_path is None or not path.startswith(f"{self.collections_path}/"):
            return None
        return path[len(self.collections_path) + 1 :].split("/", 1)[0] or None

    def required_scope(self, method: str, path: str) -> Scope | None:
        """None for a public request, else the scope it needs."""
        if method == "OPTIONS" or path in self.public_paths:
            return None
        if method in ("GET", "HEAD") and any(path.startswith(p) for p in self.public_prefixes):
            return None
        if path in self.admin_paths:
            return Scope.admin
        if (
            method in self.write_methods
            and path not in self.read_only_posts
            and not (
                method == "POST"
                and any(re.fullmatch(p, path) for p in self.read_only_post_patterns)
            )
        ):
            return Scope.write
        return Scope.read


class TooManyRequests(AstraError):
    """A key or a client address over its rate limit."""

    status_code = 429
    code = "TOO_MANY_REQUESTS"

    def __init__(self, description: str, retry_after: int) -> None:
        super().__init__(description)
        self.headers = {"Retry-After": str(retry_after)}


class SignedUrlCheck(Protocol):
    """Checks a signed URL in place of a Bearer key (see `astra_stac.tiler.signing`).

    Returns True when the request carries a valid signature for its path, False
    when it carries none or its path cannot be signed, and raises an
    `AstraError` (403) when the signature is altered or expired.
    """

    def __call__(self, app: Any, path: str, query: QueryParams) -> bool: ...


@dataclass
class RateLimits:
    """Requests per key, and failed authentications per client address."""

    per_key: RateLimiter
    failed_auth: RateLimiter


class ApiKeyMiddleware:
    """Checks the Bearer key of every non-public request before any route runs.

    A middleware rather than per-route dependencies, so that every route —
    STAC, scenes, assets, tiles, and any mounted later — is covered by the one
    explicit public list in `AccessPolicy`. It also applies rate limits, puts
    the key in `current_key` for the catalogue, and writes an audit line for
    every refused request. With `signed_urls`, a read without an Authorization
    header may instead carry a signature (tile URLs of a TileJSON); it then
    runs without a key.
    """

    def __init__(
        self,
        app: ASGIApp,
        policy: AccessPolicy,
        limits: RateLimits | None,
        signed_urls: SignedUrlCheck | None = None,
    ) -> None:
        self.app = app
        self.policy = policy
        self.limits = limits
        self.signed_urls = signed_urls

    async def __call__(self, scope: ASGIScope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        fastapi_app = scope["app"]
        needed = self.policy.required_scope(scope["method"], scope["path"])
        if needed is None or not fastapi_app.state.api_settings.auth_enabled:
            await self.app(scope, receive, send)
            return
        client = (scope.get("client") or ("unknown", 0))[0]
        headers = Headers(scope=scope)
        key: StoredKey | None = None
        try:
            if await self._signed(fastapi_app, client, needed, scope, headers):
                await self.app(scope, receive, send)
                return
            key = await self._authenticate(fastapi_app, client, needed, headers)
            if key.restricted:
                self._check_restriction(fastapi_app, key, needed, scope["path"])
        except AstraError as exc:
            audit_log.warning(
                "request denied",
                extra={
                    "fields": {
                        "event": "request_denied",
                        "status": exc.status_code,
                        "code": exc.code,
                        "method": scope["method"],
                        "path": scope["path"],
                        "client": client,
                        "key": key.name if key else None,
                    }
                },
            )
            response = error_response(exc.status_code, exc.code, exc.description, exc.headers)
            await response(scope, receive, send)
            return
        scope.setdefault("state", {})["api_key"] = key
        token = current_key.set(key)
        try:
            await self.app(scope, receive, send)
        finally:
            current_key.reset(token)

    async def _signed(
        self, app: Any, client: str, needed: Scope, scope: ASGIScope, headers: Headers
    ) -> bool:
        """Whether a signed URL authorises this read (a Bearer key, when sent, wins)."""
        if (
            self.signed_urls is None
            or needed is not Scope.read
            or scope["method"] not in ("GET", "HEAD")
            or "authorization" in headers
        ):
            return False
        query = QueryParams(scope.get("query_string", b""))
        if "sig" not in query:
            return False
        if self.limits and (wait := self.limits.failed_auth.retry_after(client)):
            raise TooManyRequests("Too many failed authentications; slow down.", wait)
        try:
            return self.signed_urls(app, scope["path"], query)
        except AstraError:
            if self.limits:
                self.limits.failed_auth.spend(client)
            raise

    def _check_restriction(self, app: Any, key: StoredKey, needed: Scope, path: str) -> None:
        """A restricted key reaches no collection outside its limits, by any route.

        Reads of such a collection answer as if it did not exist (404); writes
        outside an allowed collection's items, creating collections included, are
        forbidden (403).
        """
        collection_id = self.policy.collection_of(path)
        if collection_id is not None:
            provider = app.state.registry.provider_of_collection(collection_id)
            if not key.allows(collection_id, provider.prefix if provider else None):
                raise NotFound(f"Collection {collection_id} does not exist.")
        items_path = f"{self.policy.collections_path}/{collection_id}/items"
        if needed is Scope.write and (
            collection_id is None or not (path == items_path or path.startswith(f"{items_path}/"))
        ):
            raise Forbidden(
                f"Key {key.name!r} is limited to providers or collections: it may only "
                "write items of the collections it can see."
            )

    async def _authenticate(
        self, app: Any, client: str, needed: Scope, headers: Headers
    ) -> StoredKey:
        if self.limits and (wait := self.limits.failed_auth.retry_after(client)):
            raise TooManyRequests("Too many failed authentications; slow down.", wait)
        secret = bearer_secret(headers)
        try:
            if secret is None:
                raise Unauthorized("Missing API key: send 'Authorization: Bearer astra_sk_live_…'.")
            try:
                key = await app.state.key_verifier.verify(secret)
            except DATABASE_UNAVAILABLE as exc:
                logger.warning("cannot check API keys: %s", exc)
                raise ServiceUnavailable(DATABASE_UNAVAILABLE_MESSAGE) from exc
        except Unauthorized:
            if self.limits:
                self.limits.failed_auth.spend(client)
            raise
        if self.limits and (wait := self.limits.per_key.spend(key.lookup_id)):
            raise TooManyRequests(f"Key {key.name!r} is over its request rate.", wait)
        if key.scope < needed:
            raise Forbidden(
                f"This key has {key.scope.name} scope; this request needs {needed.name}."
            )
        return key
