"""Demo scenes: real provider items shipped with the package, with small generated
COGs standing in for their remote band files so everything works offline."""

from __future__ import annotations

import json
import zlib
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from rasterio.crs import CRS
from rasterio.transform import from_bounds
from rasterio.warp import transform_bounds

from astra_stac.ingest.load import upsert
from astra_stac.ingest.normalize import normalize_collection, normalize_item, template_collection
from astra_stac.providers import ProviderRegistry

COG_MEDIA_TYPE = "image/tiff; application=geotiff; profile=cloud-optimized"
STAND_IN_SIZE = 256
_RASTER_TYPES = ("image/tiff", "image/jp2", "image/vnd.stac.geotiff")


def _items_root() -> Any:
    return resources.files(__package__).joinpath("items")


def _is_band_file(asset: dict[str, Any]) -> bool:
    media = (asset.get("type") or "").lower()
    roles = asset.get("roles") or ["data"]
    return media.startswith(_RASTER_TYPES) and "data" in roles


def _epsg(item: dict[str, Any]) -> int:
    props = item.get("properties", {})
    if props.get("proj:epsg"):
        return int(props["proj:epsg"])
    for asset in item.get("assets", {}).values():
        code = asset.get("proj:code") or props.get("proj:code")
        if isinstance(code, str) and code.upper().startswith("EPSG:"):
            return int(code.split(":")[1])
    return 4326


def write_stand_in_cog(path: Path, item: dict[str, Any], band_key: str) -> None:
    """A 256×256 uint16 COG over the item's footprint, in the item's CRS."""
    crs = CRS.from_epsg(_epsg(item))
    bounds = transform_bounds(CRS.from_epsg(4326), crs, *item["bbox"][:2], *item["bbox"][-2:])
    seed = zlib.crc32(f"{item['id']}/{band_key}".encode())
    rows = np.linspace(0, 1, STAND_IN_SIZE, dtype="float32")[:, None]
    cols = np.linspace(0, 1, STAND_IN_SIZE, dtype="float32")[None, :]
    noise = np.random.default_rng(seed).random((STAND_IN_SIZE, STAND_IN_SIZE), dtype="float32")
    data = ((rows * 0.5 + cols * 0.3 + noise * 0.2) * 10000).astype("uint16")
    path.parent.mkdir(parents=True, exist_ok=True)
    with rasterio.open(
        path,
        "w",
        driver="COG",
        width=STAND_IN_SIZE,
        height=STAND_IN_SIZE,
        count=1,
        dtype="uint16",
        crs=crs,
        transform=from_bounds(*bounds, STAND_IN_SIZE, STAND_IN_SIZE),
        nodata=0,
        compress="deflate",
        blocksize=128,
    ) as dst:
        dst.write(data, 1)


def demo_items(registry: ProviderRegistry, storage_dir: Path) -> tuple[list[dict], list[dict]]:
    """Normalised demo collections and items, band files pointed at local stand-ins."""
    root = _items_root()
    collections: dict[str, dict[str, Any]] = {}
    for entry in root.joinpath("collections").iterdir():
        prefix, _, _ = entry.name.partition("--")
        provider = registry.providers[prefix]
        collection = normalize_collection(json.loads(entry.read_text("utf-8")), provider)
        collections[collection["id"]] = collection
    items = []
    for provider_dir in sorted(root.iterdir()):
        if provider_dir.name == "collections" or not provider_dir.is_dir():
            continue
        provider = registry.providers[provider_dir.name]
        for entry in sorted(provider_dir.iterdir(), key=lambda e: e.name):
            item = normalize_item(json.loads(entry.read_text("utf-8")), provider)
            for key, asset in item["assets"].items():
                if _is_band_file(asset):
                    path = storage_dir / "demo" / provider.prefix / item["id"] / f"{key}.tif"
                    if not path.exists():
                        write_stand_in_cog(path, item, key)
                    asset["href"] = path.resolve().as_uri()
                    asset["type"] = COG_MEDIA_TYPE
                    asset["file:size"] = path.stat().st_size
                    asset.pop("file:checksum", None)
            if item["collection"] not in collections:
                upstream = json.loads(entry.read_text("utf-8")).get("collection", "items")
                collections[item["collection"]] = template_collection(
                    item["collection"], provider, upstream
                )
            items.append(item)
    return list(collections.values()), items


def load_demo(dsn: str, registry: ProviderRegistry, storage_dir: Path) -> int:
    """Load (or refresh) the demo scenes; returns how many items were loaded."""
    collections, items = demo_items(registry, storage_dir)
    upsert(dsn, collections, items)
    return len(items)
