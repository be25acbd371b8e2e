"""The asset resolver: scene id + bands + format → signed, downloadable hrefs.

The steps follow the spec page: look the scene up, map the bands, prefer the
stored file when it already is what was asked (`direct`), convert otherwise
(`converted`), and sign every href so no further auth is needed.
"""

from __future__ import annotations

import asyncio
import logging
import stat
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from astra_stac.assets.bands import COG_MEDIA_TYPE, ResolvedBand, is_cog_media_type, map_bands
from astra_stac.assets.convert import (
    Converter,
    OutputFormat,
    is_valid_cog,
    known_cog_validation,
    parse_format,
)
from astra_stac.assets.settings import AssetSettings
from astra_stac.assets.signing import (
    HrefSigner,
    PlanetaryComputerSigner,
    SignedHref,
    UrlSigner,
    isoformat_z,
    load_signing_key,
)
from astra_stac.assets.storage import (
    LocalStorage,
    RemoteSizes,
    S3Storage,
    Source,
    SourceKind,
    parse_href,
)
from astra_stac.catalog import Catalog
from astra_stac.errors import AssetUnavailable, InvalidParameter, SceneNotFound
from astra_stac.ids import parse_scene_id
from astra_stac.providers import Provider, ProviderRegistry
from astra_stac.stac.scoping import ASTRA_PROVIDER

logger = logging.getLogger(__name__)
DIRECT = "direct"
CONVERTED = "converted"
_TIFF_MEDIA = ("image/tiff", "image/vnd.stac.geotiff")
_MAX_REMEMBERED = 4096  # hrefs and paths; forgotten all at once past this


@dataclass
class _Output:
    """One resolved band, ready to report."""

    band: ResolvedBand
    href: str
    media_type: str
    size: int | None
    expires_at: float
    signed: bool
    routing: str


@dataclass(frozen=True)
class _LocalFile:
    """A local asset file the resolver may serve, looked at once per request."""

    path: Path  # resolved
    download_path: str
    size: int
    fingerprint: str  # modification time and size: a changed file is validated again


def split_bands(value: str | None) -> list[str] | None:
    """`red,nir` → `["red", "nir"]`; empty or absent → None (every band)."""
    if value is None:
        return None
    names = [part.strip() for part in value.split(",") if part.strip()]
    return names or None


def _epsg_code(holder: dict[str, Any]) -> str | None:
    epsg = holder.get("proj:epsg")
    if isinstance(epsg, int) and not isinstance(epsg, bool):
        return f"EPSG:{epsg}"
    code = holder.get("proj:code")
    if isinstance(code, str) and code.strip():
        return code.strip().upper() if code.upper().startswith("EPSG:") else code.strip()
    return None


def scene_crs(item: dict[str, Any], bands: list[ResolvedBand]) -> str | None:
    """`EPSG:n` from the resolved assets' projection fields, else the item's."""
    for band in bands:
        code = _epsg_code(band.asset)
        if code:
            return code
    return _epsg_code(item.get("properties") or {})


class AssetResolver:
    """Resolves scene assets to hrefs a client can download without further auth."""

    def __init__(
        self,
        settings: AssetSettings,
        signers: list[HrefSigner] | None = None,
    ) -> None:
        self.settings = settings
        self.ttl = settings.signing.signed_url_ttl
        self.local = LocalStorage(settings.storage_root(), settings.cache_dir())
        self.s3 = S3Storage(settings.s3)
        self.signers: list[HrefSigner] = (
            signers
            if signers is not None
            else [PlanetaryComputerSigner(settings.planetary_computer)]
        )
        self.converter = Converter(self.local.cache_dir, settings.convert)
        self.remote_sizes = RemoteSizes(settings.convert.remote_size_timeout_seconds)
        self._url_signer: UrlSigner | None = None
        self._local_paths: dict[str, tuple[Path, str]] = {}
        self._sources: dict[tuple[str | None, str], Source] = {}

    @property
    def url_signer(self) -> UrlSigner:
        """The HMAC signer (its key is read or generated on first use)."""
        if self._url_signer is None:
            try:
                key = load_signing_key(self.settings.signing, self.local.root)
            except OSError as exc:
                logger.error("no signing key: %s", exc)
                raise AssetUnavailable(
                    "The server has no signing key: set ASTRA_SIGNING_KEY, or make the "
                    "storage root writable so one can be generated."
                ) from exc
            self._url_signer = UrlSigner(key)
        return self._url_signer

    async def resolve(
        self,
        catalog: Catalog,
        registry: ProviderRegistry,
        scene_id: str | None,
        bands: str | None,
        fmt: str | None,
        base_url: str,
    ) -> dict[str, Any]:
        """The response body of `GET /assets`."""
        if scene_id is None or not scene_id.strip():
            raise InvalidParameter(
                "Missing required query parameter 'scene_id' (provider:original_id)."
            )
        output = parse_format(fmt)
        scene = parse_scene_id(scene_id.strip())
        item = await catalog.find_scene(scene)
        if item is None:
            raise SceneNotFound(f"No scene with id {str(scene)!r} exists.")
        resolved = map_bands(item, registry, split_bands(bands))
        provider = registry.provider_of_collection(str(item.get("collection", "")))
        # Bands that need no I/O beyond a stat are answered in place; the others run
        # concurrently (signing services, HEAD requests, validations, conversions).
        ready = [self._resolve_at_once(band, output, base_url, provider) for band in resolved]
        waited = iter(
            await asyncio.gather(
                *(
                    self._resolve_band(band, output, base_url, provider)
                    for band, done in zip(resolved, ready, strict=True)
                    if done is None
                )
            )
        )
        outputs = [done if done is not None else next(waited) for done in ready]
        gsds = {b.gsd for b in resolved if b.gsd is not None}
        return {
            "scene_id": str(scene),
            "format": output.value,
            "assets": {o.band.native_name: self._describe(o) for o in outputs},
            "metadata": {
                "crs": scene_crs(item, resolved),
                "resolution": _number(min(gsds)) if gsds else None,
                "source_provider": (item.get("properties") or {}).get(ASTRA_PROVIDER),
                "routing": CONVERTED if any(o.routing == CONVERTED for o in outputs) else DIRECT,
            },
        }

    @staticmethod
    def _describe(out: _Output) -> dict[str, Any]:
        described: dict[str, Any] = {
            "href": out.href,
            "type": out.media_type,
            "title": out.band.title,
            "file:size": out.size,
            "eo:bands": [out.band.eo_band()],
            "expires_at": isoformat_z(out.expires_at),
            "roles": ["data"],
        }
        if out.band.gsd is not None:
            described["gsd"] = _number(out.band.gsd)
        described["astra:routing"] = out.routing
        described["astra:signed"] = out.signed
        return described

    def _resolve_at_once(
        self, band: ResolvedBand, output: OutputFormat, base_url: str, provider: Provider | None
    ) -> _Output | None:
        """Its answer without a task when nothing needs I/O beyond a stat: a local COG
        already validated, an S3 COG whose size is known, a public https COG with a
        `file:size`. None otherwise."""
        if not output.is_geotiff:
            return None
        source = self._source(band.href, provider)
        if source.kind is SourceKind.LOCAL:
            local = self._local_file(source)
            if known_cog_validation(str(local.path), local.fingerprint) is not True:
                return None
            return self._direct_local(band, local, base_url)
        if not is_cog_media_type(band.media_type):
            return None
        if source.kind is SourceKind.S3:
            assert source.bucket is not None and source.key is not None
            size = self.s3.known_size(source.bucket, source.key)
            if size is None:
                return None
            url, signed = self.s3.presign(source.bucket, source.key, self.ttl)
            return _Output(band, url, COG_MEDIA_TYPE, size, self._expiry(), signed, DIRECT)
        size = _declared_size(band)
        if size is None or any(signer.handles(source.href) for signer in self.signers):
            return None
        return _Output(band, source.href, COG_MEDIA_TYPE, size, self._expiry(), False, DIRECT)

    def _source(self, href: str, provider: Provider | None) -> Source:
        """`parse_href`, remembered per provider and href (it runs for every band of
        every request; the allow-lists do not change while the app runs)."""
        key = (provider.prefix if provider is not None else None, href)
        source = self._sources.get(key)
        if source is None:
            source = parse_href(href, self.local.root, provider)
            if len(self._sources) >= _MAX_REMEMBERED:
                self._sources.clear()
            self._sources[key] = source
        return source

    def _direct_local(self, band: ResolvedBand, local: _LocalFile, base_url: str) -> _Output:
        href, expires = self._signed_download(local.download_path, base_url)
        return _Output(band, href, COG_MEDIA_TYPE, local.size, expires, True, DIRECT)

    async def _resolve_band(
        self, band: ResolvedBand, output: OutputFormat, base_url: str, provider: Provider | None
    ) -> _Output:
        source = self._source(band.href, provider)
        local = self._local_file(source) if source.kind is SourceKind.LOCAL else None
        if output.is_geotiff and await self._is_cog(source, band, local):
            return await self._direct(source, band, base_url, local)
        return await self._convert(source, band, output, base_url, local)

    def _expiry(self) -> float:
        return float(int(time.time()) + self.ttl)

    async def _is_cog(self, source: Source, band: ResolvedBand, local: _LocalFile | None) -> bool:
        """Already a COG? Local files are validated; remote ones trusted by media type,
        validated when the media type only says TIFF. Validations are remembered, and a
        remembered one is answered without a thread hop."""
        if local is not None:
            path = str(local.path)
            known = known_cog_validation(path, local.fingerprint)
            if known is not None:
                return known
            return await asyncio.to_thread(is_valid_cog, path, local.fingerprint)
        if is_cog_media_type(band.media_type):
            return True
        media = (band.media_type or "").lower()
        if media and not media.startswith(_TIFF_MEDIA):
            return False
        fingerprint = self._remote_fingerprint(band)
        known = known_cog_validation(source.href, fingerprint)
        if known is not None:
            return known
        signed = await self._sign_remote(source, band)
        return await asyncio.to_thread(is_valid_cog, signed.href, fingerprint, source.href)

    def _local_file(self, source: Source) -> _LocalFile:
        """The file now: where a path resolves and its download path are remembered
        (resolving walks every directory; the download route checks the path again),
        its size and modification time are read on every request."""
        assert source.path is not None
        key = str(source.path)
        known = self._local_paths.get(key)
        if known is None:
            # Refuses files outside the storage root, and missing ones.
            download_path = self.local.download_path(source.path)
            known = (source.path.resolve(), download_path)
            if len(self._local_paths) >= _MAX_REMEMBERED:
                self._local_paths.clear()
            self._local_paths[key] = known
        path, download_path = known
        try:
            status = path.stat()
        except OSError:
            status = None
        if status is None or not stat.S_ISREG(status.st_mode):
            del self._local_paths[key]
            raise AssetUnavailable("The file behind this asset is missing from storage.")
        size = status.st_size
        return _LocalFile(path, download_path, size, f"{status.st_mtime_ns}:{size}")

    async def _sign_remote(self, source: Source, band: ResolvedBand) -> SignedHref:
        if source.kind is SourceKind.S3:
            assert source.bucket is not None and source.key is not None
            url, signed = self.s3.presign(source.bucket, source.key, self.ttl)
            return SignedHref(url, self._expiry(), signed)
        for signer in self.signers:
            if signer.handles(source.href):
                signed_href = await signer.sign(source.href)
                expires = min(signed_href.expires_at or self._expiry(), self._expiry())
                return SignedHref(signed_href.href, expires, signed_href.signed)
        return SignedHref(source.href, self._expiry(), False)

    @staticmethod
    def _remote_fingerprint(band: ResolvedBand) -> str:
        asset = band.asset
        return str(asset.get("file:checksum") or asset.get("file:size") or "")

    def _signed_download(self, download_path: str, base_url: str) -> tuple[str, float]:
        expires = self._expiry()
        return self.url_signer.sign_url(base_url, download_path, int(expires)), expires

    async def _direct(
        self, source: Source, band: ResolvedBand, base_url: str, local: _LocalFile | None
    ) -> _Output:
        if local is not None:
            return self._direct_local(band, local, base_url)
        signed = await self._sign_remote(source, band)
        declared_size = _declared_size(band)
        size: int | None
        if source.kind is SourceKind.S3:
            assert source.bucket is not None and source.key is not None
            size = await self.s3.size(source.bucket, source.key)
            if size is None:
                size = declared_size
        else:
            # http(s): the provider's file:size when it gives one, else ask the host.
            size = declared_size
            if size is None:
                size = await self.remote_sizes.size(source.href, signed.href)
        expires = signed.expires_at or self._expiry()
        return _Output(band, signed.href, COG_MEDIA_TYPE, size, expires, signed.signed, DIRECT)

    async def _convert(
        self,
        source: Source,
        band: ResolvedBand,
        output: OutputFormat,
        base_url: str,
        local: _LocalFile | None,
    ) -> _Output:
        if local is not None:
            read_path = str(local.path)
            source_id = f"{local.path}|{local.fingerprint}"
        else:
            signed = await self._sign_remote(source, band)
            read_path = signed.href
            source_id = f"{source.href}|{self._remote_fingerprint(band)}"
        converted = await self.converter.ensure(read_path, source_id, band.native_name, output)
        href, expires = self._signed_download(self.local.download_path(converted), base_url)
        return _Output(
            band,
            href,
            output.media_type,
            converted.stat().st_size,
            expires,
            True,
            CONVERTED,
        )


def _declared_size(band: ResolvedBand) -> int | None:
    declared = band.asset.get("file:size")
    return declared if isinstance(declared, int) and declared >= 0 else None


def _number(value: float) -> int | float:
    """10.0 → 10, as the spec writes resolutions."""
    return int(value) if float(value).is_integer() else value
