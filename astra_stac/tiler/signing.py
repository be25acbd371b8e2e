"""Signed tile URLs: how a browser map reads a scene's tiles without an API key.

A TileJSON answered to a key holder carries tile URLs ending in
`?…&expires={unix}&sig={sig}`, where `sig` is the app's HMAC (the asset
resolver's `UrlSigner`, same key) over the scene's path prefix
`/api/v1/scenes/{scene_id}/` and the expiry. The key itself never appears in a
URL. `ApiKeyMiddleware` lets a GET through without a Bearer key when it carries
a valid signature for the scene in its path and asks for imagery of that scene
(`/tiles/…`, `/preview…`, `/bbox/…`); an altered, foreign or expired signature
is refused with 403. Query parameters (bands, rescale, …) are not signed: the
signature grants the scene's imagery, in any rendering, until it expires.

Expiries are rounded up to `EXPIRY_STEP` seconds so that tile URLs stay the same
for a while and browsers and CDNs can cache them.
"""

from __future__ import annotations

import hmac
import re
import time
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from starlette.datastructures import QueryParams

from astra_stac.assets.signing import UrlSigner, isoformat_z
from astra_stac.errors import InvalidSignature, SignatureExpired

EXPIRY_STEP = 300
SIGNATURE_PARAMS = ("expires", "sig")
# The routes of a scene a signature opens: images, and the tilesets that list them.
_SIGNED_ROUTE = re.compile(r"(?:tiles(?:/.*)?|preview(?:[./].*)?|bbox/.+)")


def url_signer(app: Any) -> UrlSigner:
    """The app's HMAC signer (created, with its key, by the asset resolver)."""
    signer: UrlSigner = app.state.asset_resolver.url_signer
    return signer


class TileUrlSigning:
    """Signs a scene's tile URLs and checks the signature of incoming requests."""

    def __init__(self, api_prefix: str, ttl: int) -> None:
        self.scenes_prefix = f"{api_prefix}/scenes/"
        self.ttl = ttl

    def scope(self, scene_id: str) -> str:
        """What a signature covers: the scene's path prefix."""
        return f"{self.scenes_prefix}{scene_id}/"

    def expiry(self, now: float | None = None) -> int:
        moment = int(time.time() if now is None else now) + self.ttl
        return -(-moment // EXPIRY_STEP) * EXPIRY_STEP

    def sign_url(self, signer: UrlSigner, url: str, scene_id: str, expires: int) -> str:
        """`url` with fresh `expires` and `sig` (any old ones removed)."""
        parts = urlsplit(url)
        query = [
            (k, v)
            for k, v in parse_qsl(parts.query, keep_blank_values=True)
            if k not in SIGNATURE_PARAMS
        ]
        query += [
            ("expires", str(expires)),
            ("sig", signer.signature(self.scope(scene_id), expires)),
        ]
        return urlunsplit(parts._replace(query=urlencode(query, safe=",")))

    def _scene_of(self, path: str) -> str | None:
        """The scene id of a path a signature may open, else None."""
        if not path.startswith(self.scenes_prefix):
            return None
        scene_id, _, rest = path[len(self.scenes_prefix) :].partition("/")
        if not scene_id or not _SIGNED_ROUTE.fullmatch(rest):
            return None
        return scene_id

    def __call__(self, app: Any, path: str, query: QueryParams, now: float | None = None) -> bool:
        """True when the request carries a valid signature for its path; False when it
        carries none or its path cannot be signed; `InvalidSignature` or
        `SignatureExpired` when its signature is bad."""
        expires, sig = query.get("expires"), query.get("sig")
        if sig is None:
            return False
        scene_id = self._scene_of(path)
        if scene_id is None:
            return False
        if not expires or not expires.isdigit() or len(expires) > 12:
            raise InvalidSignature("This tile URL has been altered (bad expires).")
        expected = url_signer(app).signature(self.scope(scene_id), int(expires))
        if not hmac.compare_digest(expected.encode(), sig.encode()):
            raise InvalidSignature(
                "This tile URL has been altered or was not issued for this scene."
            )
        if int(expires) <= (time.time() if now is None else now):
            raise SignatureExpired(
                f"This tile URL expired at {isoformat_z(int(expires))}; "
                "fetch the TileJSON again for fresh URLs."
            )
        return True
