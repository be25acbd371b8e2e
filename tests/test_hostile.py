"""Hostile input on every kind of route: always a 4xx in the error shape, never a 500,
and the server answers normally afterwards."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from fastapi.testclient import TestClient

from tests.conftest import make_client

SCENE = "earth-search:S2A_13TDE_20231008_0_L2A"
COLLECTION = "es-sentinel-2-l2a"
MAX_BODY = 1_048_576


@pytest.fixture(scope="module")
def hostile(pg_server) -> Iterator[tuple[TestClient, dict[str, str]]]:
    """One app for the whole module (the cases only read)."""
    from astra_stac.auth import store
    from astra_stac.auth.keys import Scope
    from tests.conftest import DEMO_TEMPLATE, _fresh_database

    database = _fresh_database(pg_server, DEMO_TEMPLATE)
    dsn = next(database)
    key = store.create_key(dsn, "hostile", Scope.read)[0].secret
    with make_client(dsn) as client:
        yield client, {"Authorization": f"Bearer {key}"}
    next(database, None)


def assert_client_error(response: httpx.Response, *statuses: int) -> dict[str, Any]:
    where = f"{response.request.method} {str(response.request.url)[:200]}"
    assert 400 <= response.status_code < 500, (where, response.status_code, response.text[:500])
    if statuses:
        assert response.status_code in statuses, (where, response.status_code, response.text[:300])
    body = response.json()
    assert set(body) == {"code", "description"}, (where, body)
    assert "Traceback" not in body["description"]
    return dict(body)


def _polygon(ring: list[list[Any]]) -> dict[str, Any]:
    return {"type": "Polygon", "coordinates": [ring]}


BOWTIE = _polygon([[0, 0], [10, 10], [10, 0], [0, 10], [0, 0]])
UNCLOSED = _polygon([[0, 0], [10, 0], [10, 10], [0, 10]])
OUT_OF_RANGE = _polygon([[0, 0], [500, 0], [500, 100], [0, 100], [0, 0]])
TOO_FEW = _polygon([[0, 0], [1, 1], [0, 0]])
EMPTY = {"type": "Polygon", "coordinates": []}
NOT_A_TYPE = {"type": "Hexagon", "coordinates": [[0, 0]]}
NESTED = {"type": "Point", "coordinates": [[[[[[0]]]]]]}


@pytest.mark.parametrize(
    "params",
    [
        {"limit": "1000000000000000000000000"},
        {"limit": "-1"},
        {"limit": "0"},
        {"limit": "ten"},
        {"bbox": "-200,0,10,10"},
        {"bbox": "0,-95,10,10"},
        {"bbox": "10,10,0,0"},
        {"bbox": "1,2,3"},
        {"bbox": "1,2,3,4,5"},
        {"bbox": "a,b,c,d"},
        {"bbox": "nan,0,1,1"},
        {"bbox": "inf,0,1,1"},
        {"bbox": "0,0,1e400,1"},
        {"datetime": "2024-13-45T99:00:00Z"},
        {"datetime": "2024-02-01/2023-01-01"},
        {"intersects": json.dumps(UNCLOSED)},
        {"intersects": "{not json"},
        {"filter": "(" * 5000 + "id='x'" + ")" * 5000, "filter-lang": "cql2-text"},
        {"filter": " AND ".join(["id='x'"] * 2000), "filter-lang": "cql2-text"},
        {"filter": "id = 'x\x00y'", "filter-lang": "cql2-text"},
        {"filter": "eo:cloud_cover < 'a' +", "filter-lang": "cql2-text"},
        {"sortby": "+" * 5000},
        {"fields": "," * 5000},
        {"ids": "a\x00b"},
        {"collections": "\x00"},
        {"token": "next:" + "x" * 5000},
        {"token": "\x00"},
    ],
    ids=lambda p: next(iter(p.items()))[0] + "=" + next(iter(p.values()))[:24],
)
def test_get_search_rejects_or_bounds_hostile_parameters(hostile, params):
    client, auth = hostile
    response = client.get("/api/v1/search", params=params, headers=auth)
    if response.status_code == 200:
        # A huge limit is capped; an id or sort field that matches nothing finds nothing.
        features = response.json()["features"]
        assert len(features) <= 1000
        assert set(params) <= {"limit", "ids", "collections", "sortby", "fields"}, params
        return
    assert_client_error(response)


def _deep_and(depth: int) -> dict[str, Any]:
    node: dict[str, Any] = {"op": "=", "args": [{"property": "id"}, "x"]}
    for _ in range(depth):
        node = {"op": "and", "args": [node, {"op": "=", "args": [{"property": "id"}, "y"]}]}
    return node


@pytest.mark.parametrize(
    "body",
    [
        {"limit": 10**30},
        {"limit": -5},
        {"limit": "x"},
        {"bbox": [-200, 0, 10, 10]},
        {"bbox": [10, 10, 0, 0]},
        {"bbox": [1, 2, 3]},
        {"bbox": "1,2,3,4"},
        {"intersects": BOWTIE},
        {"intersects": UNCLOSED},
        {"intersects": OUT_OF_RANGE},
        {"intersects": TOO_FEW},
        {"intersects": EMPTY},
        {"intersects": NOT_A_TYPE},
        {"intersects": NESTED},
        {"intersects": BOWTIE, "bbox": [0, 0, 1, 1]},
        {"filter": _deep_and(200), "filter-lang": "cql2-json"},
        {
            "filter": {
                "op": "and",
                "args": [{"op": "=", "args": [{"property": "id"}, "x"]}] * 20000,
            },
            "filter-lang": "cql2-json",
        },
        {"filter": {"op": "s_intersects", "args": [{"property": "geometry"}, BOWTIE]}},
        {"filter": {"op": "no-such-op", "args": []}},
        {"filter": {"op": "=", "args": [{"property": "id"}]}},
        {"filter": "x" * 1_000_000, "filter-lang": "cql2-text"},
        {"filter": "(" * 5000 + "id='x'" + ")" * 5000, "filter-lang": "cql2-text"},
        {"filter": "NOT " * 5000 + "id='x'", "filter-lang": "cql2-text"},
        {"ids": ["a\x00b"]},
        {"ids": "not-a-list"},
        {"collections": [{"nested": True}]},
        {"sortby": [{"field": "id", "direction": "sideways"}]},
        {"query": {"eo:cloud_cover": {"regex": ".*"}}},
        {"fields": {"include": 5}},
        ["not", "an", "object"],
        "a string",
        None,
    ],
    ids=lambda b: ",".join(b) if isinstance(b, dict) else type(b).__name__,
)
def test_post_search_rejects_hostile_bodies(hostile, body):
    client, auth = hostile
    response = client.post("/api/v1/search", json=body, headers=auth)
    if response.status_code == 200:
        # An invalid geometry PostGIS can still use, or a capped limit; never past a page.
        assert len(response.json()["features"]) <= 1000
        assert "intersects" in json.dumps(body) or body == {"limit": 10**30}, body
        return
    assert_client_error(response)


@pytest.mark.parametrize(
    "raw",
    [
        b'{"intersects": {"type": "Point", "coordinates": [NaN, 0]}}',
        b'{"intersects": {"type": "Point", "coordinates": [Infinity, 0]}}',
        b'{"bbox": [NaN, 0, 1, 1]}',
        b'{"limit": 1e400}',
        b"{" * 100_000,
        b'{"ids": ["\\u0000"]}',
        b"\xff\xfe not utf-8",
        b'{"filter": '
        + b'{"op":"and","args":[{"op":"=","args":[{"property":"id"},"y"]},' * 5000
        + b"true"
        + b"]}" * 5000
        + b"}",
        b'{"filter-lang": "cql2-json", "filter": '
        + b'{"op":"not","args":[' * 2000
        + b"true"
        + b"]}" * 2000
        + b"}",
    ],
    ids=lambda r: r[:30].decode("utf-8", "replace"),
)
def test_raw_bodies_never_500(hostile, raw):
    client, auth = hostile
    response = client.post(
        "/api/v1/search",
        content=raw,
        headers={**auth, "Content-Type": "application/json"},
    )
    assert_client_error(response)


def test_bodies_over_the_limit_get_413_before_they_are_read(hostile):
    client, auth = hostile
    body = json.dumps({"ids": ["x" * 100] * 100_000}).encode()  # ~10 MB
    assert len(body) > 10_000_000
    response = client.post(
        "/api/v1/search", content=body, headers={**auth, "Content-Type": "application/json"}
    )
    assert assert_client_error(response, 413)["code"] == "PAYLOAD_TOO_LARGE"
    # Without a Content-Length (chunked), counted as it arrives.
    chunks = (b" " * 65536 for _ in range(40))
    response = client.post(
        "/api/v1/search", content=chunks, headers={**auth, "Content-Type": "application/json"}
    )
    assert assert_client_error(response, 413)["code"] == "PAYLOAD_TOO_LARGE"
    # Just under the limit is an ordinary (valid) request.
    padded = json.dumps({"limit": 1, "pad": " " * (MAX_BODY - 100)})
    assert client.post("/api/v1/search", content=padded, headers=auth).status_code == 200


def test_the_body_limit_is_a_setting(dsn, auth):
    with make_client(dsn, max_body_bytes=2048) as client:
        small = client.post("/api/v1/search", json={"limit": 1}, headers=auth)
        big = client.post("/api/v1/search", json={"ids": ["x" * 3000]}, headers=auth)
    assert small.status_code == 200
    assert assert_client_error(big, 413)["code"] == "PAYLOAD_TOO_LARGE"


HOSTILE_IDS = [
    "earth-search:S2A\x00",
    "earth-search:%00",
    "earth-search:\u202e\u0000\ufeff",
    "earth-search:S2A_😀_日本",
    "earth-search:" + "A" * 20_000,
    "earth-search:../../etc/passwd",
    "earth-search:..%2F..%2Fetc%2Fpasswd",
    "no-colon-at-all",
    ":",
    "earth-search:",
    ":S2A",
    "unknown-provider:S2A",
    "\x00:\x00",
    "earth-search:S2A' OR '1'='1",
]


def _quote(value: str) -> str:
    return quote(value, safe=":")


@pytest.mark.parametrize("scene_id", HOSTILE_IDS, ids=lambda s: repr(s)[:30])
def test_hostile_ids_on_every_route(hostile, scene_id):
    client, auth = hostile
    quoted = _quote(scene_id)
    responses = [
        client.get(f"/api/v1/scenes/{quoted}", headers=auth),
        client.get("/api/v1/assets", params={"scene_id": scene_id}, headers=auth),
        client.get(f"/api/v1/scenes/{quoted}/info", headers=auth),
        client.get(f"/api/v1/scenes/{quoted}/tiles/WebMercatorQuad/1/0/0.png", headers=auth),
        client.get(f"/api/v1/scenes/{quoted}/tilejson.json", headers=auth),
        client.get(f"/api/v1/collections/{COLLECTION}/items/{quoted}", headers=auth),
        client.get(f"/api/v1/collections/{quoted}", headers=auth),
        client.get(f"/api/v1/collections/{quoted}/items", headers=auth),
        client.get("/api/v1/search", params={"ids": scene_id}, headers=auth),
    ]
    for response in responses:
        if response.status_code == 200:  # a search for an id that is not there
            assert response.json()["features"] == []
        else:
            assert_client_error(response)


@pytest.mark.parametrize(
    "path",
    [
        "/api/v1/download/files/..%2F..%2F..%2Fetc%2Fpasswd",
        "/api/v1/download/files/%2E%2E/%2E%2E/etc/passwd?expires=9999999999&sig=x",
        "/api/v1/download/files/%00?expires=1&sig=%00",
        "/api/v1/download/cache/..%5C..%5Cetc%5Cpasswd?expires=99999999999&sig=a",
        "/api/v1/download/%2Fetc%2Fpasswd?expires=1&sig=a",
        "/api/v1/download/files/x.tif?expires=" + "9" * 5000 + "&sig=a",
        "/api/v1/download/files/%F0%9F%98%80.tif?expires=-1&sig=",
    ],
)
def test_download_route_refuses_traversal(hostile, path):
    client, _ = hostile
    response = client.get(path)
    body = assert_client_error(response, 403, 404)
    assert "root:" not in response.text and body["code"] in {"INVALID_SIGNATURE", "NOT_FOUND"}


@pytest.mark.parametrize(
    "params",
    [
        {"bands": "\x00"},
        {"expression": "(" * 2000 + "B04" + ")" * 2000},
        {"expression": "__import__('os').system('id')"},
        {"expression": "B04.__class__"},
        {"colormap_name": "\x00"},
        {"colormap": "{" * 10000},
        {"nodata": "nan-ish"},
        {"max_size": "99999999"},
        {"width": "-5", "height": "0"},
        {"resampling": "../../etc"},
    ],
    ids=lambda p: next(iter(p.items()))[0],
)
def test_tiler_refuses_hostile_parameters(hostile, params):
    client, auth = hostile
    response = client.get(f"/api/v1/scenes/{SCENE}/preview.png", params=params, headers=auth)
    assert_client_error(response)


@pytest.mark.parametrize(
    "params",
    [{"bands": "B04," * 5000}, {"expression": "B04 ** 99999999999"}, {"rescale": "nan,nan"}],
    ids=lambda p: next(iter(p.items()))[0],
)
def test_tiler_renders_odd_but_harmless_parameters(hostile, params):
    client, auth = hostile
    response = client.get(f"/api/v1/scenes/{SCENE}/preview.png", params=params, headers=auth)
    assert response.status_code == 200, response.text[:300]
    assert response.headers["content-type"] == "image/png"


def test_server_is_healthy_after_all_that(hostile):
    client, auth = hostile
    assert client.get("/api/v1/_mgmt/health").status_code == 200
    assert client.get(f"/api/v1/scenes/{SCENE}", headers=auth).json()["id"] == SCENE
    found = client.post("/api/v1/search", json={"ids": [SCENE]}, headers=auth).json()
    assert [f["id"] for f in found["features"]] == [SCENE]


def test_deep_filters_on_the_items_route(hostile):
    client, auth = hostile
    deep = "(" * 5000 + "id='x'" + ")" * 5000
    response = client.get(
        f"/api/v1/collections/{COLLECTION}/items", params={"filter": deep}, headers=auth
    )
    assert "levels of nesting" in assert_client_error(response, 400)["description"]


@pytest.mark.parametrize("media_type", [None, "text/plain", "application/x-www-form-urlencoded"])
def test_bodies_without_a_json_media_type(hostile, media_type):
    client, auth = hostile
    headers = {**auth} if media_type is None else {**auth, "Content-Type": media_type}
    response = client.post("/api/v1/search", content=b'{"limit": 1}', headers=headers)
    if media_type is None:  # a body with no media type is read as JSON
        assert response.status_code == 200, response.text
        assert len(response.json()["features"]) == 1
    else:
        assert response.status_code == 415
        assert response.json()["code"] == "UNSUPPORTED_MEDIA_TYPE"
        assert "Content-Type: application/json" in response.json()["description"]
