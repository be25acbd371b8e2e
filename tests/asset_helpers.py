"""Helpers for the asset tests: real rasters written with rasterio, a scene that
points at them, and a small real HTTP server on loopback (files with Range
support, and a Planetary-Computer-style SAS token endpoint)."""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import numpy as np
import rasterio
import rasterio.shutil
from fastapi.testclient import TestClient
from rasterio.crs import CRS
from rasterio.io import MemoryFile
from rasterio.transform import from_origin

from astra_stac.app import create_app
from astra_stac.assets.settings import AssetSettings, SigningSettings, StorageSettings
from astra_stac.ingest.load import upsert
from astra_stac.ingest.normalize import template_collection
from astra_stac.providers import ProviderRegistry
from astra_stac.settings import ApiSettings

COG = "image/tiff; application=geotiff; profile=cloud-optimized"
GEOTIFF = "image/tiff; application=geotiff"
JP2 = "image/jp2"
EPSG = 32613
ORIGIN = (499980.0, 4500000.0)
HAS_JP2 = "JP2OpenJPEG" in rasterio.drivers.raster_driver_extensions().values()


def band_data(size: int, seed: int) -> np.ndarray:
    """Reflectance-like uint16 values with a gradient and some nodata."""
    rows = np.linspace(0, 1, size, dtype="float32")[:, None]
    cols = np.linspace(0, 1, size, dtype="float32")[None, :]
    noise = np.random.default_rng(seed).random((size, size), dtype="float32")
    data = ((rows * 0.6 + cols * 0.3 + noise * 0.1) * 9000 + 500).astype("uint16")
    data[:8, :8] = 0
    return data


def _profile(size: int, gsd: float) -> dict[str, Any]:
    return {
        "width": size,
        "height": size,
        "count": 1,
        "dtype": "uint16",
        "crs": CRS.from_epsg(EPSG),
        "transform": from_origin(*ORIGIN, gsd, gsd),
        "nodata": 0,
    }


def write_cog(path: Path, size: int = 512, gsd: float = 10, seed: int = 1) -> Path:
    with rasterio.open(
        path, "w", driver="COG", blocksize=256, compress="deflate", **_profile(size, gsd)
    ) as dst:
        dst.write(band_data(size, seed), 1)
    return path


def write_striped(path: Path, size: int = 1024, gsd: float = 10, seed: int = 2) -> Path:
    with rasterio.open(path, "w", driver="GTiff", **_profile(size, gsd)) as dst:
        dst.write(band_data(size, seed), 1)
    return path


def write_tiled(path: Path, size: int = 1024, gsd: float = 20, seed: int = 3) -> Path:
    """Tiled, but larger than 512 px without overviews: not a COG."""
    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        tiled=True,
        blockxsize=256,
        blockysize=256,
        compress="deflate",
        **_profile(size, gsd),
    ) as dst:
        dst.write(band_data(size, seed), 1)
    return path


def write_jp2(path: Path, size: int = 256, gsd: float = 20, seed: int = 4) -> Path:
    """Lossless JPEG2000 with its georeferencing in the file (GMLJP2/GeoJP2 boxes)."""
    source = write_striped(path.with_suffix(".src.tif"), size=size, gsd=gsd, seed=seed)
    rasterio.shutil.copy(source, path, driver="JP2OpenJPEG", QUALITY=100, REVERSIBLE="YES")
    source.unlink()
    path.with_name(path.name + ".aux.xml").unlink(missing_ok=True)
    return path


def band_asset(href: str, media_type: str, name: str, common: str, gsd: float) -> dict[str, Any]:
    return {
        "href": href,
        "type": media_type,
        "roles": ["data"],
        "gsd": gsd,
        "eo:bands": [{"name": name, "common_name": common}],
    }


def scene_item(item_id: str, assets: dict[str, dict[str, Any]], collection: str) -> dict[str, Any]:
    """A Sentinel-2 style item of the catch-all `local` provider."""
    bbox = [-105.0, 40.0, -104.9, 40.1]
    return {
        "type": "Feature",
        "stac_version": "1.0.0",
        "stac_extensions": [],
        "id": item_id,
        "collection": collection,
        "bbox": bbox,
        "geometry": {
            "type": "Polygon",
            "coordinates": [
                [
                    [bbox[0], bbox[1]],
                    [bbox[2], bbox[1]],
                    [bbox[2], bbox[3]],
                    [bbox[0], bbox[3]],
                    [bbox[0], bbox[1]],
                ]
            ],
        },
        "properties": {
            "datetime": "2024-05-01T17:00:00Z",
            "platform": "sentinel-2b",
            "proj:epsg": EPSG,
            "astra:provider": "local",
            "astra:collection": collection,
        },
        "links": [],
        "assets": assets,
    }


def load_scene(dsn: str, registry: ProviderRegistry, item: dict[str, Any]) -> str:
    """Store the item (and its collection); returns its scene id."""
    provider = registry.providers["local"]
    collection = template_collection(item["collection"], provider, item["collection"])
    upsert(dsn, [collection], [item])
    return f"local:{item['id']}"


@dataclass
class LoopbackHttp:
    """A real HTTP server on 127.0.0.1: files from `root` (HEAD, GET, Range) and
    SAS tokens at `/token/{account}/{container}`."""

    root: Path
    url: str = ""
    token_requests: list[tuple[str, dict[str, str]]] = field(default_factory=list)
    token_lifetime: timedelta = timedelta(hours=1)
    token_status: int = 200
    file_requests: list[tuple[str, str | None]] = field(default_factory=list)


def _handler(state: LoopbackHttp) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def _token(self) -> None:
            state.token_requests.append((self.path, dict(self.headers)))
            if state.token_status != 200:
                self.send_response(state.token_status)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            expiry = datetime.now(UTC) + state.token_lifetime
            n = len(state.token_requests)
            body = json.dumps(
                {
                    "msft:expiry": expiry.strftime("%Y-%m-%dT%H:%M:%SZ"),
                    "token": f"st=2024&se=x&sp=rl&sv=2021&sr=c&skoid=t{n}&sig=token{n}",
                }
            ).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _file(self, head: bool) -> None:
            path = self.root_path()
            state.file_requests.append((self.path, self.headers.get("Range")))
            if path is None or not path.is_file():
                self.send_response(404)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            data = path.read_bytes()
            status, start, end = 200, 0, len(data) - 1
            match = re.fullmatch(r"bytes=(\d*)-(\d*)", self.headers.get("Range") or "")
            if match and (match[1] or match[2]):
                if match[1]:
                    start = int(match[1])
                    end = min(int(match[2]), end) if match[2] else end
                else:
                    start = max(0, len(data) - int(match[2]))
                status = 206
            chunk = data[start : end + 1]
            self.send_response(status)
            self.send_header("Accept-Ranges", "bytes")
            self.send_header("Content-Type", "image/tiff")
            self.send_header("Content-Length", str(len(chunk)))
            if status == 206:
                self.send_header("Content-Range", f"bytes {start}-{end}/{len(data)}")
            self.end_headers()
            if not head:
                self.wfile.write(chunk)

        def root_path(self) -> Path | None:
            relative = self.path.split("?", 1)[0].lstrip("/")
            candidate = (state.root / relative).resolve()
            return candidate if candidate.is_relative_to(state.root.resolve()) else None

        def do_GET(self) -> None:
            if self.path.startswith("/token/"):
                self._token()
            else:
                self._file(head=False)

        def do_HEAD(self) -> None:
            self._file(head=True)

    return Handler


@contextmanager
def loopback_http(root: Path) -> Iterator[LoopbackHttp]:
    state = LoopbackHttp(root=root)
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    state.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()


SIGNING_KEY = "k" * 40


def asset_settings(storage: Path, cache: Path, **overrides: object) -> AssetSettings:
    values: dict[str, object] = {
        "signing": SigningSettings(signing_key=SIGNING_KEY),
        "storage": StorageSettings(root=storage, cache_dir=cache),
        **overrides,
    }
    return AssetSettings(**values)  # type: ignore[arg-type]


def app_client(
    dsn: str, settings: AssetSettings, local_hosts: list[str] | None = None
) -> TestClient:
    """The app; `local_hosts` are URL prefixes the `local` provider may read from."""
    api = ApiSettings(
        collection_cache_seconds=0,
        rate_limits_enabled=False,
        asset_hosts={"local": local_hosts or []},
    )
    return TestClient(create_app(api_settings=api, dsn=dsn, asset_settings=settings))


def resolve(client: TestClient, auth: dict[str, str], **params: str) -> httpx.Response:
    return client.get("/api/v1/assets", params=params, headers=auth)


def download(client: TestClient, href: str, **headers: str) -> httpx.Response:
    parts = urlsplit(href)
    return client.get(f"{parts.path}?{parts.query}", headers=headers)


def read_tiff(content: bytes) -> np.ndarray:
    with MemoryFile(content) as memfile, memfile.open() as src:
        return src.read(1)
