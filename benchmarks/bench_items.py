#!/usr/bin/env python
"""Single-item reads: astra-stac against plain stac-fastapi-pgstac on the same database.

What it does, in order:

1. starts its own embedded PostgreSQL (`astra_stac.db.embedded`) under a temporary
   directory in /tmp (or under `--keep-db DIR`, reused on the next run), migrates it
   and loads `--items` synthetic scenes with pypgstac's loader: half Sentinel-2 L2A
   scenes from Earth Search (`es-sentinel-2-l2a`), half Landsat C2 L2 scenes from
   the Planetary Computer (`pc-landsat-c2-l2`), spread over 2021-2024, each with
   15 (Sentinel-2) or 13 (Landsat) assets carrying hrefs, `eo:bands`, projection
   and raster metadata; the collections declare `item_assets`, so pgstac dehydrates
   the items against them as it does in production. Collections are partitioned by
   year (`--partition`);
2. creates a read API key and serves, each under a real `uvicorn[standard]`
   (uvloop + httptools) with `--workers W` on loopback:
   - astra-stac (`astra_stac.app:create_app`), production settings;
   - plain stac-fastapi-pgstac 7.2 (`stac_fastapi.pgstac.app:create_app`), default;
   - plain stac-fastapi-pgstac with `USE_API_HYDRATE=true` (its fastest setting);
3. reads the same random items from each, with an aiohttp client on keep-alive
   connections (1 and 8 by default), interleaving the servers round by round so
   that background load hits them alike:
   - astra `GET /api/v1/scenes/{provider:id}` and
     `GET /api/v1/collections/{c}/items/{provider:id}`,
   - plain `GET /collections/{c}/items/{id}` (its ids carry no provider prefix);
4. prints p50 / p99 / req/s and the ratios astra / plain, and writes
   `benchmarks/results/items-<N>.md` and `.json`.

Every request must answer 200 with the item asked for; anything else stops the run.

    .venv/bin/python benchmarks/bench_items.py                 # 100,000 items
    .venv/bin/python benchmarks/bench_items.py --items 10000 --keep-db /tmp/astra-bench-10k
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import importlib.metadata
import json
import math
import os
import platform
import random
import shutil
import signal
import socket
import string
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import psycopg
from pypgstac.db import PgstacDB
from pypgstac.load import Loader, Methods

from astra_stac.auth import store
from astra_stac.auth.keys import Scope
from astra_stac.db.embedded import DATABASE, SUPERUSER, EmbeddedPostgres
from astra_stac.db.migrate import migrate

ROOT = Path(__file__).resolve().parent
RESULTS = ROOT / "results"
META_FILE = "bench-meta.json"
DATA_VERSION = 1  # bump when the synthetic data changes: a kept database is then reloaded

S2_COLLECTION = "es-sentinel-2-l2a"
LANDSAT_COLLECTION = "pc-landsat-c2-l2"
PREFIX_OF = {S2_COLLECTION: "earth-search", LANDSAT_COLLECTION: "planetary-computer"}
START = dt.datetime(2021, 1, 1, tzinfo=dt.UTC)
END = dt.datetime(2025, 1, 1, tzinfo=dt.UTC)

COG = "image/tiff; application=geotiff; profile=cloud-optimized"
STAC_EXTENSIONS = {
    "eo": "https://stac-extensions.github.io/eo/v1.1.0/schema.json",
    "proj": "https://stac-extensions.github.io/projection/v1.1.0/schema.json",
    "raster": "https://stac-extensions.github.io/raster/v1.1.0/schema.json",
    "view": "https://stac-extensions.github.io/view/v1.0.0/schema.json",
    "mgrs": "https://stac-extensions.github.io/mgrs/v1.0.0/schema.json",
    "grid": "https://stac-extensions.github.io/grid/v1.1.0/schema.json",
    "landsat": "https://stac-extensions.github.io/landsat/v2.0.0/schema.json",
    "item_assets": "https://stac-extensions.github.io/item-assets/v1.0.0/schema.json",
}

# (asset key, file name, native band, common name, centre, FWHM, gsd)
S2_BANDS = [
    ("coastal", "B01", "B01", "coastal", 0.443, 0.027, 60),
    ("blue", "B02", "B02", "blue", 0.49, 0.098, 10),
    ("green", "B03", "B03", "green", 0.56, 0.045, 10),
    ("red", "B04", "B04", "red", 0.665, 0.038, 10),
    ("rededge1", "B05", "B05", "rededge", 0.704, 0.019, 20),
    ("rededge2", "B06", "B06", "rededge", 0.74, 0.018, 20),
    ("rededge3", "B07", "B07", "rededge", 0.783, 0.028, 20),
    ("nir", "B08", "B08", "nir", 0.842, 0.145, 10),
    ("nir08", "B8A", "B8A", "nir08", 0.865, 0.033, 20),
    ("nir09", "B09", "B09", "nir09", 0.945, 0.026, 60),
    ("swir16", "B11", "B11", "swir16", 1.61, 0.143, 20),
    ("swir22", "B12", "B12", "swir22", 2.19, 0.242, 20),
]
LANDSAT_BANDS = [
    ("coastal", "SR_B1", "OLI_B1", "coastal", 0.44, 0.02, 30),
    ("blue", "SR_B2", "OLI_B2", "blue", 0.48, 0.06, 30),
    ("green", "SR_B3", "OLI_B3", "green", 0.56, 0.06, 30),
    ("red", "SR_B4", "OLI_B4", "red", 0.65, 0.04, 30),
    ("nir08", "SR_B5", "OLI_B5", "nir08", 0.87, 0.03, 30),
    ("swir16", "SR_B6", "OLI_B6", "swir16", 1.61, 0.09, 30),
    ("swir22", "SR_B7", "OLI_B7", "swir22", 2.2, 0.19, 30),
    ("lwir11", "ST_B10", "TIRS_B10", "lwir11", 10.9, 0.8, 100),
]


# --- synthetic data -----------------------------------------------------------------------


def _band_asset(name: str, common: str, centre: float, fwhm: float, gsd: int, scale: float):
    return {
        "type": COG,
        "title": f"{common} ({name}) - {gsd}m",
        "eo:bands": [
            {
                "name": name,
                "common_name": common,
                "center_wavelength": centre,
                "full_width_half_max": fwhm,
            }
        ],
        "gsd": gsd,
        "raster:bands": [
            {
                "nodata": 0,
                "data_type": "uint16",
                "spatial_resolution": gsd,
                "scale": scale,
                "offset": -0.1 if scale < 0.001 else 0,
            }
        ],
        "roles": ["data", "reflectance"],
    }


def s2_item_assets() -> dict[str, dict[str, Any]]:
    assets = {
        key: _band_asset(native, common, centre, fwhm, gsd, 0.0001)
        for key, _, native, common, centre, fwhm, gsd in S2_BANDS
    }
    assets["scl"] = {
        "type": COG,
        "title": "Scene classification map (SCL)",
        "gsd": 20,
        "raster:bands": [{"nodata": 0, "data_type": "uint8", "spatial_resolution": 20}],
        "roles": ["data", "reflectance"],
    }
    assets["visual"] = {
        "type": COG,
        "title": "True color image",
        "eo:bands": [assets[k]["eo:bands"][0] for k in ("red", "green", "blue")],
        "roles": ["visual"],
    }
    assets["thumbnail"] = {"type": "image/jpeg", "title": "Thumbnail image", "roles": ["thumbnail"]}
    return assets


def landsat_item_assets() -> dict[str, dict[str, Any]]:
    assets = {
        key: _band_asset(native, common, centre, fwhm, gsd, 2.75e-05)
        for key, _, native, common, centre, fwhm, gsd in LANDSAT_BANDS
    }
    assets["lwir11"]["roles"] = ["data", "temperature"]
    for key, title in (
        ("qa_pixel", "Pixel Quality Assessment Band"),
        ("qa_radsat", "Radiometric Saturation and Terrain Occlusion QA Band"),
        ("qa_aerosol", "Aerosol Quality Assessment Band"),
    ):
        assets[key] = {
            "type": COG,
            "title": title,
            "raster:bands": [{"nodata": 1, "data_type": "uint16", "spatial_resolution": 30}],
            "roles": ["cloud", "saturation"] if key != "qa_aerosol" else ["data-mask"],
        }
    assets["mtl.json"] = {
        "type": "application/json",
        "title": "Product Metadata File (json)",
        "roles": ["metadata"],
    }
    assets["rendered_preview"] = {
        "type": "image/png",
        "title": "Rendered preview",
        "rel": "preview",
        "roles": ["overview"],
    }
    return assets


S2_ITEM_ASSETS = s2_item_assets()
LANDSAT_ITEM_ASSETS = landsat_item_assets()


def _full_assets(own: dict[str, dict], item_assets: dict[str, dict]) -> dict[str, dict]:
    """Item assets carry everything, as upstream items do: pgstac strips what the
    collection's `item_assets` already says when it stores them."""
    return {key: {"href": value["href"], **item_assets[key], **value} for key, value in own.items()}


def collections() -> list[dict[str, Any]]:
    """The two collections, with `item_assets` (what pgstac dehydrates items against)."""
    common = {
        "type": "Collection",
        "stac_version": "1.0.0",
        "stac_extensions": [STAC_EXTENSIONS["item_assets"], STAC_EXTENSIONS["eo"]],
        "extent": {
            "spatial": {"bbox": [[-180.0, -90.0, 180.0, 90.0]]},
            "temporal": {"interval": [[START.isoformat(), None]]},
        },
    }
    return [
        {
            **common,
            "id": S2_COLLECTION,
            "title": "Sentinel-2 Level-2A (Earth Search)",
            "description": "Global Sentinel-2 L2A surface reflectance, as COGs.",
            "license": "proprietary",
            "keywords": ["sentinel", "copernicus", "esa", "msi", "l2a"],
            "providers": [
                {"name": "ESA", "roles": ["producer", "licensor"], "url": "https://esa.int"},
                {"name": "Element 84", "roles": ["processor", "host"]},
            ],
            "summaries": {
                "platform": ["sentinel-2a", "sentinel-2b"],
                "constellation": ["sentinel-2"],
                "instruments": ["msi"],
                "gsd": [10, 20, 60],
                "eo:bands": [
                    {"name": native, "common_name": common, "center_wavelength": centre}
                    for _, _, native, common, centre, *_ in S2_BANDS
                ],
            },
            "item_assets": S2_ITEM_ASSETS,
            "links": [
                {
                    "rel": "license",
                    "href": "https://sentinel.esa.int/documents/247904/690755/"
                    "Sentinel_Data_Legal_Notice",
                }
            ],
        },
        {
            **common,
            "id": LANDSAT_COLLECTION,
            "title": "Landsat Collection 2 Level-2 (Planetary Computer)",
            "description": "Landsat 8/9 Collection 2 Level-2 surface reflectance and temperature.",
            "license": "proprietary",
            "keywords": ["landsat", "usgs", "nasa", "oli", "tirs"],
            "providers": [
                {"name": "USGS", "roles": ["producer", "licensor"], "url": "https://usgs.gov"},
                {"name": "Microsoft", "roles": ["host", "processor"]},
            ],
            "summaries": {
                "platform": ["landsat-8", "landsat-9"],
                "instruments": ["oli", "tirs"],
                "gsd": [30, 100],
            },
            "item_assets": LANDSAT_ITEM_ASSETS,
            "links": [
                {
                    "rel": "license",
                    "href": "https://www.usgs.gov/core-science-systems/hdds/data-policy",
                }
            ],
        },
    ]


def _round(value: float, digits: int = 9) -> float:
    return round(value, digits)


def _footprint(rng: random.Random, lon: float, lat: float, width: float, height: float):
    """A slightly skewed quadrilateral, sometimes clipped (a partial scene)."""
    skew = rng.uniform(-0.05, 0.05) * width
    if rng.random() < 0.3:
        width *= rng.uniform(0.3, 0.95)
    ring = [
        [lon, lat + height],
        [lon + skew, lat],
        [lon + width + skew, lat],
        [lon + width, lat + height],
    ]
    ring = [[_round(x), _round(y)] for x, y in ring]
    ring.append(list(ring[0]))
    xs = [p[0] for p in ring]
    ys = [p[1] for p in ring]
    return {"type": "Polygon", "coordinates": [ring]}, [min(xs), min(ys), max(xs), max(ys)]


def _when(rng: random.Random, index: int, count: int) -> dt.datetime:
    span = (END - START).total_seconds()
    seconds = span * (index + rng.random()) / count
    return START + dt.timedelta(seconds=min(seconds, span - 1))


def _iso(moment: dt.datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def _utm_epsg(lon: float, lat: float) -> tuple[int, int]:
    zone = min(60, int((lon + 180) // 6) + 1)
    return zone, (32600 if lat >= 0 else 32700) + zone


def s2_item(rng: random.Random, index: int, count: int, tile: tuple, seen: set[str]) -> dict:
    zone, band, square, lon, lat = tile
    moment = _when(rng, index, count)
    day = moment.strftime("%Y%m%d")
    sat = rng.choice("AB")
    seq = 0
    while (item_id := f"S2{sat}_{zone}{band}{square}_{day}_{seq}_L2A") in seen:
        seq += 1
    seen.add(item_id)
    geometry, bbox = _footprint(rng, lon, lat, 1.3, 0.99)
    _, epsg = _utm_epsg(lon, lat)
    x0, y0 = rng.randrange(1, 8) * 100000 - 40, rng.randrange(0, 100) * 100000
    path = f"sentinel-s2-l2a-cogs/{zone}/{band}/{square}/{moment.year}/{moment.month}/{item_id}"
    base = f"https://sentinel-cogs.s3.us-west-2.amazonaws.com/{path}"
    assets: dict[str, dict[str, Any]] = {}
    for key, filename, *_, gsd in S2_BANDS:
        size = 10980 * 10 // gsd
        assets[key] = {
            "href": f"{base}/{filename}.tif",
            "proj:shape": [size, size],
            "proj:transform": [gsd, 0, x0, 0, -gsd, y0],
        }
    assets["scl"] = {
        "href": f"{base}/SCL.tif",
        "proj:shape": [5490, 5490],
        "proj:transform": [20, 0, x0, 0, -20, y0],
    }
    assets["visual"] = {
        "href": f"{base}/TCI.tif",
        "proj:shape": [10980, 10980],
        "proj:transform": [10, 0, x0, 0, -10, y0],
    }
    assets["thumbnail"] = {"href": f"{base}/thumbnail.jpg"}
    cloud = _round(rng.random() ** 2 * 100, 6)
    water = _round(rng.uniform(0, 30), 6)
    return {
        "type": "Feature",
        "stac_version": "1.0.0",
        "stac_extensions": [
            STAC_EXTENSIONS[e] for e in ("eo", "proj", "raster", "view", "mgrs", "grid")
        ],
        "id": item_id,
        "collection": S2_COLLECTION,
        "geometry": geometry,
        "bbox": bbox,
        "properties": {
            "datetime": _iso(moment),
            "created": _iso(moment + dt.timedelta(hours=7)),
            "updated": _iso(moment + dt.timedelta(hours=7)),
            "platform": f"sentinel-2{sat.lower()}",
            "constellation": "sentinel-2",
            "instruments": ["msi"],
            "eo:cloud_cover": cloud,
            "proj:epsg": epsg,
            "mgrs:utm_zone": zone,
            "mgrs:latitude_band": band,
            "mgrs:grid_square": square,
            "grid:code": f"MGRS-{zone}{band}{square}",
            "view:sun_azimuth": _round(rng.uniform(100, 200), 12),
            "view:sun_elevation": _round(rng.uniform(10, 70), 12),
            "s2:nodata_pixel_percentage": _round(rng.random() * 40, 6),
            "s2:vegetation_percentage": _round(rng.uniform(0, 100 - cloud), 6),
            "s2:water_percentage": water,
            "s2:snow_ice_percentage": _round(rng.random(), 6),
            "s2:high_proba_clouds_percentage": _round(cloud * 0.6, 6),
            "s2:product_type": "S2MSI2A",
            "s2:processing_baseline": "05.09",
            "s2:product_uri": f"S2{sat}_MSIL2A_{day}T175231_N0509_R141_T{zone}{band}{square}"
            f"_{day}T233154.SAFE",
            "earthsearch:s3_path": f"s3://sentinel-cogs/{path}",
            "astra:provider": "element84",
            "astra:collection": S2_COLLECTION,
        },
        "links": [
            {
                "rel": "canonical",
                "href": f"s3://sentinel-cogs/{path}/{item_id}.json",
                "type": "application/json",
            },
            {
                "rel": "via",
                "href": "https://earth-search.aws.element84.com/v1/collections/sentinel-2-l2a"
                f"/items/{item_id}",
                "type": "application/geo+json",
            },
        ],
        "assets": _full_assets(assets, S2_ITEM_ASSETS),
    }


def landsat_item(rng: random.Random, index: int, count: int, seen: set[str]) -> dict:
    moment = _when(rng, index, count)
    day = moment.strftime("%Y%m%d")
    sat = rng.choice("89")
    category = "T1" if rng.random() < 0.8 else "T2"
    while True:
        wrs_path, wrs_row = rng.randrange(1, 234), rng.randrange(1, 249)
        item_id = f"LC0{sat}_L2SP_{wrs_path:03d}{wrs_row:03d}_{day}_02_{category}"
        if item_id not in seen:
            break
    seen.add(item_id)
    lon = -180 + (wrs_path - 1) * 360 / 233 + rng.uniform(0, 1)
    lat = 80 - (wrs_row - 1) * 160 / 248
    geometry, bbox = _footprint(rng, lon, lat, 2.4, 1.9)
    _, epsg = _utm_epsg(lon, lat)
    x0, y0 = rng.randrange(1, 8) * 100000 + 15, rng.randrange(0, 100) * 100000 + 15
    path = f"landsat-c2/level-2/standard/oli-tirs/{moment.year}/{wrs_path:03d}/{wrs_row:03d}"
    base = f"https://landsateuwest.blob.core.windows.net/{path}/{item_id}/{item_id}"
    assets: dict[str, dict[str, Any]] = {
        key: {"href": f"{base}_{filename}.TIF"} for key, filename, *_ in LANDSAT_BANDS
    }
    for key in ("qa_pixel", "qa_radsat", "qa_aerosol"):
        suffix = {"qa_pixel": "QA_PIXEL", "qa_radsat": "QA_RADSAT", "qa_aerosol": "SR_QA_AEROSOL"}
        assets[key] = {"href": f"{base}_{suffix[key]}.TIF"}
    assets["mtl.json"] = {"href": f"{base}_MTL.json"}
    assets["rendered_preview"] = {
        "href": "https://planetarycomputer.microsoft.com/api/data/v1/item/preview.png"
        f"?collection=landsat-c2-l2&item={item_id}&assets=red&assets=green&assets=blue"
        "&color_formula=gamma+RGB+2.7%2C+saturation+1.5%2C+sigmoidal+RGB+15+0.55&format=png"
    }
    cloud = _round(rng.random() ** 2 * 100, 2)
    return {
        "type": "Feature",
        "stac_version": "1.0.0",
        "stac_extensions": [
            STAC_EXTENSIONS[e] for e in ("eo", "proj", "raster", "view", "landsat")
        ],
        "id": item_id,
        "collection": LANDSAT_COLLECTION,
        "geometry": geometry,
        "bbox": bbox,
        "properties": {
            "datetime": _iso(moment),
            "platform": f"landsat-{sat}",
            "instruments": ["oli", "tirs"],
            "gsd": 30,
            "description": "Landsat Collection 2 Level-2",
            "eo:cloud_cover": cloud,
            "view:off_nadir": 0,
            "view:sun_azimuth": _round(rng.uniform(20, 160), 8),
            "view:sun_elevation": _round(rng.uniform(10, 70), 8),
            "proj:epsg": epsg,
            "proj:shape": [7891, 7771],
            "proj:transform": [30.0, 0.0, x0, 0.0, -30.0, y0],
            "landsat:wrs_type": "2",
            "landsat:wrs_path": f"{wrs_path:03d}",
            "landsat:wrs_row": f"{wrs_row:03d}",
            "landsat:scene_id": f"LC{sat}{wrs_path:03d}{wrs_row:03d}{moment:%Y%j}LGN00",
            "landsat:correction": "L2SP",
            "landsat:cloud_cover_land": _round(cloud * rng.uniform(0.5, 1), 2),
            "landsat:collection_number": "02",
            "landsat:collection_category": category,
            "astra:provider": "microsoft",
            "astra:collection": LANDSAT_COLLECTION,
        },
        "links": [
            {
                "rel": "cite-as",
                "href": "https://doi.org/10.5066/P9OGBGM6",
                "title": "Landsat 8-9 OLI/TIRS Collection 2 Level-2",
            },
            {
                "rel": "via",
                "href": f"https://landsatlook.usgs.gov/stac-server/collections/landsat-c2l2-sr"
                f"/items/{item_id}_SR",
                "type": "application/json",
            },
        ],
        "assets": _full_assets(assets, LANDSAT_ITEM_ASSETS),
    }


def _s2_tiles(rng: random.Random, count: int) -> list[tuple]:
    tiles: dict[str, tuple] = {}
    letters = "CDEFGHJKLMNPQRSTUVWX"
    while len(tiles) < count:
        lon, lat = rng.uniform(-179, 178), rng.uniform(-56, 71)
        zone, _ = _utm_epsg(lon, lat)
        band = letters[min(len(letters) - 1, int((lat + 80) // 8))]
        square = rng.choice(string.ascii_uppercase[:22]) + rng.choice(string.ascii_uppercase[:22])
        tiles.setdefault(f"{zone}{band}{square}", (zone, band, square, lon, lat))
    return list(tiles.values())


def synthetic_items(count: int, seed: int) -> Iterator[dict[str, Any]]:
    """`count` items, alternately Sentinel-2 and Landsat, in datetime order per collection."""
    rng = random.Random(seed)
    tiles = _s2_tiles(rng, max(1, min(5000, count // 20)))
    seen: set[str] = set()
    per_collection = (count + 1) // 2
    for index in range(count):
        half = index // 2
        if index % 2 == 0:
            yield s2_item(rng, half, per_collection, rng.choice(tiles), seen)
        else:
            yield landsat_item(rng, half, per_collection, seen)


# --- the database ---------------------------------------------------------------------------


def load_database(
    dsn: str, count: int, seed: int, partition: str, items: Iterator[dict] | None = None
) -> float:
    """Migrate, create the collections with their partitioning, load the items
    (`items`, else `synthetic_items(count, seed)`); seconds taken."""
    started = time.perf_counter()
    migrate(dsn)
    with PgstacDB(dsn=dsn) as db:
        loader = Loader(db=db)
        loader.load_collections(iter(collections()), insert_mode=Methods.upsert)
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(
                "UPDATE pgstac.collections SET partition_trunc = %s WHERE id = ANY(%s)",
                (None if partition == "none" else partition, list(PREFIX_OF)),
            )
        loader.collection_json.cache_clear()  # type: ignore[attr-defined]
        loaded = 0
        batch = 10_000
        items = items if items is not None else synthetic_items(count, seed)
        while loaded < count:
            chunk = [next(items) for _ in range(min(batch, count - loaded))]
            loader.load_items(iter(chunk), insert_mode=Methods.insert)
            loaded += len(chunk)
            rate = loaded / (time.perf_counter() - started)
            print(f"  loaded {loaded:,}/{count:,} items ({rate:,.0f}/s)", flush=True)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE pgstac.items")
    return time.perf_counter() - started


def database_meta(count: int, seed: int, partition: str) -> dict[str, Any]:
    return {"items": count, "seed": seed, "partition": partition, "data_version": DATA_VERSION}


def item_ids(dsn: str) -> list[tuple[str, str]]:
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(
            "SELECT collection, id FROM pgstac.items WHERE collection = ANY(%s)"
            " ORDER BY collection, id",
            (list(PREFIX_OF),),
        ).fetchall()
    return [(c, i) for c, i in rows]


def prewarm(dsn: str, sample: list[tuple[str, str]]) -> None:
    """Read the sampled rows once, so the first server measured does not pay for a cold cache."""
    with psycopg.connect(dsn) as conn:
        for collection in PREFIX_OF:
            ids = [i for c, i in sample if c == collection]
            conn.execute(
                "SELECT count(*), sum(length(content::text)) FROM pgstac.items"
                " WHERE collection = %s AND id = ANY(%s)",
                (collection, ids),
            ).fetchone()


# --- the servers ----------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Server:
    """One API under uvicorn in a subprocess."""

    name: str
    app: str
    env: dict[str, str]
    ping: str
    port: int = field(default_factory=_free_port)
    process: subprocess.Popen | None = None
    log: Path | None = None
    options: list[str] = field(default_factory=list)  # more uvicorn options

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, workers: int, workdir: Path) -> None:
        # A clean environment: no ASTRA_/PG* settings leak in from the caller's shell.
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("ASTRA_", "PG", "USE_API_HYDRATE", "ENABLED_EXTENSIONS"))
        }
        env.update(self.env)
        self.log = workdir / f"{self.name}.log"
        command = [
            sys.executable,
            "-m",
            "uvicorn",
            self.app,
            "--factory",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--workers",
            str(workers),
            "--loop",
            "uvloop",
            "--http",
            "httptools",
            *self.options,
        ]
        with self.log.open("wb") as out:
            self.process = subprocess.Popen(
                command, env=env, cwd=workdir, stdout=out, stderr=subprocess.STDOUT
            )

    async def wait_ready(self, session: aiohttp.ClientSession, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                break
            with contextlib.suppress(aiohttp.ClientError, OSError):
                async with session.get(self.base + self.ping) as response:
                    if response.status == 200:
                        return
            await asyncio.sleep(0.2)
        tail = self.log.read_text(errors="replace")[-3000:] if self.log else ""
        raise RuntimeError(f"{self.name} did not start on {self.base}:\n{tail}")

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def make_servers(cluster: EmbeddedPostgres, dsn: str) -> list[Server]:
    pg = {
        "PGUSER": SUPERUSER,
        "PGPASSWORD": cluster.password,
        "PGHOST": "127.0.0.1",
        "PGPORT": str(cluster.port),
        "PGDATABASE": DATABASE,
    }
    return [
        Server(
            "astra",
            "astra_stac.app:create_app",
            {
                "ASTRA_DATABASE_URL": dsn,
                # Keep the rate limiter in the path, but never let it refuse a request.
                "ASTRA_RATE_LIMIT_PER_MINUTE": str(10**9),
            },
            "/api/v1/_mgmt/ping",
        ),
        Server("plain-default", "stac_fastapi.pgstac.app:create_app", pg, "/_mgmt/ping"),
        Server(
            "plain-hydrate",
            "stac_fastapi.pgstac.app:create_app",
            {**pg, "USE_API_HYDRATE": "true"},
            "/_mgmt/ping",
        ),
    ]


# --- the client -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Series:
    """One server and route: how to build the URL of an item, and what id it must answer."""

    server: str
    route: str

    def path(self, collection: str, item_id: str) -> str:
        scoped = f"{PREFIX_OF[collection]}:{item_id}"
        if self.route == "scene":
            return f"/api/v1/scenes/{scoped}"
        if self.server == "astra":
            return f"/api/v1/collections/{collection}/items/{scoped}"
        return f"/collections/{collection}/items/{item_id}"

    def expected_id(self, collection: str, item_id: str) -> str:
        return f"{PREFIX_OF[collection]}:{item_id}" if self.server == "astra" else item_id


SERIES = [
    Series("astra", "scene"),
    Series("astra", "item"),
    Series("plain-default", "item"),
    Series("plain-hydrate", "item"),
]
ROUTE_LABEL = {
    ("astra", "scene"): "GET /api/v1/scenes/{provider:id}",
    ("astra", "item"): "GET /api/v1/collections/{c}/items/{provider:id}",
    ("plain-default", "item"): "GET /collections/{c}/items/{id}",
    ("plain-hydrate", "item"): "GET /collections/{c}/items/{id}",
}


class BenchmarkFailure(RuntimeError):
    """A request did not answer what it had to."""


async def _get(
    session: aiohttp.ClientSession, url: str, expected: str, headers: dict[str, str]
) -> int:
    """One request; its latency in ns. Fails loudly on anything but 200 with the item asked for."""
    started = time.perf_counter_ns()
    async with session.get(url, headers=headers) as response:
        body = await response.read()
        elapsed = time.perf_counter_ns() - started
        if response.status != 200:
            raise BenchmarkFailure(f"GET {url} answered {response.status}: {body[:500]!r}")
    if f'"id":"{expected}"'.encode() not in body:
        raise BenchmarkFailure(f"GET {url} did not answer item {expected}: {body[:300]!r}")
    return elapsed


class Client:
    """Keep-alive connections to one server, reused for a series' warm-up and every round."""

    def __init__(self, base: str, series: Series, concurrency: int, headers: dict[str, str]):
        self.base, self.series, self.concurrency, self.headers = base, series, concurrency, headers
        connector = aiohttp.TCPConnector(limit=concurrency, force_close=False)
        self.session = aiohttp.ClientSession(connector=connector)

    async def _worker(self, share: list[tuple[str, str]], out: list[int]) -> None:
        for collection, item_id in share:
            url = self.base + self.series.path(collection, item_id)
            expected = self.series.expected_id(collection, item_id)
            out.append(await _get(self.session, url, expected, self.headers))

    async def run(self, requests: list[tuple[str, str]]) -> tuple[list[int], float]:
        """Latencies (ns) of these requests over `concurrency` connections, and the wall time."""
        outs: list[list[int]] = [[] for _ in range(self.concurrency)]
        started = time.perf_counter()
        await asyncio.gather(
            *(
                self._worker(requests[i :: self.concurrency], outs[i])
                for i in range(self.concurrency)
            )
        )
        return [x for out in outs for x in out], time.perf_counter() - started

    async def close(self) -> None:
        await self.session.close()


def _comparable(item: dict[str, Any]) -> dict[str, Any]:
    """An item without what each server may legitimately answer differently."""
    return {k: v for k, v in item.items() if k not in ("id", "links")}


async def check_same_items(
    servers: dict[str, Server], sample: list[tuple[str, str]], headers: dict[str, str]
) -> None:
    """Every server must answer the same item content: else the comparison means nothing."""
    async with aiohttp.ClientSession() as session:
        for collection, item_id in sample:
            answers = {}
            for series in SERIES:
                url = servers[series.server].base + series.path(collection, item_id)
                async with session.get(url, headers=headers) as response:
                    body = await response.read()
                    if response.status != 200:
                        raise BenchmarkFailure(f"GET {url} answered {response.status}: {body!r}")
                answers[f"{series.server}/{series.route}"] = _comparable(orjson.loads(body))
            reference = answers["plain-default/item"]
            for name, answer in answers.items():
                if answer != reference:
                    diff = sorted(
                        k for k in set(answer) | set(reference) if answer.get(k) != reference.get(k)
                    )
                    raise BenchmarkFailure(
                        f"{name} answers {collection}/{item_id} unlike plain-default (keys {diff})"
                    )


# --- statistics and reports -----------------------------------------------------------------


def percentile(sorted_values: list[int], fraction: float) -> float:
    """Nearest-rank percentile."""
    rank = max(1, math.ceil(fraction * len(sorted_values)))
    return sorted_values[rank - 1]


def summarise(latencies: list[int], seconds: float) -> dict[str, float]:
    values = sorted(latencies)
    return {
        "requests": len(values),
        "p50_ms": percentile(values, 0.50) / 1e6,
        "p90_ms": percentile(values, 0.90) / 1e6,
        "p99_ms": percentile(values, 0.99) / 1e6,
        "mean_ms": sum(values) / len(values) / 1e6,
        "max_ms": values[-1] / 1e6,
        "req_per_s": len(values) / seconds,
    }


def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "?"


def _git_commit() -> str:
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=ROOT,
            capture_output=True,
            text=True,
        ).stdout.strip()
    except OSError:
        return "?"
    return f"{commit}{' (uncommitted changes)' if dirty else ''}" if commit else "?"


def environment(dsn: str) -> dict[str, Any]:
    with psycopg.connect(dsn) as conn:
        postgres = conn.execute("SHOW server_version").fetchone()[0]
        pgstac = conn.execute("SELECT pgstac.get_version()").fetchone()[0]
    cpu = "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return {
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "cpu": cpu,
        "postgresql": postgres,
        "pgstac": pgstac,
        "pypgstac": _version("pypgstac"),
        "stac-fastapi-pgstac": _version("stac-fastapi-pgstac"),
        "uvicorn": _version("uvicorn"),
        "uvloop": _version("uvloop"),
        "httptools": _version("httptools"),
        "aiohttp (client)": _version("aiohttp"),
        "astra-stac commit": _git_commit(),
    }


def ratios(results: dict[str, Any]) -> dict[str, Any]:
    """astra / plain, as speed-ups: req/s astra ÷ req/s plain and p50 plain ÷ p50 astra."""
    out: dict[str, Any] = {}
    for conc, rows in results.items():
        plain = {name: rows[f"{name}/item"] for name in ("plain-default", "plain-hydrate")}
        best_name = max(plain, key=lambda n: plain[n]["req_per_s"])
        out[conc] = {"plain_best": best_name}
        for route in ("scene", "item"):
            astra = rows[f"astra/{route}"]
            out[conc][route] = {
                f"vs_{name}": {
                    "req_per_s": astra["req_per_s"] / stats["req_per_s"],
                    "p50": stats["p50_ms"] / astra["p50_ms"],
                }
                for name, stats in (*plain.items(), ("plain-best", plain[best_name]))
            }
    return out


def targets(results: dict[str, Any], speedups: dict[str, Any]) -> list[dict[str, Any]]:
    """The issue's targets, checked at one connection."""
    if "1" not in results:
        return []
    checks = []
    for route in ("scene", "item"):
        speed = speedups["1"][route]
        checks += [
            {
                "target": f"{route}: ≥ 1.5× plain default (req/s)",
                "value": speed["vs_plain-default"]["req_per_s"],
                "ok": speed["vs_plain-default"]["req_per_s"] >= 1.5,
            },
            {
                "target": f"{route}: ≥ 1.0× plain best, {speedups['1']['plain_best']} (req/s)",
                "value": speed["vs_plain-best"]["req_per_s"],
                "ok": speed["vs_plain-best"]["req_per_s"] >= 1.0,
            },
            {
                "target": f"{route}: p50 < 5 ms at 1 connection",
                "value": results["1"][f"astra/{route}"]["p50_ms"],
                "ok": results["1"][f"astra/{route}"]["p50_ms"] < 5.0,
            },
        ]
    return checks


def markdown(report: dict[str, Any]) -> str:
    params = report["parameters"]
    lines = [
        f"# Single-item reads, {params['items']:,} items",
        "",
        f"Run {report['finished']} with `{report['command']}`.",
        "",
        f"{params['items']:,} synthetic scenes (half `{S2_COLLECTION}`, half "
        f"`{LANDSAT_COLLECTION}`), pgstac partitioned by `{params['partition']}` per "
        f"collection; {params['requests']:,} measured requests per row over "
        f"{params['rounds']} interleaved rounds after {params['warmup']} warm-up requests, "
        f"each request a different random item, the same items for every server; "
        f"uvicorn[standard] with {params['workers']} worker(s) per server; "
        f"`Accept-Encoding: {params['accept_encoding']}`. "
        "Speed-up = astra req/s ÷ plain req/s (and plain p50 ÷ astra p50).",
        "",
    ]
    for conc, rows in report["results"].items():
        speed = report["ratios"][conc]
        lines += [
            f"## {conc} connection{'s' if conc != '1' else ''}",
            "",
            "| server | route | p50 ms | p99 ms | req/s | ×plain-default | ×plain-best |",
            "|---|---|---:|---:|---:|---:|---:|",
        ]
        for series in SERIES:
            stats = rows[f"{series.server}/{series.route}"]
            if series.server == "astra":
                s = speed[series.route]
                vs_default = (
                    f"{s['vs_plain-default']['req_per_s']:.2f} "
                    f"(p50 {s['vs_plain-default']['p50']:.2f})"
                )
                vs_best = (
                    f"{s['vs_plain-best']['req_per_s']:.2f} (p50 {s['vs_plain-best']['p50']:.2f})"
                )
            else:
                vs_default = vs_best = ""
            lines.append(
                f"| {series.server} | `{ROUTE_LABEL[(series.server, series.route)]}` | "
                f"{stats['p50_ms']:.2f} | {stats['p99_ms']:.2f} | {stats['req_per_s']:,.0f} | "
                f"{vs_default} | {vs_best} |"
            )
        lines += ["", f"plain-best at {conc} connection(s): {speed['plain_best']}.", ""]
    if report["targets"]:
        lines += ["## Targets (1 connection)", "", "| target | value | met |", "|---|---:|---|"]
        for check in report["targets"]:
            value = f"{check['value']:.2f}" + (" ms" if "p50" in check["target"] else "×")
            lines.append(f"| {check['target']} | {value} | {'yes' if check['ok'] else 'NO'} |")
        lines.append("")
    lines += [
        *environment_section(report, f"data load: {report['load_seconds']}"),
    ]
    return "\n".join(lines)


def environment_section(report: dict[str, Any], *extra: str) -> list[str]:
    """The `## Environment` lines every benchmark's markdown ends with."""
    return [
        "## Environment",
        "",
        *(f"- {name}: {value}" for name, value in report["environment"].items()),
        f"- load average before / after: {report['load_before']} / {report['load_after']}",
        *(f"- {line}" for line in extra),
        "",
    ]


def print_table(report: dict[str, Any]) -> None:
    print()
    for conc, rows in report["results"].items():
        speed = report["ratios"][conc]
        print(f"== {conc} connection(s); plain-best = {speed['plain_best']}")
        print(f"{'series':<22}{'p50 ms':>9}{'p99 ms':>9}{'req/s':>9}{'×default':>10}{'×best':>8}")
        for series in SERIES:
            stats = rows[f"{series.server}/{series.route}"]
            extra = ""
            if series.server == "astra":
                s = speed[series.route]
                extra = (
                    f"{s['vs_plain-default']['req_per_s']:>10.2f}"
                    f"{s['vs_plain-best']['req_per_s']:>8.2f}"
                )
            print(
                f"{series.server + '/' + series.route:<22}{stats['p50_ms']:>9.2f}"
                f"{stats['p99_ms']:>9.2f}{stats['req_per_s']:>9.0f}{extra}"
            )
        print()
    for check in report["targets"]:
        print(f"[{'ok' if check['ok'] else 'MISSED'}] {check['target']}: {check['value']:.2f}")


# --- main -----------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--items", type=int, default=100_000, help="synthetic scenes to load")
    parser.add_argument(
        "--requests", type=int, default=3000, help="measured requests per server, route, level"
    )
    parser.add_argument(
        "--warmup", type=int, default=200, help="warm-up requests per series and level"
    )
    parser.add_argument("--rounds", type=int, default=15, help="interleaved rounds")
    parser.add_argument("--workers", type=int, default=1, help="uvicorn workers per server")
    parser.add_argument(
        "--concurrency", default="1,8", help="comma-separated keep-alive connection counts"
    )
    parser.add_argument(
        "--keep-db",
        type=Path,
        metavar="DIR",
        help="keep the database under DIR and reuse it on the next run (skips the load)",
    )
    parser.add_argument("--partition", choices=("year", "month", "none"), default="year")
    parser.add_argument("--seed", type=int, default=20231008)
    parser.add_argument(
        "--accept-encoding",
        default="gzip",
        help="Accept-Encoding sent by the client ('identity' measures without compression)",
    )
    parser.add_argument("--output-dir", type=Path, default=RESULTS)
    parser.add_argument(
        "--hold",
        action="store_true",
        help="after loading, keep the servers up until Ctrl-C (for profiling by hand)",
    )
    args = parser.parse_args(argv)
    args.levels = [int(c) for c in args.concurrency.split(",") if c.strip()]
    if args.items < 2 or args.requests < 1 or args.rounds < 1 or not args.levels:
        parser.error("--items ≥ 2, --requests ≥ 1, --rounds ≥ 1 and one --concurrency at least")
    return args


def _prepare_dir(args: argparse.Namespace) -> Path:
    if args.keep_db is not None:
        path = args.keep_db.resolve()
        path.mkdir(parents=True, exist_ok=True)
    else:
        path = Path(tempfile.mkdtemp(prefix="astra-bench-", dir="/tmp"))
    # The cluster runs as the unprivileged `postgres` user when we are root.
    os.chmod(path, 0o755)
    return path


async def measure(
    servers: dict[str, Server], args: argparse.Namespace, sample: list[tuple[str, str]]
) -> dict[str, Any]:
    """Warm every series up, then measure them in short interleaved rounds.

    Short rounds with a rotating order spread background load (other processes on
    the machine) evenly over the servers, so the ratios stay meaningful.
    """
    headers = {"Authorization": f"Bearer {args.key}", "Accept-Encoding": args.accept_encoding}
    warmup, measured = sample[: args.warmup], sample[args.warmup :]
    per_round = math.ceil(args.requests / args.rounds)
    results: dict[str, Any] = {}
    for level in args.levels:
        clients = [Client(servers[s.server].base, s, level, headers) for s in SERIES]
        latencies: dict[str, list[int]] = {}
        seconds: dict[str, float] = {}
        try:
            for client in clients:
                await client.run(warmup)
            for round_no in range(args.rounds):
                targets_ = measured[round_no * per_round : (round_no + 1) * per_round]
                shift = round_no % len(clients)
                for client in clients[shift:] + clients[:shift]:
                    name = f"{client.series.server}/{client.series.route}"
                    lat, wall = await client.run(targets_)
                    latencies.setdefault(name, []).extend(lat)
                    seconds[name] = seconds.get(name, 0.0) + wall
        finally:
            for client in clients:
                await client.close()
        results[str(level)] = {
            f"{s.server}/{s.route}": summarise(
                latencies[f"{s.server}/{s.route}"], seconds[f"{s.server}/{s.route}"]
            )
            for s in SERIES
        }
        print(f"  {level} connection(s): {args.rounds} rounds done", flush=True)
    return results


def open_database(args: argparse.Namespace, data_dir: Path) -> tuple[EmbeddedPostgres, str, str]:
    """The loaded cluster, started, its DSN, and how its data came: reused from
    `--keep-db` when its items, seed and partitioning match (migrated again, so new
    astra migrations reach it), else loaded afresh."""
    cluster = EmbeddedPostgres(data_dir / "db")
    meta_path = data_dir / META_FILE
    meta = database_meta(args.items, args.seed, args.partition)
    reuse = (
        args.keep_db is not None
        and cluster.initialized()
        and meta_path.exists()
        and json.loads(meta_path.read_text()) == meta
    )
    if not reuse and cluster.initialized():
        print(f"Removing the old database in {data_dir} (other data parameters)")
        cluster.stop()
        meta_path.unlink(missing_ok=True)
        shutil.rmtree(data_dir / "db", ignore_errors=True)
        cluster = EmbeddedPostgres(data_dir / "db")
    print(f"PostgreSQL under {cluster.data_dir}")
    cluster.start()
    try:
        dsn = cluster.dsn()
        if reuse:
            print("Reusing the loaded database; migrating it")
            migrate(dsn)
            how = "reused (--keep-db)"
        else:
            print(f"Loading {args.items:,} items (partitioned by {args.partition})")
            took = load_database(dsn, args.items, args.seed, args.partition)
            how = f"{took:.0f} s ({args.items / took:,.0f} items/s)"
            meta_path.write_text(json.dumps(meta))
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("ANALYZE pgstac.items")
    except BaseException:
        cluster.stop()
        raise
    return cluster, dsn, how


def _exit_on_sigterm(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)  # runs the clean-up below: servers and PostgreSQL stop


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    data_dir = _prepare_dir(args)
    cluster: EmbeddedPostgres | None = None
    servers: list[Server] = []
    try:
        cluster, dsn, load_seconds = open_database(args, data_dir)
        args.key = store.create_key(dsn, f"bench-{os.getpid()}-{int(time.time())}", Scope.read)[
            0
        ].secret

        ids = item_ids(dsn)
        if len(ids) != args.items:
            raise BenchmarkFailure(f"expected {args.items} items in the database, found {len(ids)}")
        wanted = args.warmup + args.requests
        rng = random.Random(args.seed + 1)
        sample = rng.sample(ids, min(wanted, len(ids)))
        while len(sample) < wanted:  # more requests than items: go round again
            sample += rng.sample(ids, min(wanted - len(sample), len(ids)))
        prewarm(dsn, sample)

        servers = make_servers(cluster, dsn)
        by_name = {s.name: s for s in servers}
        for server in servers:
            server.start(args.workers, data_dir)

        async def ready() -> None:
            async with aiohttp.ClientSession() as session:
                for server in servers:
                    await server.wait_ready(session)

        asyncio.run(ready())
        headers = {"Authorization": f"Bearer {args.key}"}
        asyncio.run(check_same_items(by_name, sample[:20], headers))
        print("All servers answer the same item content for 20 sampled items")
        if args.hold:
            for server in servers:
                print(f"{server.name}: {server.base} (pid {server.process.pid})")  # type: ignore[union-attr]
            print(f"key: {args.key}\nsample: {sample[0]}\nCtrl-C (or SIGTERM) to stop")
            with contextlib.suppress(KeyboardInterrupt):
                while True:
                    time.sleep(3600)
            return 0

        load_before = ", ".join(f"{x:.2f}" for x in os.getloadavg())
        print(f"Measuring (load average {load_before})")
        results = asyncio.run(measure(by_name, args, sample))
        speedups = ratios(results)
        report = {
            "finished": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
            "command": " ".join(["python", "benchmarks/bench_items.py", *sys.argv[1:]]),
            "parameters": {
                "items": args.items,
                "requests": args.requests,
                "warmup": args.warmup,
                "rounds": args.rounds,
                "workers": args.workers,
                "concurrency": args.levels,
                "partition": args.partition,
                "seed": args.seed,
                "accept_encoding": args.accept_encoding,
            },
            "environment": environment(dsn),
            "load_seconds": load_seconds,
            "load_before": load_before,
            "load_after": ", ".join(f"{x:.2f}" for x in os.getloadavg()),
            "results": results,
            "ratios": speedups,
            "targets": targets(results, speedups),
        }
        print_table(report)
        args.output_dir.mkdir(parents=True, exist_ok=True)
        stem = args.output_dir / f"items-{args.items}"
        stem.with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n")
        stem.with_suffix(".md").write_text(markdown(report))
        print(f"\nWrote {stem}.md and {stem}.json")
        return 0
    finally:
        for server in servers:
            server.stop()
        if cluster is not None:
            cluster.stop()
        if args.keep_db is None:
            shutil.rmtree(data_dir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
