"""The scene tiler: titiler reading only what the catalogue resolves for a scene id."""

from __future__ import annotations

import asyncio
import time
from urllib.parse import parse_qs, urlencode, urlsplit, urlunsplit

import httpx
import morecantile
import numpy as np
import pytest
import rasterio
from rasterio.io import MemoryFile

from astra_stac.assets.settings import S3BucketSettings, S3Settings
from astra_stac.auth import store
from astra_stac.auth.keys import Scope
from astra_stac.errors import AssetNotAllowed
from astra_stac.providers import load_registry
from astra_stac.tiler.reader import BandReader
from astra_stac.tiler.sources import gdal_source

pytestmark = [
    # Decoding a PNG: it has no georeferencing, as expected.
    pytest.mark.filterwarnings("ignore::rasterio.errors.NotGeoreferencedWarning"),
    # rio-tiler on `raster:bands` without statistics (the demo items have none).
    pytest.mark.filterwarnings("ignore:Some statistics data in STAC are invalid"),
]
SCENE = "earth-search:S2A_13TDE_20231008_0_L2A"
BASE = f"/api/v1/scenes/{SCENE}"
# Inside the scene's footprint (bbox -106.18,39.66,-104.88,40.65).
LON, LAT = -105.5, 40.15
ZOOM = 9
WEB_MERCATOR = morecantile.tms.get("WebMercatorQuad")
INSIDE = WEB_MERCATOR.tile(LON, LAT, ZOOM)
OUTSIDE = WEB_MERCATOR.tile(10.0, 10.0, ZOOM)


def tile_path(tile: morecantile.Tile, suffix: str = ".png") -> str:
    return f"{BASE}/tiles/WebMercatorQuad/{tile.z}/{tile.x}/{tile.y}{suffix}"


def decode(content: bytes) -> np.ndarray:
    with MemoryFile(content) as memfile, memfile.open() as dataset:
        return dataset.read()


def assert_error(response: httpx.Response, status: int, code: str | None = None) -> dict:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"code", "description"}, body
    if code is not None:
        assert body["code"] == code, body
    return body


def test_tile_inside_the_footprint_is_a_256_png(client, auth):
    response = client.get(
        tile_path(INSIDE), params={"bands": "red,green,blue", "rescale": "0,10000"}, headers=auth
    )
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "image/png"
    assert response.content.startswith(b"\x89PNG")
    pixels = decode(response.content)
    assert pixels.shape[1:] == (256, 256)
    assert pixels.shape[0] in (3, 4)  # RGB, plus alpha for the mask
    assert pixels[:3].max() > 0
    # Native names and repeated parameters read the same bands.
    native = client.get(
        tile_path(INSIDE),
        params=[("bands", "B04"), ("bands", "B03"), ("bands", "B02"), ("rescale", "0,10000")],
        headers=auth,
    )
    assert native.status_code == 200
    assert native.content == response.content


def test_tile_outside_the_footprint_is_404_in_the_error_shape(client, auth):
    response = client.get(tile_path(OUTSIDE), params={"bands": "red"}, headers=auth)
    assert_error(response, 404, "TILE_OUTSIDE_BOUNDS")


def test_unknown_scene_band_or_expression(client, auth):
    missing = client.get(
        tile_path(INSIDE).replace(SCENE, "earth-search:NOPE"), params={"bands": "red"}, headers=auth
    )
    assert_error(missing, 404, "SCENE_NOT_FOUND")
    malformed = client.get("/api/v1/scenes/no-colon/info", headers=auth)
    assert_error(malformed, 400, "INVALID_ID_FORMAT")
    unknown = client.get(tile_path(INSIDE), params={"bands": "red,ultraviolet"}, headers=auth)
    assert "ultraviolet" in assert_error(unknown, 400, "UNKNOWN_BAND")["description"]
    unknown_in_expression = client.get(
        f"{BASE}/statistics", params={"expression": "(nir-uv)/(nir+uv)"}, headers=auth
    )
    assert_error(unknown_in_expression, 400, "UNKNOWN_BAND")
    bad_expression = client.get(
        f"{BASE}/statistics", params={"expression": "__import__('os')"}, headers=auth
    )
    assert_error(bad_expression, 400, "INVALID_EXPRESSION")
    both = client.get(
        f"{BASE}/statistics", params={"expression": "nir/red", "bands": "red"}, headers=auth
    )
    assert_error(both, 400, "INVALID_PARAMETER")
    too_big = client.get(
        f"{BASE}/preview.png", params={"bands": "red", "max_size": 100000}, headers=auth
    )
    assert_error(too_big, 400, "IMAGE_TOO_LARGE")


def test_preview_in_true_colour(client, auth):
    response = client.get(
        f"{BASE}/preview.png",
        params={"bands": "red,green,blue", "rescale": "0,10000", "max_size": 128},
        headers=auth,
    )
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "image/png"
    pixels = decode(response.content)
    assert pixels.shape[0] in (3, 4)
    assert max(pixels.shape[1:]) == 128
    jpeg = client.get(
        f"{BASE}/preview.jpeg",
        params={"bands": "red,green,blue", "rescale": "0,10000"},
        headers=auth,
    )
    assert jpeg.status_code == 200
    assert jpeg.headers["content-type"] == "image/jpeg"


def test_bbox_image(client, auth):
    response = client.get(
        f"{BASE}/bbox/-105.7,40.0,-105.3,40.3/64x64.png",
        params={"bands": "nir", "rescale": "0,10000"},
        headers=auth,
    )
    assert response.status_code == 200, response.text
    assert decode(response.content).shape[1:] == (64, 64)


def test_ndvi_statistics_from_common_names(client, auth):
    response = client.get(
        f"{BASE}/statistics", params={"expression": "(nir-red)/(nir+red)"}, headers=auth
    )
    assert response.status_code == 200, response.text
    stats = response.json()
    assert len(stats) == 1
    (band,) = stats.values()
    assert -1.0 <= band["min"] <= band["mean"] <= band["max"] <= 1.0
    assert band["count"] > 0
    # Native names give the same numbers.
    native = client.get(
        f"{BASE}/statistics", params={"expression": "(B08-B04)/(B08+B04)"}, headers=auth
    )
    assert next(iter(native.json().values()))["mean"] == pytest.approx(band["mean"])


def test_expressions_keep_functions_and_numbers(client, auth):
    response = client.get(
        f"{BASE}/point/{LON},{LAT}",
        params={"expression": "where(nir > red, 1e0, 0);B04 * 2"},
        headers=auth,
    )
    assert response.status_code == 200, response.text
    red = client.get(f"{BASE}/point/{LON},{LAT}", params={"bands": "red"}, headers=auth)
    flag, doubled = response.json()["values"]
    assert flag in (0, 1)
    assert doubled == 2 * red.json()["values"][0]


def test_key_restrictions_apply_to_tiles(client, auth, dsn):
    # A key that may see everything warms the scene cache first...
    assert client.get(f"{BASE}/info", params={"bands": "red"}, headers=auth).status_code == 200
    # ...which must not leak the scene to a key restricted to another provider.
    secret = store.create_key(dsn, "landsat-only", Scope.read, providers=["landsat"])[0].secret
    restricted = {"Authorization": f"Bearer {secret}"}
    response = client.get(tile_path(INSIDE), params={"bands": "red"}, headers=restricted)
    assert_error(response, 404, "SCENE_NOT_FOUND")
    tilejson = client.get(f"{BASE}/WebMercatorQuad/tilejson.json", headers=restricted)
    assert_error(tilejson, 404, "SCENE_NOT_FOUND")


def test_point_value(client, auth):
    response = client.get(f"{BASE}/point/{LON},{LAT}", params={"bands": "red,nir"}, headers=auth)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["coordinates"] == [LON, LAT]
    assert len(body["values"]) == 2
    assert all(0 < value <= 10000 for value in body["values"])
    ndvi = client.get(
        f"{BASE}/point/{LON},{LAT}", params={"expression": "(nir-red)/(nir+red)"}, headers=auth
    )
    red, nir = body["values"]
    assert ndvi.json()["values"][0] == pytest.approx((nir - red) / (nir + red))
    outside = client.get(f"{BASE}/point/10,10", params={"bands": "red"}, headers=auth)
    assert_error(outside, 404, "POINT_OUTSIDE_BOUNDS")


def test_info_lists_the_band_assets(client, auth):
    response = client.get(f"{BASE}/info", params={"bands": "red,nir"}, headers=auth)
    assert response.status_code == 200, response.text
    info = response.json()
    assert set(info) == {"red", "nir"}
    assert info["red"]["width"] == 256 and info["red"]["dtype"] == "uint16"
    every = client.get(f"{BASE}/info", headers=auth).json()
    assert {"red", "green", "blue", "nir", "swir16"} <= set(every)
    assert "visual" not in every  # not a single band


def test_tilejson_tiles_are_signed(client, auth):
    response = client.get(
        f"{BASE}/WebMercatorQuad/tilejson.json",
        params={"bands": "red,green,blue", "rescale": "0,10000", "tile_format": "png"},
        headers=auth,
    )
    assert response.status_code == 200, response.text
    tilejson = response.json()
    assert tilejson["bounds"][0] < LON < tilejson["bounds"][2]
    (template,) = tilejson["tiles"]
    query = parse_qs(urlsplit(template).query)
    assert {"expires", "sig"} <= set(query)
    assert int(query["expires"][0]) > time.time() + 3000
    assert query["bands"] == ["red,green,blue"]
    assert "astra_sk" not in template


def _live_tilejson(live_server) -> str:
    response = httpx.get(
        f"{live_server.url}/scenes/{SCENE}/WebMercatorQuad/tilejson.json",
        params={
            "bands": "red,green,blue",
            "rescale": "0,10000",
            "tile_format": "png",
            "tilesize": 256,
        },
        headers={"Authorization": f"Bearer {live_server.key}"},
    )
    assert response.status_code == 200, response.text
    return response.json()["tiles"][0]


def _with_query(url: str, **changes: str) -> str:
    parts = urlsplit(url)
    query = {k: v[0] for k, v in parse_qs(parts.query).items()}
    query.update(changes)
    return urlunsplit(parts._replace(query=urlencode(query)))


def test_signed_tile_urls_through_a_real_server(live_server):
    template = _live_tilejson(live_server)
    url = template.format(z=INSIDE.z, x=INSIDE.x, y=INSIDE.y)
    tile = httpx.get(url)  # no Authorization header
    assert tile.status_code == 200, tile.text
    assert decode(tile.content).shape[1:] == (256, 256)
    # The signature opens other renderings and images of the same scene...
    assert httpx.get(_with_query(url, bands="nir")).status_code == 200
    preview = url.split("/tiles/")[0] + "/preview.png?" + urlsplit(url).query
    assert httpx.get(preview).status_code == 200
    # ...but not its JSON routes, another scene, or anything once altered or expired.
    info = url.split("/tiles/")[0] + "/info?" + urlsplit(url).query
    assert_error(httpx.get(info), 401, "UNAUTHORIZED")
    other = url.replace(SCENE, "earth-search:S2B_T13TDE_20240331T175111_L2A")
    assert_error(httpx.get(other), 403, "INVALID_SIGNATURE")
    sig = parse_qs(urlsplit(url).query)["sig"][0]
    tampered = _with_query(url, sig=("A" if sig[0] != "A" else "B") + sig[1:])
    assert_error(httpx.get(tampered), 403, "INVALID_SIGNATURE")
    later = _with_query(url, expires=str(int(parse_qs(urlsplit(url).query)["expires"][0]) + 60))
    assert_error(httpx.get(later), 403, "INVALID_SIGNATURE")
    assert_error(httpx.get(_with_query(url, expires="abc")), 403, "INVALID_SIGNATURE")


def test_expired_tile_urls_are_refused(client, auth):
    app = client.app
    signing = app.state.tile_signing
    signer = app.state.asset_resolver.url_signer
    expired = int(time.time()) - 10
    url = signing.sign_url(
        signer, f"http://testserver{tile_path(INSIDE)}?bands=red", SCENE, expired
    )
    body = assert_error(client.get(url), 403, "SIGNATURE_EXPIRED")
    assert "expired" in body["description"]
    fresh = signing.sign_url(signer, url, SCENE, int(time.time()) + 60)
    assert client.get(fresh).status_code == 200


def test_tiler_routes_need_a_key(client):
    for path in (tile_path(INSIDE), f"{BASE}/info", f"{BASE}/WebMercatorQuad/tilejson.json"):
        response = client.get(path, params={"bands": "red"})
        assert_error(response, 401, "UNAUTHORIZED")
        assert response.headers["www-authenticate"] == "Bearer"
    post = client.post(f"{BASE}/statistics", json={"type": "Feature"})
    assert_error(post, 401, "UNAUTHORIZED")


def test_tiler_routes_document_their_errors(client):
    paths = client.app.openapi()["paths"]
    scene_routes = [p for p in paths if p.startswith("/api/v1/scenes/{scene_id}/")]
    assert len(scene_routes) > 10
    for path in scene_routes:
        for operation in paths[path].values():
            for status in ("400", "401", "403", "404", "422", "502", "503"):
                schema = operation["responses"][status]["content"]["application/json"]["schema"]
                assert schema == {"$ref": "#/components/schemas/Error"}, (path, status)
            assert "ASSET_UNAVAILABLE" in operation["responses"]["502"]["description"]


def test_read_keys_may_post_statistics_for_a_feature(client, auth):
    feature = {
        "type": "Feature",
        "properties": {},
        "geometry": {
            "type": "Polygon",
            "coordinates": [
                [[-105.7, 40.0], [-105.3, 40.0], [-105.3, 40.3], [-105.7, 40.3], [-105.7, 40.0]]
            ],
        },
    }
    response = client.post(
        f"{BASE}/statistics", params={"bands": "red"}, json=feature, headers=auth
    )
    assert response.status_code == 200, response.text
    assert response.json()["properties"]["statistics"]


def test_no_route_takes_a_url(client, auth):
    schema = client.get("/api/v1/api").json()
    tiler_paths = [p for p in schema["paths"] if p.startswith("/api/v1/scenes/{scene_id}/")]
    assert len(tiler_paths) >= 10
    for path in tiler_paths:
        for operation in schema["paths"][path].values():
            names = {p["name"] for p in operation.get("parameters", [])}
            assert "url" not in names, path
            assert "scene_id" in names, path
    # An injected url= is ignored: the scene's own files are read.
    plain = client.get(f"{BASE}/info", params={"bands": "red"}, headers=auth)
    injected = client.get(
        f"{BASE}/info", params={"url": "/etc/passwd", "bands": "red"}, headers=auth
    )
    assert injected.status_code == 200
    assert injected.json() == plain.json()


def test_hrefs_map_to_gdal_paths(tmp_path):
    s3 = S3Settings(
        buckets={"eodata": S3BucketSettings(endpoint_url="http://127.0.0.1:9000")},
        access_key_id="id",
        secret_access_key="secret",
    )

    providers = load_registry().providers

    def source(href: str, provider: str = "sentinel-2"):
        return asyncio.run(gdal_source(href, tmp_path, s3, [], providers[provider]))

    inside = tmp_path / "b04.tif"
    inside.write_bytes(b"")
    local = source(inside.as_uri())
    assert (local.path, local.local) == (str(inside), True)
    remote = source("s3://eodata/Sentinel-2/B04.jp2")
    assert remote.path == "/vsis3/eodata/Sentinel-2/B04.jp2"
    assert remote.env["AWS_S3_ENDPOINT"] == "127.0.0.1:9000"
    assert remote.env["AWS_HTTPS"] == "NO" and remote.env["AWS_VIRTUAL_HOSTING"] == "FALSE"
    https = "https://sentinel-cogs.s3.us-west-2.amazonaws.com/x/B04.tif"
    assert source(https, "earth-search").path == https
    for refused in ("file:///etc/passwd", "/vsicurl/http://x/y.tif", "<VRTDataset/>", "ftp://x/y"):
        with pytest.raises(AssetNotAllowed):
            source(refused)
    with pytest.raises(AssetNotAllowed):
        source(https)  # an earth-search host, not a CDSE one


def test_band_files_open_with_raster_drivers_only(tmp_path):
    vrt = tmp_path / "looks-like.tif"
    vrt.write_text(
        '<VRTDataset rasterXSize="1" rasterYSize="1"><VRTRasterBand dataType="Byte" band="1">'
        "<SimpleSource><SourceFilename>/etc/hostname</SourceFilename></SimpleSource>"
        "</VRTRasterBand></VRTDataset>"
    )
    with rasterio.Env(), pytest.raises(AssetNotAllowed):
        BandReader(str(vrt))
