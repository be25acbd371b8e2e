"""No SSRF: crafted catalogue hrefs are refused by the asset resolver, the converter
and the tiler, and never fetched — a real loopback server records every request."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import morecantile
import pytest
from fastapi.testclient import TestClient

from astra_stac.assets.settings import PlanetaryComputerSettings
from astra_stac.assets.signing import PlanetaryComputerSigner
from astra_stac.errors import AssetNotAllowed
from astra_stac.ingest.load import upsert
from astra_stac.providers import load_registry
from tests.asset_helpers import (
    COG,
    LoopbackHttp,
    app_client,
    asset_settings,
    band_asset,
    load_scene,
    loopback_http,
    resolve,
    scene_item,
    write_cog,
)

TILE = morecantile.tms.get("WebMercatorQuad").tile(-104.95, 40.05, 12)
TILER_ROUTES = (
    f"/tiles/WebMercatorQuad/{TILE.z}/{TILE.x}/{TILE.y}.png",
    "/preview.png",
    "/info",
    "/statistics",
)


@pytest.fixture
def http(tmp_path: Path) -> Iterator[LoopbackHttp]:
    """A loopback server with a real COG at /x.tif and /ok/x.tif, recording every hit."""
    (tmp_path / "served" / "ok").mkdir(parents=True)
    write_cog(tmp_path / "served" / "x.tif")
    write_cog(tmp_path / "served" / "ok" / "x.tif")
    with loopback_http(tmp_path / "served") as server:
        yield server


@pytest.fixture
def storage_cache(pg_server, tmp_path: Path) -> tuple[Path, Path]:
    """The storage root (the demo's) and a conversion cache of this test's own."""
    return Path(pg_server.storage), tmp_path / "cache"


@pytest.fixture
def inside(pg_server) -> Path:
    """A directory of this test's own inside the storage root."""
    path = Path(pg_server.storage) / "ssrf" / uuid.uuid4().hex
    path.mkdir(parents=True)
    return path


def _vrt(path: Path, source: str) -> Path:
    path.write_text(
        '<VRTDataset rasterXSize="64" rasterYSize="64"><SRS>EPSG:32613</SRS>'
        "<GeoTransform>499980, 10, 0, 4500000, 0, -10</GeoTransform>"
        '<VRTRasterBand dataType="UInt16" band="1"><SimpleSource>'
        f"<SourceFilename>{source}</SourceFilename><SourceBand>1</SourceBand>"
        "</SimpleSource></VRTRasterBand></VRTDataset>"
    )
    return path


def _hostile_hrefs(http: LoopbackHttp, inside: Path) -> dict[str, str]:
    loopback = f"{http.url}/x.tif"
    return {
        "passwd": "file:///etc/passwd",
        "vsicurl": f"/vsicurl/{loopback}",
        "loopback": loopback,
        "traversal": "ssrf/../../../../etc/passwd",
        "inline-vrt": f"<VRTDataset><SourceFilename>{loopback}</SourceFilename></VRTDataset>",
        "vrt-scheme": f"vrt:///vsicurl/{loopback}",
        "vrt-file": _vrt(inside / "B04.tif", f"/vsicurl/{loopback}").as_uri(),
        "vrt-passwd": _vrt(inside / "passwd.tif", "/etc/passwd").as_uri(),
    }


def _earth_search_scene(dsn: str, item_id: str, href: str, size: int | None = None) -> str:
    """An item of the earth-search provider (demo collection es-sentinel-2-l2a); with a
    `file:size`, resolving it asks its host nothing."""
    asset = band_asset(href, COG, "B04", "red", 10)
    if size is not None:
        asset["file:size"] = size
    item = scene_item(item_id, {"red": asset}, "")
    item["collection"] = item["properties"]["astra:collection"] = "es-sentinel-2-l2a"
    item["properties"]["astra:provider"] = "element84"
    upsert(dsn, [], [item])
    return f"earth-search:{item_id}"


def _assert_refused(response: Any, where: str) -> None:
    assert response.status_code == 422, (where, response.status_code, response.text)
    body = response.json()
    assert body["code"] == "ASSET_NOT_ALLOWED", where
    assert set(body) == {"code", "description"}
    assert "/etc/passwd" not in body["description"]


def _every_route(client: TestClient, auth: dict[str, str], scene: str) -> Iterator[Any]:
    for fmt in ("cog", "png"):
        yield f"/assets format={fmt}", resolve(client, auth, scene_id=scene, format=fmt)
    for route in TILER_ROUTES:
        yield route, client.get(f"/api/v1/scenes/{scene}{route}?bands=red", headers=auth)


def test_crafted_local_hrefs_are_refused_everywhere_and_never_fetched(
    dsn, registry, auth, storage_cache, http, inside
):
    storage, cache = storage_cache
    scenes = {
        name: load_scene(
            dsn,
            registry,
            scene_item(
                f"S2X_SSRF_{name.upper().replace('-', '_')}",
                {"red": band_asset(href, COG, "B04", "red", 10)},
                "astra-test-ssrf",
            ),
        )
        for name, href in _hostile_hrefs(http, inside).items()
    }
    with app_client(dsn, asset_settings(storage, cache)) as client:
        for name, scene in scenes.items():
            for route, response in _every_route(client, auth, scene):
                _assert_refused(response, f"{name} via {route}")
    assert http.file_requests == []
    assert not [p for p in cache.rglob("*") if p.is_file() and p.name != ".lock"]


def test_earth_search_items_read_only_from_earth_search_hosts(dsn, auth, storage_cache, http):
    storage, cache = storage_cache
    hostile = {
        "EVIL": "https://evil.example/x.tif",
        "LOOPBACK": f"{http.url}/x.tif",
        "USERINFO": f"https://sentinel-cogs.s3.us-west-2.amazonaws.com@{http.url[7:]}/x.tif",
        "BUCKET": "s3://someone-elses-bucket/x.tif",
    }
    scenes = [_earth_search_scene(dsn, f"S2X_ES_{n}", href) for n, href in hostile.items()]
    with app_client(dsn, asset_settings(storage, cache)) as client:
        for scene in scenes:
            for route, response in _every_route(client, auth, scene):
                _assert_refused(response, f"{scene} via {route}")
        # The provider's own hosts still resolve (public https, returned as it is).
        good = "https://sentinel-cogs.s3.us-west-2.amazonaws.com/sentinel-s2-l2a-cogs/B04.tif"
        own = _earth_search_scene(dsn, "S2X_ES_OWN", good, size=1234)
        body = resolve(client, auth, scene_id=own).json()
        assert body["assets"]["B04"]["href"] == good
    assert http.file_requests == []


def test_the_local_provider_reads_remote_hosts_only_when_configured(
    dsn, registry, auth, storage_cache, http
):
    storage, cache = storage_cache
    allowed = load_scene(
        dsn,
        registry,
        scene_item(
            "S2X_LOCAL_OK",
            {"red": band_asset(f"{http.url}/ok/x.tif", COG, "B04", "red", 10)},
            "astra-test-ssrf",
        ),
    )
    beside = load_scene(
        dsn,
        registry,
        scene_item(
            "S2X_LOCAL_BESIDE",
            {"red": band_asset(f"{http.url}/ok/../x.tif", COG, "B04", "red", 10)},
            "astra-test-ssrf",
        ),
    )
    with app_client(dsn, asset_settings(storage, cache)) as client:
        _assert_refused(resolve(client, auth, scene_id=allowed), "unconfigured")
    assert http.file_requests == []
    with app_client(dsn, asset_settings(storage, cache), [f"{http.url}/ok/"]) as client:
        _assert_refused(resolve(client, auth, scene_id=beside), "dot segments")
        assert http.file_requests == []
        response = resolve(client, auth, scene_id=allowed, format="png")
        assert response.status_code == 200, response.text
        assert response.json()["assets"]["B04"]["astra:routing"] == "converted"
    assert http.file_requests and all(p.startswith("/ok/") for p, _ in http.file_requests)


def test_allow_list_matching():
    es = load_registry().providers["earth-search"]
    host = "https://sentinel-cogs.s3.us-west-2.amazonaws.com"
    assert es.allows(f"{host}/a/B04.tif")
    assert es.allows(f"{host.upper()}/a/B04.tif")
    assert es.allows("s3://usgs-landsat/collection02/x.TIF")
    for refused in (
        "http://sentinel-cogs.s3.us-west-2.amazonaws.com/a.tif",  # another scheme
        f"{host}:8443/a.tif",  # another port
        f"{host}@127.0.0.1/a.tif",
        f"{host}.evil.example/a.tif",
        f"{host}/a/../../b.tif",
        f"{host}/a/%2e%2e/b.tif",
        f"{host}\\@127.0.0.1/a.tif",
        f"{host}/a b.tif",
        f"{host}/a\nb.tif",
        "s3://usgs-landsat-private/x.tif",
        "s3://usgs-landsat/../other-bucket/x.tif",
        "file:///etc/passwd",
    ):
        assert not es.allows(refused), refused
    with pytest.raises(ValueError, match="unknown providers"):
        load_registry().with_asset_hosts({"nobody": ["https://x/"]})
    with pytest.raises(ValueError, match="not an http"):
        load_registry().with_asset_hosts({"local": ["ftp://x/"]})


def test_the_sas_signer_only_calls_its_token_endpoint(tmp_path):
    with loopback_http(tmp_path) as server:
        settings = PlanetaryComputerSettings(sas_token_url=f"{server.url}/token")
        signer = PlanetaryComputerSigner(settings)
        for crafted in (
            "https://acct.blob.core.windows.net/%2e%2e/%2e%2e/x.tif",
            "https://acct.blob.core.windows.net/../x.tif",
            "https://a.blob.core.windows.net/container/x.tif",  # no such account name
        ):
            with pytest.raises(AssetNotAllowed):
                asyncio.run(signer.sign(crafted))
        signed = asyncio.run(signer.sign("https://acct.blob.core.windows.net/sentinel2-l2/x.tif"))
    assert signed.signed
    assert [path for path, _ in server.token_requests] == ["/token/acct/sentinel2-l2"]
    assert server.file_requests == []
