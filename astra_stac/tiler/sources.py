"""Where GDAL reads a scene's band from: the catalogue item's own href, mapped
to a GDAL path, and nothing else.

- `file://` hrefs (and plain paths) → the local path, only inside the storage
  root, as the asset resolver serves them;
- `s3://bucket/key` → `/vsis3/bucket/key` with the bucket's settings (region,
  endpoint, requester-pays, credentials) as GDAL options for that read;
- `http(s)://` → the URL itself (GDAL reads it through `/vsicurl/`), signed
  first when a signer handles its host (Planetary Computer SAS tokens).

Remote hrefs only when the item's provider allows their host; anything else
(other schemes, `/vsi…` paths, inline VRT XML, files outside the root or in its
hidden directories) is refused with `AssetNotAllowed`.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import boto3
from rasterio.session import AWSSession

from astra_stac.assets.settings import S3Settings
from astra_stac.assets.signing import HrefSigner
from astra_stac.assets.storage import OUTSIDE_ROOT, SourceKind, confined, parse_href
from astra_stac.errors import AssetNotAllowed
from astra_stac.providers import Provider


@dataclass(frozen=True)
class GdalSource:
    """What GDAL opens for one asset, and the options it needs for that."""

    path: str
    env: dict[str, Any] = field(default_factory=dict)  # rasterio.Env keyword arguments
    local: bool = False


async def _s3_env(settings: S3Settings, bucket: str) -> dict[str, Any]:
    conf = settings.for_bucket(bucket)
    env: dict[str, Any] = {}
    if conf.region:
        env["AWS_REGION"] = conf.region
    if conf.requester_pays:
        env["AWS_REQUEST_PAYER"] = "requester"
    if conf.endpoint_url:
        parts = urlsplit(conf.endpoint_url)
        env["AWS_S3_ENDPOINT"] = parts.netloc or parts.path
        env["AWS_HTTPS"] = "NO" if parts.scheme == "http" else "YES"
    style = conf.addressing_style or "auto"
    if style == "path" or (style == "auto" and conf.endpoint_url):
        env["AWS_VIRTUAL_HOSTING"] = "FALSE"
    if conf.access_key_id and conf.secret_access_key:
        # rasterio refuses credentials as GDAL options: they travel in a session.
        env["session"] = AWSSession(
            aws_access_key_id=conf.access_key_id,
            aws_secret_access_key=conf.secret_access_key.get_secret_value(),
            region_name=conf.region,
        )
    elif not await asyncio.to_thread(_aws_chain_has_credentials):
        # Public buckets, as the asset resolver falls back to unsigned URLs.
        env["AWS_NO_SIGN_REQUEST"] = "YES"
    return env


@lru_cache(maxsize=1)
def _aws_chain_has_credentials() -> bool:
    """Whether the usual AWS chain (env, profile, instance role) holds credentials."""
    try:
        return boto3.session.Session().get_credentials() is not None
    except Exception:  # a broken profile file is as good as none
        return False


async def gdal_source(
    href: str,
    storage_root: Path,
    s3: S3Settings,
    signers: list[HrefSigner],
    provider: Provider | None,
) -> GdalSource:
    """The GDAL path (and options) of a catalogue href of `provider`'s, or
    `AssetNotAllowed` / `AssetUnavailable`."""
    source = parse_href(href, storage_root, provider)
    if source.kind is SourceKind.LOCAL:
        assert source.path is not None
        if confined(source.path, storage_root.resolve()) is None:
            raise AssetNotAllowed(OUTSIDE_ROOT)
        return GdalSource(str(source.path.resolve()), local=True)
    if source.kind is SourceKind.S3:
        assert source.bucket is not None and source.key is not None
        return GdalSource(f"/vsis3/{source.bucket}/{source.key}", await _s3_env(s3, source.bucket))
    for signer in signers:
        if signer.handles(href):
            return GdalSource((await signer.sign(href)).href)
    return GdalSource(href)
