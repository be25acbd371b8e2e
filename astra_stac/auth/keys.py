"""API keys: `astra_sk_live_` + a 8-character lookup id + 32 random characters.

Only a SHA-256 of the key is stored. A key is found by its lookup id and then
compared in constant time, so neither the lookup nor the comparison reveals how
much of a guessed key was right. Keys are random (≥ 190 bits), so a fast hash is
the right one: there is nothing to brute-force that a slow hash would protect.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import string
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import datetime
from enum import IntEnum

KEY_PREFIX = "astra_sk_live_"
LOOKUP_LENGTH = 8
SECRET_LENGTH = 32
_ALPHABET = string.ascii_letters + string.digits  # 62 symbols, 5.95 bits each


class Scope(IntEnum):
    """What a key may do; each scope includes the ones below it."""

    read = 1
    write = 2
    admin = 3


@dataclass(frozen=True)
class NewKey:
    """A freshly generated key: `secret` is shown once and never stored."""

    secret: str
    lookup_id: str
    key_hash: bytes


@dataclass(frozen=True)
class StoredKey:
    """A key as the database holds it."""

    id: int
    name: str
    lookup_id: str
    key_hash: bytes
    scope: Scope
    created_at: datetime | None = None
    revoked_at: datetime | None = None
    last_used_at: datetime | None = None
    providers: tuple[str, ...] | None = None
    collections: tuple[str, ...] | None = None

    @property
    def restricted(self) -> bool:
        """Whether the key sees only part of the catalogue."""
        return self.providers is not None or self.collections is not None

    def allows(self, collection_id: str, provider: str | None) -> bool:
        """Whether this key may see items of `collection_id` (owned by `provider`)."""
        if self.providers is not None and provider not in self.providers:
            return False
        return self.collections is None or collection_id in self.collections


# The key of the request being served; the catalogue reads it to hide what a
# restricted key may not see, in every route alike.
current_key: ContextVar[StoredKey | None] = ContextVar("current_key", default=None)


def hash_key(secret: str) -> bytes:
    """The stored form of a key."""
    return hashlib.sha256(secret.encode("utf-8")).digest()


def generate_key() -> NewKey:
    """A new random key: 8 lookup + 32 secret characters (~238 bits)."""
    body = "".join(secrets.choice(_ALPHABET) for _ in range(LOOKUP_LENGTH + SECRET_LENGTH))
    secret = KEY_PREFIX + body
    return NewKey(secret=secret, lookup_id=body[:LOOKUP_LENGTH], key_hash=hash_key(secret))


def lookup_id_of(secret: str) -> str | None:
    """The lookup id inside a presented key, or None when it cannot be one of ours."""
    if not secret.startswith(KEY_PREFIX):
        return None
    body = secret[len(KEY_PREFIX) :]
    if len(body) != LOOKUP_LENGTH + SECRET_LENGTH or not body.isascii() or not body.isalnum():
        return None
    return body[:LOOKUP_LENGTH]


def matches(secret: str, stored_hash: bytes) -> bool:
    """Constant-time check of a presented key against a stored hash."""
    return hmac.compare_digest(hash_key(secret), stored_hash)
