"""Routing and conversion: is the stored file already what was asked, and if not, make it.

- `cog`/`geotiff`: a file that already is a COG is served directly (judged from
  its media type, and for files the server can read by rio-cogeo validation,
  cached); anything else (striped or tiled non-COG GeoTIFF, JPEG2000, …) is
  converted to a COG with `rio_cogeo.cog_translate`.
- `png`/`jpeg`: always a rendering: 8-bit, the source's 2nd–98th percentile
  of valid pixels stretched to 0–255 (per band, configurable), longest side at
  most `ASTRA_CONVERT_RENDER_MAX_SIZE` pixels; PNGs carry the nodata mask as
  alpha.

Conversions run when the asset is resolved, so the resolver can report the
exact `file:size` of what its href returns. They are cached in the storage
cache directory keyed by (source href + fingerprint, band, format, settings);
concurrent requests for one conversion share a single run (an asyncio lock per
key within a process, an exclusive file lock across processes), and the result
appears under its final name only when complete (write to a temporary name in
the same directory, then `os.replace`).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import hashlib
import json
import logging
import os
import re
import threading
import uuid
import weakref
from collections.abc import Iterator
from enum import StrEnum
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from rasterio.vrt import WarpedVRT
from rio_cogeo.cogeo import cog_translate, cog_validate
from rio_cogeo.profiles import cog_profiles
from rio_tiler.io import Reader

from astra_stac.assets.bands import COG_MEDIA_TYPE
from astra_stac.assets.settings import ConvertSettings
from astra_stac.assets.storage import open_raster
from astra_stac.errors import AssetUnavailable, CacheFull, UnknownFormat

logger = logging.getLogger(__name__)
# Less free space than this after a failed conversion: the cache is full.
LOW_SPACE_BYTES = 1 << 20
# Bump when conversion output changes, so cached results are not reused.
CONVERSION_VERSION = 1
GDAL_REMOTE_OPTIONS = {
    "GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR",
    "GDAL_HTTP_MAX_RETRY": "2",
    "GDAL_HTTP_RETRY_DELAY": "1",
    "CPL_VSIL_CURL_USE_HEAD": "NO",
}


class OutputFormat(StrEnum):
    """What the asset resolver can hand out."""

    COG = "cog"
    GEOTIFF = "geotiff"
    PNG = "png"
    JPEG = "jpeg"

    @property
    def is_geotiff(self) -> bool:
        return self in (OutputFormat.COG, OutputFormat.GEOTIFF)

    @property
    def media_type(self) -> str:
        return {
            OutputFormat.PNG: "image/png",
            OutputFormat.JPEG: "image/jpeg",
        }.get(self, COG_MEDIA_TYPE)

    @property
    def extension(self) -> str:
        return {OutputFormat.PNG: "png", OutputFormat.JPEG: "jpg"}.get(self, "tif")


_FORMAT_NAMES = {
    "cog": OutputFormat.COG,
    "geotiff": OutputFormat.GEOTIFF,
    "gtiff": OutputFormat.GEOTIFF,
    "tiff": OutputFormat.GEOTIFF,
    "tif": OutputFormat.GEOTIFF,
    "png": OutputFormat.PNG,
    "jpeg": OutputFormat.JPEG,
    "jpg": OutputFormat.JPEG,
}


def parse_format(value: str | None) -> OutputFormat:
    """The output format named by `format=` (default `cog`), or `UnknownFormat`."""
    if value is None or not value.strip():
        return OutputFormat.COG
    found = _FORMAT_NAMES.get(value.strip().lower())
    if found is None:
        raise UnknownFormat(
            f"Unknown format {value!r}. Use one of: cog (default), geotiff, png, jpeg."
        )
    return found


def _is_remote(url_or_path: str) -> bool:
    return url_or_path.startswith(("http://", "https://"))


def gdal_path(url_or_path: str) -> str:
    """What GDAL opens: local paths as they are, URLs through `/vsicurl/`."""
    return f"/vsicurl/{url_or_path}" if _is_remote(url_or_path) else url_or_path


def gdal_env(url_or_path: str) -> rasterio.Env:
    """GDAL options for reading it: remote reads skip directory listings (local
    ones must not, or `.aux.xml` sidecars holding georeferencing are missed)."""
    return rasterio.Env(**GDAL_REMOTE_OPTIONS) if _is_remote(url_or_path) else rasterio.Env()


_validations: dict[tuple[str, str], bool] = {}
_validations_lock = threading.Lock()
_MAX_VALIDATIONS = 4096


def known_cog_validation(path: str, fingerprint: str) -> bool | None:
    """`is_valid_cog`'s remembered answer for (file, fingerprint), None when not known
    (so a caller on the event loop can skip the thread hop)."""
    with _validations_lock:
        return _validations.get((path, fingerprint))


def is_valid_cog(path: str, fingerprint: str, cache_key: str | None = None) -> bool:
    """Whether rio-cogeo accepts the file as a COG (strict mode: warnings such as
    missing overviews count); remembered per (file, fingerprint)."""
    key = (cache_key or path, fingerprint)
    known = known_cog_validation(*key)
    if known is not None:
        return known
    try:
        with gdal_env(path):
            # rio-cogeo opens with any driver: make sure it is a GeoTIFF (never a VRT) first.
            with open_raster(gdal_path(path)) as src:
                driver = src.driver
            # Strict: a tiled GeoTIFF larger than 512 px without overviews is not a COG.
            valid, errors, _ = (
                cog_validate(gdal_path(path), strict=True, quiet=True)
                if driver == "GTiff"
                else (False, [f"{driver} is not a GeoTIFF"], [])
            )
    except Exception as exc:  # unreadable or not a raster: not a COG we can vouch for
        logger.info("COG validation of %s failed: %s", cache_key or path, exc)
        valid, errors = False, [str(exc)]
    if not valid:
        logger.debug("%s is not a COG: %s", cache_key or path, errors)
    with _validations_lock:
        if len(_validations) >= _MAX_VALIDATIONS:
            _validations.clear()
        _validations[key] = bool(valid)
    return bool(valid)


def _out_of_space(exc: BaseException, directory: Path) -> bool:
    """Whether a failed write failed for want of space. GDAL's errors carry no errno:
    then the file system is asked (the partial output still holds its space)."""
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    try:
        stats = os.statvfs(directory)
    except OSError:
        return False
    return stats.f_bavail * stats.f_frsize < LOW_SPACE_BYTES


def _check_written(path: Path) -> None:
    """Read the last block of every band back: GDAL only logs a failed write (a full
    disk, say), and the truncated file would otherwise be kept as the conversion."""
    with open_raster(str(path)) as written:
        *_, (_, last) = written.block_windows(1)
        for index in written.indexes:
            written.read(index, window=last)


def _cache_full(directory: Path) -> CacheFull:
    logger.error("the conversion cache %s is full", directory)
    return CacheFull(
        "The server's conversion cache is out of space; try again later "
        "(operators: free space in ASTRA_STORAGE_CACHE_DIR)."
    )


def _safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", name)[:80] or "asset"


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    with open(path, "a+b") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


class Converter:
    """Runs and caches conversions in `cache_dir`; `runs` counts the ones actually run."""

    def __init__(self, cache_dir: Path, settings: ConvertSettings) -> None:
        self.cache_dir = cache_dir
        self.settings = settings
        self.runs = 0
        self._runs_lock = threading.Lock()
        self._locks: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()

    def output_path(self, source_id: str, name: str, fmt: OutputFormat) -> Path:
        """Where the conversion of `source_id` (href + fingerprint) to `fmt` is kept."""
        if fmt.is_geotiff:
            recipe: list[Any] = ["cog", self.settings.cog_profile]
        else:
            recipe = [
                fmt.value,
                self.settings.render_max_size,
                list(self.settings.rescale_percentiles),
            ]
        material = json.dumps([CONVERSION_VERSION, source_id, name, recipe])
        digest = hashlib.sha256(material.encode()).hexdigest()
        return self.cache_dir / digest[:2] / digest / f"{_safe_name(name)}.{fmt.extension}"

    async def ensure(self, read_path: str, source_id: str, name: str, fmt: OutputFormat) -> Path:
        """The converted file, converting now unless the cache has it."""
        final = self.output_path(source_id, name, fmt)
        if final.is_file():
            return final
        lock = self._locks.get(str(final))
        if lock is None:
            lock = asyncio.Lock()
            self._locks[str(final)] = lock
        async with lock:
            if final.is_file():
                return final
            try:
                await asyncio.to_thread(self._convert_once, read_path, source_id, final, fmt)
            except OSError as exc:  # making its directory or lock file
                if _out_of_space(exc, self.cache_dir):
                    raise _cache_full(self.cache_dir) from exc
                raise
        return final

    def _convert_once(self, read_path: str, source_id: str, final: Path, fmt: OutputFormat) -> None:
        final.parent.mkdir(parents=True, exist_ok=True)
        with _file_lock(final.parent / ".lock"):
            if final.is_file():  # another process finished it while we waited
                return
            temporary = final.with_name(f".{final.name}.{uuid.uuid4().hex}.part")
            try:
                with gdal_env(read_path):
                    if fmt.is_geotiff:
                        self._to_cog(read_path, temporary)
                    else:
                        self._render(read_path, temporary, fmt)
                os.replace(temporary, final)
            except AssetUnavailable:
                raise
            except Exception as exc:
                if _out_of_space(exc, final.parent):
                    raise _cache_full(final.parent) from exc
                logger.exception("converting %s to %s failed", source_id, fmt.value)
                raise AssetUnavailable(
                    f"Could not convert this asset to {fmt.value}: the source could not be read."
                ) from exc
            finally:
                temporary.unlink(missing_ok=True)
            with self._runs_lock:
                self.runs += 1
            logger.info("converted %s to %s (%d bytes)", source_id, fmt.value, final.stat().st_size)

    def _to_cog(self, read_path: str, destination: Path) -> None:
        profile = cog_profiles.get(self.settings.cog_profile)
        options: dict[str, Any] = {
            "in_memory": False,
            "quiet": True,
            "config": {"GDAL_NUM_THREADS": "ALL_CPUS", "GDAL_TIFF_INTERNAL_MASK": "TRUE"},
        }
        with open_raster(gdal_path(read_path)) as src:
            gcps, gcp_crs = src.gcps
            if gcp_crs is not None and not gcps:
                # GDAL's JPEG2000 driver reports a GCP CRS with no GCPs, and rio-cogeo
                # would then georeference from those (none): read through a VRT that
                # carries only the geotransform.
                with WarpedVRT(src, src_nodata=src.nodata, nodata=src.nodata) as vrt:
                    cog_translate(vrt, str(destination), profile, nodata=src.nodata, **options)
            else:
                cog_translate(src, str(destination), profile, **options)
        _check_written(destination)

    def _render(self, read_path: str, destination: Path, fmt: OutputFormat) -> None:
        path = gdal_path(read_path)
        with open_raster(path) as dataset, Reader(path, dataset=dataset) as src:
            count = src.dataset.count
            indexes = (1, 2, 3) if count >= 3 else (1,)
            longest = max(src.dataset.width, src.dataset.height)
            max_size = self.settings.render_max_size
            if max_size and longest > max_size:
                image = src.preview(indexes=indexes, max_size=max_size)
            else:
                image = src.read(indexes=indexes)
        low_pct, high_pct = self.settings.rescale_percentiles
        ranges = []
        for band in image.array:
            valid = np.ma.compressed(band)
            valid = valid[np.isfinite(valid)] if valid.dtype.kind == "f" else valid
            if valid.size == 0:
                ranges.append((0.0, 1.0))
                continue
            low, high = (float(v) for v in np.percentile(valid, (low_pct, high_pct)))
            ranges.append((low, high if high > low else low + 1.0))
        image = image.rescale(in_range=ranges)
        content = image.render(
            img_format="PNG" if fmt is OutputFormat.PNG else "JPEG",
            add_mask=fmt is OutputFormat.PNG,
        )
        destination.write_bytes(content)
