"""The Asset Resolver end to end: routing, conversion, signed downloads, errors."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
import jsonschema
import numpy as np
import pytest
import rasterio
from fastapi.testclient import TestClient
from rasterio.io import MemoryFile
from rasterio.windows import Window

from astra_stac.app import create_app
from astra_stac.assets.convert import Converter, OutputFormat, is_valid_cog
from astra_stac.assets.settings import (
    ConvertSettings,
    SigningSettings,
)
from astra_stac.settings import ApiSettings
from tests.asset_helpers import (
    COG,
    GEOTIFF,
    HAS_JP2,
    JP2,
    SIGNING_KEY,
    app_client,
    asset_settings,
    band_asset,
    download,
    load_scene,
    read_tiff,
    resolve,
    scene_item,
    write_cog,
    write_jp2,
    write_striped,
    write_tiled,
)

DEMO_SCENE = "earth-search:S2A_13TDE_20231008_0_L2A"


@pytest.fixture
def storage(pg_server) -> Path:
    """The session's storage root, where the demo band files are."""
    return Path(pg_server.storage)


@pytest.fixture
def cache(tmp_path: Path) -> Path:
    return tmp_path / "cache"


@pytest.fixture
def scenes(storage: Path) -> Iterator[Path]:
    """This test's own directory of rasters under the storage root."""
    directory = storage / "scenes" / uuid.uuid4().hex[:12]
    directory.mkdir(parents=True)
    yield directory
    shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
def rasters(scenes: Path) -> dict[str, Path]:
    files = {
        "cog": write_cog(scenes / "B04.tif"),
        "striped": write_striped(scenes / "B08.tif"),
        "tiled": write_tiled(scenes / "B11.tif"),
    }
    if HAS_JP2:
        files["jp2"] = write_jp2(scenes / "B12.jp2")
    return files


@pytest.fixture
def local_scene(dsn: str, registry, rasters: dict[str, Path]) -> str:
    assets = {
        "red": band_asset(rasters["cog"].as_uri(), COG, "B04", "red", 10),
        "nir": band_asset(rasters["striped"].as_uri(), GEOTIFF, "B08", "nir", 10),
        # Claims to be a COG; validation finds it is not.
        "swir16": band_asset(rasters["tiled"].as_uri(), COG, "B11", "swir16", 20),
    }
    if HAS_JP2:
        assets["swir22"] = band_asset(rasters["jp2"].as_uri(), JP2, "B12", "swir22", 20)
    return load_scene(dsn, registry, scene_item("S2X_LOCAL_TEST", assets, "astra-test-uploads"))


@pytest.fixture
def client(dsn: str, storage: Path, cache: Path) -> Iterator[TestClient]:
    with app_client(dsn, asset_settings(storage, cache)) as test_client:
        yield test_client


# --- the spec's response, demo scene -------------------------------------------------


def test_resolves_red_nir_of_a_demo_scene_as_in_the_spec(client, auth):
    response = resolve(client, auth, scene_id=DEMO_SCENE, bands="red,nir", format="cog")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["scene_id"] == DEMO_SCENE
    assert body["format"] == "cog"
    assert list(body["assets"]) == ["B04", "B08"]
    red = body["assets"]["B04"]
    assert red["type"] == "image/tiff; application=geotiff; profile=cloud-optimized"
    assert red["title"] == "Red (B04) - 10m"
    assert red["eo:bands"] == [{"name": "B04", "common_name": "red", "center_wavelength": 0.665}]
    assert body["assets"]["B08"]["eo:bands"][0]["common_name"] == "nir"
    assert body["metadata"] == {
        "crs": "EPSG:32613",
        "resolution": 10,
        "source_provider": "element84",
        "routing": "direct",
    }
    expires = datetime.strptime(red["expires_at"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    assert abs(expires.timestamp() - (time.time() + 3600)) < 60
    assert response.headers["cache-control"] == "no-store"
    for asset in body["assets"].values():
        got = download(client, asset["href"], **{"Accept-Encoding": "gzip, br"})
        assert got.status_code == 200
        assert "content-encoding" not in got.headers
        assert len(got.content) == asset["file:size"]
        assert int(got.headers["content-length"]) == asset["file:size"]


def test_the_published_example_has_the_live_shape(client, auth):
    example_path = Path(__file__).parents[1] / "extensions/astra/examples/assets.json"
    example = json.loads(example_path.read_text())
    body = resolve(client, auth, scene_id=example["scene_id"], bands="red,nir").json()
    assert set(body) == set(example)
    assert set(body["metadata"]) == set(example["metadata"])
    assert list(body["assets"]) == list(example["assets"])
    for name, asset in body["assets"].items():
        documented = example["assets"][name]
        assert set(asset) == set(documented)
        for field in ("type", "title", "eo:bands", "gsd", "astra:routing", "astra:signed"):
            assert asset[field] == documented[field], field
    assert body["metadata"] == example["metadata"]


@pytest.mark.parametrize("fmt", ["cog", "png"])
def test_answers_match_the_documented_openapi(client, auth, local_scene, fmt):
    """The OpenAPI document describes the parameters and the body clients get."""
    operation = client.app.openapi()["paths"]["/api/v1/assets"]["get"]
    assert [p["name"] for p in operation["parameters"]] == ["scene_id", "bands", "format"]
    schema = operation["responses"]["200"]["content"]["application/json"]["schema"]
    validator = jsonschema.Draft202012Validator(schema)
    for scene in (DEMO_SCENE, local_scene):
        response = resolve(client, auth, scene_id=scene, format=fmt)
        assert response.status_code == 200, response.text
        assert response.headers["content-type"] == "application/json"
        body = response.json()
        assert body["assets"] and not list(validator.iter_errors(body)), body
    assert list(validator.iter_errors({**body, "metadata": {"routing": "sideways"}}))


def test_every_demo_scene_resolves_every_band(client, auth):
    scenes = client.get("/api/v1/search", params={"limit": 50}, headers=auth).json()["features"]
    assert len(scenes) == 7
    for feature in scenes:
        body = resolve(client, auth, scene_id=feature["id"]).json()
        assert body["metadata"]["routing"] == "direct", feature["id"]
        assert {"B02", "B03", "B04"} <= set(body["assets"]), feature["id"]
        assert body["metadata"]["crs"].startswith("EPSG:326")


def test_bands_omitted_returns_every_band(client, auth):
    body = resolve(client, auth, scene_id=DEMO_SCENE).json()
    assert list(body["assets"]) == [
        "B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B11", "B12",
    ]  # fmt: skip
    assert body["metadata"]["resolution"] == 10
    assert body["assets"]["B01"]["gsd"] == 60


# --- errors in the one shape ---------------------------------------------------------


@pytest.mark.parametrize(
    ("params", "status", "code"),
    [
        ({}, 400, "INVALID_PARAMETER"),
        ({"scene_id": ""}, 400, "INVALID_PARAMETER"),
        ({"scene_id": "S2A_13TDE_20231008_0_L2A"}, 400, "INVALID_ID_FORMAT"),
        ({"scene_id": "earth-search:NOPE_0_L2A"}, 404, "SCENE_NOT_FOUND"),
        ({"scene_id": "nobody:S2A_13TDE_20231008_0_L2A"}, 404, "SCENE_NOT_FOUND"),
        ({"scene_id": DEMO_SCENE, "bands": "red,ultraviolet"}, 400, "UNKNOWN_BAND"),
        ({"scene_id": DEMO_SCENE, "format": "webp"}, 400, "UNKNOWN_FORMAT"),
    ],
)
def test_bad_requests_answer_in_the_error_shape(client, auth, params, status, code):
    response = resolve(client, auth, **params)
    assert response.status_code == status
    body = response.json()
    assert set(body) == {"code", "description"}
    assert body["code"] == code


def test_unknown_band_lists_the_scene_bands(client, auth):
    body = resolve(client, auth, scene_id=DEMO_SCENE, bands="B13").json()
    assert "B04 (red)" in body["description"] and "B8A (nir08)" in body["description"]


def test_resolver_needs_a_key_but_downloads_do_not(client, auth):
    response = client.get("/api/v1/assets", params={"scene_id": DEMO_SCENE})
    assert response.status_code == 401
    assert response.json()["code"] == "UNAUTHORIZED"
    href = resolve(client, auth, scene_id=DEMO_SCENE, bands="red").json()["assets"]["B04"]["href"]
    assert download(client, href).status_code == 200


# --- routing and conversion ----------------------------------------------------------


def test_routing_direct_for_cogs_converted_for_the_rest(client, auth, local_scene, rasters):
    response = resolve(client, auth, scene_id=local_scene, format="cog")
    assert response.status_code == 200, response.text
    body = response.json()
    expected = ["B04", "B08", "B11"] + (["B12"] if HAS_JP2 else [])
    assert list(body["assets"]) == expected
    routing = {name: asset["astra:routing"] for name, asset in body["assets"].items()}
    assert routing["B04"] == "direct"
    assert routing["B08"] == "converted"  # striped GeoTIFF
    assert routing["B11"] == "converted"  # tiled, no overviews, media type lied
    assert body["metadata"]["routing"] == "converted"
    assert body["metadata"]["source_provider"] == "local"
    assert body["metadata"]["crs"] == "EPSG:32613"
    # Bands at 10 m and 20 m: the finest is reported, each asset keeps its own.
    assert body["metadata"]["resolution"] == 10
    assert (body["assets"]["B04"]["gsd"], body["assets"]["B11"]["gsd"]) == (10, 20)
    sources = {"B04": "cog", "B08": "striped", "B11": "tiled", "B12": "jp2"}
    for name, asset in body["assets"].items():
        assert asset["type"] == "image/tiff; application=geotiff; profile=cloud-optimized"
        got = download(client, asset["href"])
        assert got.status_code == 200
        assert len(got.content) == asset["file:size"]
        with rasterio.open(rasters[sources[name]]) as src:
            original = src.read(1)
        assert np.array_equal(read_tiff(got.content), original), name
        if asset["astra:routing"] == "converted":
            converted = Path(client.app.state.asset_resolver.local.cache_dir)
            (path,) = converted.rglob(f"{name}.tif")
            assert is_valid_cog(str(path), "test")


def test_geotiff_is_served_as_a_cog(client, auth, local_scene):
    body = resolve(client, auth, scene_id=local_scene, bands="red,nir", format="GeoTIFF").json()
    assert body["format"] == "geotiff"
    assert body["assets"]["B04"]["astra:routing"] == "direct"
    assert body["assets"]["B08"]["astra:routing"] == "converted"
    assert {a["type"] for a in body["assets"].values()} == {
        "image/tiff; application=geotiff; profile=cloud-optimized"
    }


def test_conversions_are_cached(client, auth, local_scene):
    converter = client.app.state.asset_resolver.converter
    first = resolve(client, auth, scene_id=local_scene, bands="nir").json()
    runs = converter.runs
    second = resolve(client, auth, scene_id=local_scene, bands="nir,B08").json()
    assert converter.runs == runs
    assert list(second["assets"]) == ["B08"]
    assert (
        urlsplit(first["assets"]["B08"]["href"]).path
        == urlsplit(second["assets"]["B08"]["href"]).path
    )
    assert first["assets"]["B08"]["file:size"] == second["assets"]["B08"]["file:size"]


@pytest.mark.filterwarnings("ignore::rasterio.errors.NotGeoreferencedWarning")
@pytest.mark.filterwarnings("ignore::rio_tiler.errors.NoOverviewWarning")
@pytest.mark.parametrize(
    ("fmt", "media_type", "driver"), [("png", "image/png", "PNG"), ("jpeg", "image/jpeg", "JPEG")]
)
def test_png_and_jpeg_are_8_bit_renderings(
    dsn, storage, cache, auth, local_scene, fmt, media_type, driver
):
    settings = asset_settings(storage, cache, convert=ConvertSettings(render_max_size=300))
    with app_client(dsn, settings) as client:
        body = resolve(client, auth, scene_id=local_scene, bands="red,swir16", format=fmt).json()
        assert body["format"] == fmt
        assert body["metadata"]["routing"] == "converted"
        for asset in body["assets"].values():
            assert asset["type"] == media_type
            assert asset["astra:routing"] == "converted"
            got = download(client, asset["href"])
            assert got.headers["content-type"] == media_type
            assert len(got.content) == asset["file:size"]
            with MemoryFile(got.content) as memfile, memfile.open() as img:
                assert img.driver == driver
                assert img.dtypes[0] == "uint8"
                assert img.count == (2 if fmt == "png" else 1)  # PNG: grey + nodata alpha
                assert max(img.width, img.height) <= 300
                grey = img.read(1)
            # Percentile 2–98 stretch: the rendering uses the whole 8-bit range.
            assert grey.min() == 0 and grey.max() == 255
            assert 60 < float(np.median(grey)) < 200


def test_file_outside_the_storage_root_is_refused(dsn, registry, storage, cache, auth, tmp_path):
    outside = write_cog(tmp_path / "elsewhere.tif")
    item = scene_item(
        "S2X_OUTSIDE",
        {"red": band_asset(outside.as_uri(), COG, "B04", "red", 10)},
        "astra-test-uploads",
    )
    scene = load_scene(dsn, registry, item)
    with app_client(dsn, asset_settings(storage, cache)) as client:
        response = resolve(client, auth, scene_id=scene)
    assert response.status_code == 422
    assert response.json()["code"] == "ASSET_NOT_ALLOWED"
    assert str(tmp_path) not in response.json()["description"]


def test_missing_file_is_asset_unavailable(client, auth, dsn, registry, scenes):
    item = scene_item(
        "S2X_MISSING",
        {"red": band_asset((scenes / "gone.tif").as_uri(), COG, "B04", "red", 10)},
        "astra-test-uploads",
    )
    response = resolve(client, auth, scene_id=load_scene(dsn, registry, item))
    assert response.status_code == 502
    assert response.json()["code"] == "ASSET_UNAVAILABLE"


def test_paths_relative_to_the_storage_root(client, auth, dsn, registry, rasters, scenes):
    relative = f"scenes/{scenes.name}/B04.tif"
    item = scene_item(
        "S2X_RELATIVE", {"red": band_asset(relative, COG, "B04", "red", 10)}, "astra-test-uploads"
    )
    body = resolve(client, auth, scene_id=load_scene(dsn, registry, item)).json()
    assert f"/download/files/{relative}?" in body["assets"]["B04"]["href"]
    assert body["assets"]["B04"]["file:size"] == rasters["cog"].stat().st_size


# --- concurrency ---------------------------------------------------------------------


def _slow_cog(monkeypatch: pytest.MonkeyPatch, seconds: float, seen: list[Path]) -> None:
    original = Converter._to_cog

    def slow(self: Converter, read_path: str, destination: Path) -> None:
        time.sleep(seconds)
        # Mid-conversion nothing sits under the final name yet.
        seen.extend(p for p in destination.parent.iterdir() if not p.name.startswith("."))
        original(self, read_path, destination)

    monkeypatch.setattr(Converter, "_to_cog", slow)


def test_ten_simultaneous_requests_run_one_conversion(
    dsn, storage, cache, auth, local_scene, monkeypatch
):
    seen: list[Path] = []
    _slow_cog(monkeypatch, 0.3, seen)
    app = create_app(
        api_settings=ApiSettings(collection_cache_seconds=0, rate_limits_enabled=False),
        dsn=dsn,
        asset_settings=asset_settings(storage, cache),
    )

    async def scenario() -> list[httpx.Response]:
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
                return await asyncio.gather(
                    *(
                        http.get(
                            "/api/v1/assets",
                            params={"scene_id": local_scene, "bands": "nir"},
                            headers=auth,
                        )
                        for _ in range(10)
                    )
                )

    responses = asyncio.run(scenario())
    assert [r.status_code for r in responses] == [200] * 10
    assert app.state.asset_resolver.converter.runs == 1
    assert seen == []
    paths = {urlsplit(r.json()["assets"]["B08"]["href"]).path for r in responses}
    sizes = {r.json()["assets"]["B08"]["file:size"] for r in responses}
    assert len(paths) == 1 and len(sizes) == 1
    cached = [p for p in cache.rglob("*") if p.is_file() and not p.name.startswith(".")]
    assert [p.stat().st_size for p in cached] == list(sizes)


def test_two_processes_sharing_the_cache_convert_once(tmp_path, monkeypatch):
    """Two converters (as two workers would have) serialise on the cache's file lock."""
    _slow_cog(monkeypatch, 0.2, [])
    source = write_striped(tmp_path / "src.tif")
    first = Converter(tmp_path / "cache", ConvertSettings())
    second = Converter(tmp_path / "cache", ConvertSettings())

    async def both() -> list[Path]:
        return await asyncio.gather(
            first.ensure(str(source), "src|1", "B08", OutputFormat.COG),
            second.ensure(str(source), "src|1", "B08", OutputFormat.COG),
        )

    a, b = asyncio.run(both())
    assert a == b and a.is_file()
    assert first.runs + second.runs == 1
    assert not list(a.parent.glob("*.part"))


# --- signed downloads ----------------------------------------------------------------


def _demo_href(client: TestClient, auth: dict[str, str]) -> str:
    body = resolve(client, auth, scene_id=DEMO_SCENE, bands="red").json()
    return body["assets"]["B04"]["href"]


def test_altered_urls_are_refused(client, auth):
    href = _demo_href(client, auth)
    parts = urlsplit(href)
    query = parse_qs(parts.query)
    expires, sig = query["expires"][0], query["sig"][0]
    other_path = parts.path.replace("/red.tif", "/nir.tif")
    flipped = ("A" if sig[0] != "A" else "B") + sig[1:]
    for url in (
        f"{parts.path}?expires={int(expires) + 3600}&sig={sig}",
        f"{parts.path}?expires={expires}&sig={flipped}",
        f"{other_path}?expires={expires}&sig={sig}",
        f"{parts.path}?expires={expires}",
        parts.path,
    ):
        response = client.get(url)
        assert response.status_code == 403, url
        assert response.json()["code"] == "INVALID_SIGNATURE"


def test_expired_urls_are_refused(client):
    signer = client.app.state.asset_resolver.url_signer
    path = "files/demo/earth-search/S2A_13TDE_20231008_0_L2A/red.tif"
    url = signer.sign_url("http://testserver/api/v1/", path, int(time.time()) - 5)
    response = client.get(url)
    assert response.status_code == 403
    assert response.json()["code"] == "SIGNATURE_EXPIRED"


def test_signed_paths_cannot_leave_the_storage_root(client, storage, tmp_path):
    signer = client.app.state.asset_resolver.url_signer
    (tmp_path / "secret.txt").write_text("secret")
    expires = int(time.time()) + 60
    for path in (
        "files/../secret.txt",
        "files/scenes/../../secret.txt",
        "cache/../../secret.txt",
        f"files/{tmp_path}/secret.txt",
        "files/.astra/signing-key",
        "other/x.tif",
    ):
        # Dots percent-encoded so the HTTP client sends them as they are.
        raw = path.replace("..", "%2E%2E")
        url = f"/api/v1/download/{raw}?expires={expires}&sig={signer.signature(path, expires)}"
        response = client.get(url)
        assert response.status_code == 404, path
        assert response.json()["code"] == "NOT_FOUND"
        assert "secret" not in response.text


def test_ranges_head_and_errors(client, auth):
    href = _demo_href(client, auth)
    whole = download(client, href).content
    partial = download(client, href, Range="bytes=100-299")
    assert partial.status_code == 206
    assert partial.headers["content-range"] == f"bytes 100-299/{len(whole)}"
    assert partial.headers["accept-ranges"] == "bytes"
    assert partial.content == whole[100:300]
    tail = download(client, href, Range="bytes=-16")
    assert tail.status_code == 206 and tail.content == whole[-16:]
    parts = urlsplit(href)
    head = client.head(f"{parts.path}?{parts.query}")
    assert head.status_code == 200 and head.content == b""
    assert int(head.headers["content-length"]) == len(whole)
    beyond = download(client, href, Range=f"bytes={len(whole) + 10}-")
    assert beyond.status_code == 416
    assert beyond.json()["code"] == "RANGE_NOT_SATISFIABLE"
    assert beyond.headers["content-range"] == f"bytes */{len(whole)}"
    malformed = download(client, href, Range="bytes=x-y")
    assert malformed.status_code == 400
    assert malformed.json()["code"] == "INVALID_PARAMETER"


def test_signed_url_ttl_is_configurable(dsn, storage, cache, auth):
    settings = asset_settings(
        storage, cache, signing=SigningSettings(signing_key=SIGNING_KEY, signed_url_ttl=120)
    )
    with app_client(dsn, settings) as client:
        body = resolve(client, auth, scene_id=DEMO_SCENE, bands="red").json()
    expires = int(parse_qs(urlsplit(body["assets"]["B04"]["href"]).query)["expires"][0])
    assert abs(expires - (time.time() + 120)) < 10
    stamp = datetime.fromtimestamp(expires, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert body["assets"]["B04"]["expires_at"] == stamp


# --- public http(s) and SAS-signed hrefs ---------------------------------------------


def test_public_https_hrefs_are_returned_as_they_are(auth, dsn, registry, storage, cache, tmp_path):
    from tests.asset_helpers import loopback_http

    served = tmp_path / "public"
    served.mkdir()
    cog = write_cog(served / "B04.tif")
    with loopback_http(served) as http:
        href = f"{http.url}/B04.tif"
        item = scene_item(
            "S2X_PUBLIC", {"red": band_asset(href, COG, "B04", "red", 10)}, "astra-test-uploads"
        )
        with app_client(dsn, asset_settings(storage, cache), [f"{http.url}/"]) as client:
            body = resolve(client, auth, scene_id=load_scene(dsn, registry, item)).json()
    red = body["assets"]["B04"]
    assert red["href"] == href
    assert red["astra:signed"] is False
    assert red["astra:routing"] == "direct"
    assert red["file:size"] == cog.stat().st_size  # asked with HEAD: the item had none


def test_blob_hrefs_get_sas_tokens_through_the_resolver(
    dsn, registry, storage, cache, auth, tmp_path
):
    from astra_stac.assets.settings import PlanetaryComputerSettings
    from tests.asset_helpers import loopback_http

    served = tmp_path / "blobs"
    (served / "sentinel2-l2").mkdir(parents=True)
    cog = write_cog(served / "sentinel2-l2" / "B04.tif")
    with loopback_http(served) as http:
        settings = asset_settings(
            storage,
            cache,
            planetary_computer=PlanetaryComputerSettings(
                sas_token_url=f"{http.url}/token", sas_hosts=["127.0.0.1"]
            ),
        )
        href = f"{http.url}/sentinel2-l2/B04.tif"
        item = scene_item(
            "S2X_BLOB", {"B04": band_asset(href, COG, "B04", "red", 10)}, "astra-test-uploads"
        )
        scene = load_scene(dsn, registry, item)
        with app_client(dsn, settings, [f"{http.url}/sentinel2-l2/"]) as client:
            first = resolve(client, auth, scene_id=scene).json()["assets"]["B04"]
            second = resolve(client, auth, scene_id=scene).json()["assets"]["B04"]
        got = httpx.get(first["href"])
    assert first["href"].startswith(f"{href}?st=2024&")
    assert first["astra:signed"] is True
    assert len(http.token_requests) == 1  # cached for the second resolve
    assert http.token_requests[0][0] == "/token/127/sentinel2-l2"
    assert second["href"] == first["href"]
    assert got.content == cog.read_bytes()
    assert first["file:size"] == cog.stat().st_size


# --- the live server: the spec's example, GDAL /vsicurl/ ------------------------------

SPEC_EXAMPLE = """
import requests
response = requests.get(
"https://astraos.cloud/api/v1/assets",
params={
"scene_id": "sentinel-2:S2B_MSIL2A_20250115T184929",
"bands": "red,nir",
"format": "cog",
},
headers={"Authorization": "Bearer astra_sk_live_your_key_here"},
)
assets = response.json()
for band_name, asset in assets["assets"].items():
    print(f"{band_name}: {asset['href']}")
# Download the red band COG
import urllib.request
red_url = assets["assets"]["B04"]["href"]
urllib.request.urlretrieve(red_url, "red_band.tif")
"""
LIVE_SCENE = "sentinel-2:S2A_MSIL2A_20220217T183431_N0510_R027_T13VEK_20240516T022440"


def _live_demo_file(live_server, band_key: str) -> Path:
    storage = Path(os.environ["ASTRA_STORAGE_ROOT"])
    original = LIVE_SCENE.split(":", 1)[1]
    return storage / "demo" / "sentinel-2" / original / f"{band_key}.tif"


def test_the_spec_python_example_runs_as_written(live_server, tmp_path, monkeypatch, capsys):
    code = (
        SPEC_EXAMPLE.replace("https://astraos.cloud/api/v1", live_server.url)
        .replace("astra_sk_live_your_key_here", live_server.key)
        .replace("sentinel-2:S2B_MSIL2A_20250115T184929", LIVE_SCENE)
    )
    monkeypatch.chdir(tmp_path)
    exec(compile(code, "assets_example.py", "exec"), {})
    printed = capsys.readouterr().out
    assert "B04: http://127.0.0.1:" in printed and "B08: " in printed
    with (
        rasterio.open(tmp_path / "red_band.tif") as red,
        rasterio.open(_live_demo_file(live_server, "B04_10m")) as src,
    ):
        assert red.crs == src.crs and red.transform == src.transform
        assert np.array_equal(red.read(1), src.read(1))
    assert (tmp_path / "red_band.tif").read_bytes() == _live_demo_file(
        live_server, "B04_10m"
    ).read_bytes()


def test_gdal_reads_a_window_through_vsicurl(live_server):
    body = httpx.get(
        f"{live_server.url}/assets",
        params={"scene_id": LIVE_SCENE, "bands": "nir"},
        headers={"Authorization": f"Bearer {live_server.key}"},
    ).json()
    href = body["assets"]["B08"]["href"]
    window = Window(64, 32, 100, 50)
    with (
        rasterio.Env(GDAL_DISABLE_READDIR_ON_OPEN="EMPTY_DIR"),
        rasterio.open(f"/vsicurl/{href}") as remote,
    ):
        got = remote.read(1, window=window)
        overview = remote.read(1, out_shape=(32, 32))
    with rasterio.open(_live_demo_file(live_server, "B08_10m")) as local:
        assert np.array_equal(got, local.read(1, window=window))
        assert overview.shape == (32, 32)
    ranged = httpx.get(href, headers={"Range": "bytes=0-1023"})
    assert ranged.status_code == 206 and len(ranged.content) == 1024


def test_live_download_rejects_tampering(live_server):
    body = httpx.get(
        f"{live_server.url}/assets",
        params={"scene_id": LIVE_SCENE, "bands": "red"},
        headers={"Authorization": f"Bearer {live_server.key}"},
    ).json()
    href = body["assets"]["B04"]["href"]
    response = httpx.get(href.replace("expires=", "expires=9"))
    assert response.status_code == 403
    assert response.json()["code"] == "INVALID_SIGNATURE"
