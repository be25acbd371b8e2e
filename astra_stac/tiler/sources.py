"""Where GDAL reads a scene's band from: the catalogue item's own href, mapped
to a GDAL path, and nothing else.

- `file://` hrefs (and plain paths) → the local path, only inside the storage
  root, as the asset resolver serves them;
- `s3://bucket/key` → `/vsis3/bucket/key` with the bucket's settings (region,
  endpoint, requester-pays, credentials) as GDAL options for that read;
- `http(s)://` → the URL itself (GDAL reads it through `/vsicurl/`), signed
  first when a signer handles its host (Planetary Computer SAS tokens).

Anything else (other schemes, `/vsi…` paths, inline VRT XML) is refused.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from urllib.parse import urlsplit

import boto3

from astra_stac.assets.settings import S3Settings
from astra_stac.assets.signing import HrefSigner
from astra_stac.assets.storage import SourceKind, parse_href
from astra_stac.errors import AssetUnavailable

# GDAL drivers a band file may be opened with (no VRT: a VRT can point at any file).
ALLOWED_DRIVERS = ["GTiff", "JP2OpenJPEG", "JP2KAK", "JP2ECW", "JPEG", "PNG", "WEBP"]


@dataclass(frozen=True)
class GdalSource:
    """What GDAL opens for one asset, and the options it needs for that."""

    path: str
    env: dict[str, str] = field(default_factory=dict)
    local: bool = False


async def _s3_env(settings: S3Settings, bucket: str) -> dict[str, str]:
    conf = settings.for_bucket(bucket)
    env: dict[str, str] = {}
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
        env["AWS_ACCESS_KEY_ID"] = conf.access_key_id
        env["AWS_SECRET_ACCESS_KEY"] = conf.secret_access_key.get_secret_value()
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
) -> GdalSource:
    """The GDAL path (and options) of a catalogue href, or `AssetUnavailable`."""
    if href.startswith(("/vsi", "<")) or href.lower().startswith("vrt:"):
        raise AssetUnavailable("This asset's href cannot be read by the tiler.")
    source = parse_href(href, storage_root)
    if source.kind is SourceKind.LOCAL:
        assert source.path is not None
        resolved = source.path.resolve()
        if not resolved.is_relative_to(storage_root.resolve()):
            raise AssetUnavailable(
                "This asset is stored outside the server's storage root (ASTRA_STORAGE_ROOT) "
                "and cannot be read."
            )
        return GdalSource(str(resolved), local=True)
    if source.kind is SourceKind.S3:
        assert source.bucket is not None and source.key is not None
        return GdalSource(f"/vsis3/{source.bucket}/{source.key}", await _s3_env(s3, source.bucket))
    for signer in signers:
        if signer.handles(href):
            return GdalSource((await signer.sign(href)).href)
    return GdalSource(href)
