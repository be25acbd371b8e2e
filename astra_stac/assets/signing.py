"""Signing: HMAC-signed app download URLs, and SAS tokens for Planetary Computer blobs.

App URLs look like `{base}/download/{path}?expires={unix}&sig={sig}` where
`sig = base64url(HMAC-SHA256(key, "v1\\n{path}\\n{expires}"))`. Changing the path
or the expiry breaks the signature; past the expiry the URL is refused.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import logging
import os
import re
import secrets
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path
from typing import Protocol
from urllib.parse import quote, urlsplit

import httpx

from astra_stac.assets.settings import PlanetaryComputerSettings, SigningSettings
from astra_stac.errors import (
    AssetNotAllowed,
    AssetUnavailable,
    InvalidSignature,
    SignatureExpired,
)

logger = logging.getLogger(__name__)
_SIGNATURE_VERSION = b"v1"
KEY_FILE = Path(".astra") / "signing-key"
# Azure storage account and container names.
_ACCOUNT = re.compile(r"[a-z0-9]{3,24}")
_CONTAINER = re.compile(r"[a-z0-9](?:[a-z0-9]|-(?=[a-z0-9])){2,62}")


@lru_cache(maxsize=256)  # every band of a response carries the same expiry
def isoformat_z(moment: datetime | float) -> str:
    """ISO 8601 in UTC with a `Z`, to the second."""
    if not isinstance(moment, datetime):
        moment = datetime.fromtimestamp(moment, UTC)
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def load_signing_key(settings: SigningSettings, storage_root: Path) -> bytes:
    """The configured key, else the one kept under the storage root (made on first use).

    The generated key is written with O_EXCL, so concurrent workers agree on
    the first one written.
    """
    if settings.signing_key is not None:
        return settings.signing_key.get_secret_value().encode()
    path = storage_root / KEY_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        pass
    else:
        with os.fdopen(fd, "w") as handle:
            handle.write(secrets.token_urlsafe(48))
        logger.warning(
            "ASTRA_SIGNING_KEY is not set: generated a signing key in %s. Replicas that do "
            "not share this storage must all be given the same ASTRA_SIGNING_KEY.",
            path,
        )
    for _ in range(50):  # another worker may be between create and write
        key = path.read_text().strip()
        if key:
            return key.encode()
        time.sleep(0.02)
    raise RuntimeError(f"signing key file {path} is empty")


class UrlSigner:
    """Signs and checks the app's own download URLs."""

    def __init__(self, key: bytes) -> None:
        self._key = key

    def signature(self, path: str, expires: int) -> str:
        message = b"\n".join([_SIGNATURE_VERSION, path.encode(), str(expires).encode()])
        digest = hmac.new(self._key, message, hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()

    def sign_url(self, base_url: str, path: str, expires: int) -> str:
        """`{base_url}download/{path}?expires=…&sig=…` (base_url ends with `/`)."""
        sig = self.signature(path, expires)
        return f"{base_url}download/{quote(path, safe='/')}?expires={expires}&sig={sig}"

    def verify(
        self, path: str, expires: str | None, sig: str | None, now: float | None = None
    ) -> None:
        """Raise unless `sig` signs `path` and `expires`, and `expires` is in the future."""
        if not expires or not sig:
            raise InvalidSignature(
                "This download URL is not signed (expires and sig are required)."
            )
        if not expires.isdigit() or len(expires) > 12:
            raise InvalidSignature("This download URL has been altered.")
        expected = self.signature(path, int(expires))
        if not hmac.compare_digest(expected.encode(), sig.encode()):
            raise InvalidSignature("This download URL has been altered or was not issued here.")
        if int(expires) <= (time.time() if now is None else now):
            raise SignatureExpired(
                f"This download URL expired at {isoformat_z(int(expires))}; "
                "resolve the asset again for a fresh one."
            )


@dataclass(frozen=True)
class SignedHref:
    """An href a client can fetch without further auth, and until when."""

    href: str
    expires_at: float | None
    signed: bool


class HrefSigner(Protocol):
    """Signs `https` hrefs of one kind of host (pluggable; see `PlanetaryComputerSigner`)."""

    def handles(self, href: str) -> bool: ...

    async def sign(self, href: str) -> SignedHref: ...


@dataclass
class _Token:
    token: str
    expires_at: float


class PlanetaryComputerSigner:
    """Appends Planetary Computer SAS tokens to `https://{account}.blob.core.windows.net/{container}/…`.

    Tokens come from `{sas_token_url}/{account}/{container}` and are cached per
    account and container until `token_refresh_margin_seconds` before they
    expire; concurrent requests for the same container share one fetch.
    """

    def __init__(
        self, settings: PlanetaryComputerSettings, client: httpx.AsyncClient | None = None
    ) -> None:
        self.settings = settings
        self._client = client
        self._tokens: dict[tuple[str, str], _Token] = {}
        self._locks: dict[tuple[str, str], asyncio.Lock] = {}
        self.fetches = 0

    def handles(self, href: str) -> bool:
        host = (urlsplit(href).hostname or "").lower()
        return urlsplit(href).scheme in {"http", "https"} and any(
            host == suffix or host.endswith(f".{suffix}") for suffix in self.settings.sas_hosts
        )

    @staticmethod
    def _account_container(href: str) -> tuple[str, str]:
        """Azure account and container names, checked against Azure's naming rules so
        the token request stays a plain `{sas_token_url}/{account}/{container}`."""
        parts = urlsplit(href)
        account = (parts.hostname or "").split(".")[0]
        container = parts.path.lstrip("/").split("/", 1)[0]
        if not _ACCOUNT.fullmatch(account) or not _CONTAINER.fullmatch(container):
            raise AssetNotAllowed(f"Cannot tell the storage account and container of {href}.")
        return account, container

    async def token(self, account: str, container: str) -> _Token:
        key = (account, container)
        margin = self.settings.token_refresh_margin_seconds
        cached = self._tokens.get(key)
        if cached is not None and cached.expires_at - margin > time.time():
            return cached
        lock = self._locks.setdefault(key, asyncio.Lock())
        async with lock:
            cached = self._tokens.get(key)
            if cached is not None and cached.expires_at - margin > time.time():
                return cached
            fresh = await self._fetch(account, container)
            self._tokens[key] = fresh
            return fresh

    async def _fetch(self, account: str, container: str) -> _Token:
        url = f"{self.settings.sas_token_url.rstrip('/')}/{account}/{container}"
        headers = {}
        if self.settings.subscription_key is not None:
            headers["Ocp-Apim-Subscription-Key"] = self.settings.subscription_key.get_secret_value()
        self.fetches += 1
        try:
            async with contextlib.AsyncExitStack() as stack:
                client = self._client
                if client is None:
                    client = await stack.enter_async_context(
                        httpx.AsyncClient(timeout=self.settings.request_timeout_seconds)
                    )
                response = await client.get(url, headers=headers)
                response.raise_for_status()
                body = response.json()
            token = str(body["token"]).lstrip("?")
            expiry = datetime.fromisoformat(str(body["msft:expiry"]).replace("Z", "+00:00"))
        except (httpx.HTTPError, KeyError, TypeError, ValueError) as exc:
            logger.warning("SAS token request to %s failed: %s", url, exc)
            raise AssetUnavailable(
                f"Could not get a SAS token for {account}/{container} from the token service."
            ) from exc
        if expiry.tzinfo is None:
            expiry = expiry.replace(tzinfo=UTC)
        return _Token(token=token, expires_at=expiry.timestamp())

    async def sign(self, href: str) -> SignedHref:
        account, container = self._account_container(href)
        token = await self.token(account, container)
        separator = "&" if urlsplit(href).query else "?"
        return SignedHref(f"{href}{separator}{token.token}", token.expires_at, True)
