"""rio-tiler readers for a catalogue scene.

`SceneReader` is rio-tiler's `STACReader` given the catalogue's item instead
of a URL: it reads only the scene's band assets, each from the GDAL path the
tiler derived from the item's own href (`Scene.sources`), through `BandReader`,
which opens files with raster drivers only. It also caps the output sizes a
request may ask for.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any, cast

import attr
import morecantile
import numpy
import pyproj
from rasterio.crs import CRS
from rio_tiler.constants import MAX_THREADS
from rio_tiler.errors import MaxArraySizeError
from rio_tiler.io import Reader, STACReader
from rio_tiler.models import BandStatistics, ImageData, Info, PointData
from rio_tiler.types import AssetInfo, AssetType
from rio_tiler.utils import normalize_bounds

from astra_stac.assets.storage import open_raster
from astra_stac.errors import InvalidParameter
from astra_stac.tiler.scene import MAX_MEMOS, Scene

DEFAULT_MAX_SIZE = 1024
# What STACReader.__attrs_post_init__ derives from the item.
_DERIVED = ("assets", "bounds", "crs", "transform", "height", "width", "minzoom", "maxzoom")
_SIZE_OPTIONS = ("tilesize", "max_size", "width", "height", "padding")


@lru_cache(maxsize=64)
def _transformer(src: CRS, dst: CRS) -> pyproj.Transformer:
    return pyproj.Transformer.from_crs(src.to_wkt(), dst.to_wkt(), always_xy=True)


def tile_intersects(
    tms: morecantile.TileMatrixSet, crs: CRS, bounds: Any, x: int, y: int, z: int
) -> bool | None:
    """rio-tiler's `tile_exists`, with the PROJ transformer made once per pair of CRSs:
    rasterio's `transform_bounds` builds a new one on every call (~0.5 ms a tile).
    None when PROJ fails: rio-tiler's own check then decides (and raises as it does)."""
    xy = tms.xy_bounds(morecantile.Tile(x=x, y=y, z=z))
    tile_bounds: tuple[float, float, float, float] = (xy.left, xy.bottom, xy.right, xy.top)
    if tms.rasterio_crs != crs:
        try:
            tile_bounds = _transformer(tms.rasterio_crs, crs).transform_bounds(
                *tile_bounds, densify_pts=21
            )
        except pyproj.exceptions.ProjError:
            return None
    if not all(numpy.isfinite(tile_bounds)):
        return True
    left, bottom, right, top = normalize_bounds(tile_bounds)
    west, south, east, north = normalize_bounds(tuple(bounds))
    return left < east and right > west and top > south and bottom < north


@attr.s
class BandReader(Reader):
    """rio-tiler's `Reader`, opening band files with raster drivers only (no VRT)."""

    def __attrs_post_init__(self) -> None:
        if self.dataset is None:
            self.dataset = self._ctx_stack.enter_context(open_raster(str(self.input)))
        super().__attrs_post_init__()

    def tile_exists(self, tile_x: int, tile_y: int, tile_z: int) -> bool:
        found = tile_intersects(self.tms, self.crs, self.bounds, tile_x, tile_y, tile_z)
        return super().tile_exists(tile_x, tile_y, tile_z) if found is None else found


@attr.s
class SceneReader(STACReader):
    """`STACReader` over a `Scene` (passed as `input`, where STACReader takes a URL)."""

    reader: type[Reader] = attr.ib(default=BandReader)
    include_asset_types: set[str] = attr.ib(factory=set)  # the band mapping chose them

    @property
    def scene(self) -> Scene:
        return cast(Scene, self.input)

    def __attrs_post_init__(self) -> None:
        self.item = self.scene.stac_item
        # STACReader derives the grid (bounds, CRS, zooms) from every asset's
        # projection fields; do it once per scene and tile matrix set.
        key = (self.tms.id, self.minzoom, self.maxzoom)
        state = self.scene.reader_state.get(key)
        if state is not None:
            for name, value in state.items():
                setattr(self, name, value)
            return
        super().__attrs_post_init__()
        if len(self.scene.reader_state) < MAX_MEMOS:
            self.scene.reader_state[key] = {
                name: getattr(self, name) for name in _DERIVED if hasattr(self, name)
            }

    def tile_exists(self, tile_x: int, tile_y: int, tile_z: int) -> bool:
        found = tile_intersects(self.tms, self.crs, self.bounds, tile_x, tile_y, tile_z)
        return super().tile_exists(tile_x, tile_y, tile_z) if found is None else found

    def _get_asset_info(self, asset: AssetType) -> AssetInfo:
        info = super()._get_asset_info(asset)
        name = info["name"]
        refused = self.scene.unavailable.get(name)
        if refused is not None:
            raise type(refused)(refused.description)
        source = self.scene.sources[name]
        # Whatever rio-tiler derived (alternate hrefs included), read the catalogue's file.
        info["url"] = source.path
        if source.env:
            info["env"] = {**info.get("env", {}), **source.env}
        return info

    def _check_sizes(self, options: dict[str, Any], bound: bool = False) -> None:
        limit = self.scene.max_image_size
        if bound and not any(options.get(o) for o in ("max_size", "width", "height")):
            # A bbox or feature at full resolution could be any size: cap it like a preview.
            options["max_size"] = min(limit, DEFAULT_MAX_SIZE)
        for option in _SIZE_OPTIONS:
            value = options.get(option)
            if isinstance(value, int | float) and value > limit:
                raise MaxArraySizeError(f"{option}={value} is larger than {limit}.")
            if isinstance(value, int | float) and value <= 0:
                raise InvalidParameter(f"{option} must be positive, not {value}.")
        buffer = options.get("buffer")
        if isinstance(buffer, int | float) and buffer > limit / 4:
            raise MaxArraySizeError(f"buffer={buffer} is larger than {limit // 4}.")

    def _threads(self, options: dict[str, Any]) -> None:
        """Read bands in parallel only when they are remote.

        rio-tiler starts a new thread pool for every multi-asset read, and a new
        thread pays GDAL's and PROJ's per-thread set-up again (~10 ms a thread
        here). Local files read faster one after the other in the request's own
        (pooled) thread; remote files are worth the parallel round trips.
        """
        assets = options.get("assets") or self.assets
        names = [assets] if isinstance(assets, str | dict) else list(assets)
        keys = [a["name"] if isinstance(a, dict) else a for a in names]
        sources = self.scene.sources
        remote = sum(1 for key in keys if key in sources and not sources[key].local)
        options.setdefault("threads", min(remote, MAX_THREADS) if remote > 1 else 1)

    def info(self, *args: Any, **kwargs: Any) -> dict[str, Info]:
        if not args and not kwargs.get("assets"):
            kwargs["assets"] = self.assets  # what rio-tiler defaults to, without its warning
        self._threads(kwargs)
        return super().info(*args, **kwargs)

    def tile(self, tile_x: int, tile_y: int, tile_z: int, *args: Any, **kwargs: Any) -> ImageData:
        self._check_sizes(kwargs)
        self._threads(kwargs)
        return super().tile(tile_x, tile_y, tile_z, *args, **kwargs)

    def part(self, bbox: Any, *args: Any, **kwargs: Any) -> ImageData:
        self._check_sizes(kwargs, bound=True)
        self._threads(kwargs)
        return super().part(bbox, *args, **kwargs)

    def preview(self, *args: Any, **kwargs: Any) -> ImageData:
        self._check_sizes(kwargs)
        self._threads(kwargs)
        return super().preview(*args, **kwargs)

    def point(self, lon: float, lat: float, *args: Any, **kwargs: Any) -> PointData:
        self._threads(kwargs)
        return super().point(lon, lat, *args, **kwargs)

    def statistics(self, *args: Any, **kwargs: Any) -> dict[str, dict[str, BandStatistics]]:
        self._check_sizes(kwargs)
        self._threads(kwargs)
        return super().statistics(*args, **kwargs)

    def feature(self, shape: dict, *args: Any, **kwargs: Any) -> ImageData:
        self._check_sizes(kwargs, bound=True)
        self._threads(kwargs)
        return super().feature(shape, *args, **kwargs)
