"""Provider-scoped ids through every STAC route: search (GET/POST), CQL2, paging, items."""

from __future__ import annotations

import json
from datetime import datetime

import pytest

ES_LANDSAT = "earth-search:LC08_L2SP_033032_20231008_02_T1"
PC_LANDSAT = "planetary-computer:LC09_L2SP_089084_20240807_02_T1"
USGS_LANDSAT = "landsat:LC09_L2SP_092068_20230607_20230609_02_T1_SR"
ALL_DEMO = 7


def _ids(response):
    assert response.status_code == 200, response.text
    return [feature["id"] for feature in response.json()["features"]]


def test_every_searched_item_is_scoped(client, auth):
    features = client.get("/api/v1/search", params={"limit": 100}, headers=auth).json()["features"]
    assert len(features) == ALL_DEMO
    for feature in features:
        provider, _, original = feature["id"].partition(":")
        assert provider in {"earth-search", "planetary-computer", "landsat", "sentinel-2"}
        assert original
        assert feature["properties"]["astra:collection"] == feature["collection"]
        assert feature["properties"]["astra:provider"]
        rels = {link["rel"] for link in feature["links"]}
        assert {"self", "parent", "collection", "root"} <= rels


def test_ids_from_different_providers_get_and_post(client, auth):
    wanted = {ES_LANDSAT, PC_LANDSAT, USGS_LANDSAT}
    got = _ids(client.get("/api/v1/search", params={"ids": ",".join(wanted)}, headers=auth))
    assert set(got) == wanted
    got = _ids(client.post("/api/v1/search", json={"ids": sorted(wanted)}, headers=auth))
    assert set(got) == wanted


def test_scoped_id_does_not_match_another_providers_item(client, auth):
    # the same original id exists nowhere else, and a wrong prefix must not find it
    wrong = "planetary-computer:LC08_L2SP_033032_20231008_02_T1"
    assert _ids(client.get("/api/v1/search", params={"ids": wrong}, headers=auth)) == []


def test_cql2_on_scoped_id_text_and_json(client, auth):
    text = client.get("/api/v1/search", params={"filter": f"id = '{ES_LANDSAT}'"}, headers=auth)
    assert _ids(text) == [ES_LANDSAT]
    body = {
        "filter-lang": "cql2-json",
        "filter": {"op": "in", "args": [{"property": "id"}, [ES_LANDSAT, PC_LANDSAT]]},
    }
    assert set(_ids(client.post("/api/v1/search", json=body, headers=auth))) == {
        ES_LANDSAT,
        PC_LANDSAT,
    }


def test_filter_on_astra_provider(client, auth):
    response = client.get(
        "/api/v1/search", params={"filter": "\"astra:provider\" = 'microsoft'"}, headers=auth
    )
    ids = _ids(response)
    assert ids and all(i.startswith("planetary-computer:") for i in ids)


@pytest.mark.parametrize("method", ["GET", "POST"])
def test_paging_follows_next_links_across_pages(client, auth, method):
    seen: list[str] = []
    if method == "GET":
        response = client.get("/api/v1/search", params={"limit": 2}, headers=auth)
    else:
        response = client.post("/api/v1/search", json={"limit": 2}, headers=auth)
    while True:
        seen += _ids(response)
        nxt = next((lnk for lnk in response.json()["links"] if lnk["rel"] == "next"), None)
        if nxt is None:
            break
        path = nxt["href"].removeprefix("http://testserver")
        if nxt.get("method", "GET") == "POST":
            response = client.post(path, json=nxt["body"], headers=auth)
        else:
            response = client.get(path, headers=auth)
    assert len(seen) == ALL_DEMO == len(set(seen))


def test_paging_with_scoped_ids_keeps_the_scope(client, auth):
    wanted = [ES_LANDSAT, PC_LANDSAT, USGS_LANDSAT]
    first = client.get("/api/v1/search", params={"ids": ",".join(wanted), "limit": 2}, headers=auth)
    nxt = next(lnk for lnk in first.json()["links"] if lnk["rel"] == "next")
    second = client.get(nxt["href"].removeprefix("http://testserver"), headers=auth)
    assert set(_ids(first) + _ids(second)) == set(wanted)


def test_limit_above_maximum_is_capped(dsn, auth):
    from tests.conftest import make_client

    with make_client(dsn, max_page_size=3, default_page_size=3) as client:
        response = client.get("/api/v1/search", params={"limit": 1000000}, headers=auth)
        assert len(_ids(response)) == 3


def test_fields_responses_are_geojson_and_scoped(client, auth):
    response = client.get(
        "/api/v1/search", params={"fields": "properties.datetime", "limit": 2}, headers=auth
    )
    assert response.headers["content-type"] == "application/geo+json"
    for feature in response.json()["features"]:
        assert ":" in feature["id"]


def test_item_route_accepts_scoped_and_original_ids(client, auth):
    scoped = client.get(f"/api/v1/collections/es-landsat-c2-l2/items/{ES_LANDSAT}", headers=auth)
    original = client.get(
        "/api/v1/collections/es-landsat-c2-l2/items/LC08_L2SP_033032_20231008_02_T1", headers=auth
    )
    assert scoped.status_code == original.status_code == 200
    assert scoped.json()["id"] == original.json()["id"] == ES_LANDSAT
    self_href = next(lnk["href"] for lnk in scoped.json()["links"] if lnk["rel"] == "self")
    assert client.get(self_href.removeprefix("http://testserver"), headers=auth).status_code == 200


def test_item_route_rejects_a_prefix_of_another_provider(client, auth):
    response = client.get(
        "/api/v1/collections/es-landsat-c2-l2/items/planetary-computer:LC08_L2SP_033032_20231008_02_T1",
        headers=auth,
    )
    assert response.status_code == 404
    assert response.json()["code"] == "NOT_FOUND"


def test_item_collection_route_is_scoped(client, auth):
    ids = _ids(client.get("/api/v1/collections/pc-landsat-c2-l2/items", headers=auth))
    assert ids == [PC_LANDSAT]


def test_same_upstream_collection_from_two_providers_stays_apart(client, auth):
    ids = [c["id"] for c in client.get("/api/v1/collections", headers=auth).json()["collections"]]
    assert {"es-sentinel-2-l2a", "pc-sentinel-2-l2a", "cdse-sentinel-2-l2a"} <= set(ids)


@pytest.mark.parametrize(
    ("params", "code"),
    [
        ({"bbox": "1,2"}, "INVALID_PARAMETER"),
        ({"bbox": "a,b,c,d"}, "INVALID_PARAMETER"),
        ({"datetime": "not-a-date"}, "INVALID_PARAMETER"),
        ({"filter": "id = = 'x"}, "INVALID_PARAMETER"),
        ({"filter": '{"op": "="', "filter-lang": "cql2-json"}, "INVALID_PARAMETER"),
        ({"limit": "-5"}, "INVALID_PARAMETER"),
        ({"limit": "ten"}, "INVALID_PARAMETER"),
        ({"ids": "bad:id:here"}, "INVALID_ID_FORMAT"),
        ({"sortby": "+datetime", "query": "{not json"}, "INVALID_PARAMETER"),
        ({"intersects": '{"type": "Polygon"}'}, "INVALID_PARAMETER"),
    ],
)
def test_bad_search_input_is_a_400_in_the_error_shape(client, auth, params, code):
    response = client.get("/api/v1/search", params=params, headers=auth)
    assert response.status_code == 400, response.text
    assert response.json()["code"] == code
    assert set(response.json()) == {"code", "description"}


@pytest.mark.parametrize(
    "body",
    [
        {"bbox": [1, 2]},
        {"limit": 0},
        {"ids": "not-a-list-of-ids:x:y"},
        {"filter": {"op": "nonsense", "args": []}},
        {"datetime": "2020-13-45"},
        {"intersects": {"type": "Point", "coordinates": "x"}},
    ],
)
def test_bad_post_search_bodies_are_400(client, auth, body):
    response = client.post("/api/v1/search", json=body, headers=auth)
    assert response.status_code == 400, response.text
    assert set(response.json()) == {"code", "description"}


def test_malformed_json_body_is_400(client, auth):
    response = client.post(
        "/api/v1/search",
        content=b"{not json",
        headers={**auth, "content-type": "application/json"},
    )
    assert response.status_code == 400
    assert response.json()["code"] == "INVALID_PARAMETER"


def test_unknown_collection_is_404(client, auth):
    response = client.get("/api/v1/collections/nope", headers=auth)
    assert response.status_code == 404
    assert response.json()["code"] == "NOT_FOUND"
    response = client.get("/api/v1/collections/nope/items/earth-search:X", headers=auth)
    assert response.status_code == 404


# --- unified search (issue 3, item 8) ---------------------------------------------------------

S2_COPERNICUS = "sentinel-2:S2A_MSIL2A_20220217T183431_N0510_R027_T13VEK_20240516T022440"
PROVIDER_OF_PREFIX = {
    "earth-search": "element84",
    "planetary-computer": "microsoft",
    "landsat": "usgs",
    "sentinel-2": "copernicus",
}
UNIFIED_QUERYABLES = {
    "astra:provider",
    "astra:collection",
    "eo:cloud_cover",
    "platform",
    "constellation",
    "gsd",
}


def test_search_without_collections_spans_every_provider(client, auth):
    features = client.get("/api/v1/search", params={"limit": 100}, headers=auth).json()["features"]
    prefixes = {feature["id"].partition(":")[0] for feature in features}
    assert prefixes == set(PROVIDER_OF_PREFIX)
    for feature in features:
        prefix = feature["id"].partition(":")[0]
        assert feature["properties"]["astra:provider"] == PROVIDER_OF_PREFIX[prefix]


def test_queryables_list_the_unified_fields(client, auth):
    response = client.get("/api/v1/queryables", headers=auth)
    assert response.status_code == 200, response.text
    properties = response.json()["properties"]
    assert set(properties) >= UNIFIED_QUERYABLES
    assert properties["eo:cloud_cover"]["type"] == "number"
    assert properties["astra:provider"]["type"] == "string"


def _provider_and_cloud(provider: str, below: float, lang: str) -> str | dict:
    if lang == "cql2-text":
        return f"astra:provider = '{provider}' AND eo:cloud_cover < {below}"
    return {
        "op": "and",
        "args": [
            {"op": "=", "args": [{"property": "astra:provider"}, provider]},
            {"op": "<", "args": [{"property": "eo:cloud_cover"}, below]},
        ],
    }


@pytest.mark.parametrize("method", ["GET", "POST"])
@pytest.mark.parametrize("lang", ["cql2-text", "cql2-json"])
@pytest.mark.parametrize(
    ("provider", "below", "expected"),
    [
        ("usgs", 20, []),  # the one USGS scene has 24.51 % cloud
        ("usgs", 30, [USGS_LANDSAT]),
        ("microsoft", 20, [PC_LANDSAT]),  # not the 48.7 % Sentinel-2 scene
    ],
)
def test_filter_on_provider_and_cloud_cover(client, auth, method, lang, provider, below, expected):
    expr = _provider_and_cloud(provider, below, lang)
    if method == "GET":
        text = expr if isinstance(expr, str) else json.dumps(expr)
        params = {"filter": text, "filter-lang": lang, "limit": 100}
        response = client.get("/api/v1/search", params=params, headers=auth)
    else:
        body = {"filter": expr, "filter-lang": lang, "limit": 100}
        response = client.post("/api/v1/search", json=body, headers=auth)
    assert _ids(response) == expected


def _sorted_by(features: list[dict], field: str) -> list:
    return [feature["properties"][field] for feature in features]


@pytest.mark.parametrize("method", ["GET", "POST"])
@pytest.mark.parametrize("field", ["datetime", "eo:cloud_cover"])
@pytest.mark.parametrize("direction", ["asc", "desc"])
def test_sortby_datetime_and_cloud_cover(client, auth, method, field, direction):
    if method == "GET":
        sign = "+" if direction == "asc" else "-"
        params = {"sortby": f"{sign}{field}", "limit": 100}
        response = client.get("/api/v1/search", params=params, headers=auth)
    else:
        body = {"sortby": [{"field": field, "direction": direction}], "limit": 100}
        response = client.post("/api/v1/search", json=body, headers=auth)
    assert response.status_code == 200, response.text
    values = _sorted_by(response.json()["features"], field)
    assert len(values) == ALL_DEMO
    if field == "datetime":
        values = [datetime.fromisoformat(v) for v in values]
    assert values == sorted(values, reverse=direction == "desc")
    assert len(set(values)) == ALL_DEMO  # distinct, so the order is really checked


def test_ids_from_every_provider_in_one_request(client, auth):
    wanted = [ES_LANDSAT, PC_LANDSAT, USGS_LANDSAT, S2_COPERNICUS]
    got = _ids(client.post("/api/v1/search", json={"ids": wanted}, headers=auth))
    assert sorted(got) == sorted(wanted)
    got = _ids(client.get("/api/v1/search", params={"ids": ",".join(wanted)}, headers=auth))
    assert sorted(got) == sorted(wanted)


def test_prev_link_returns_the_previous_page(client, auth):
    first = client.get("/api/v1/search", params={"limit": 3}, headers=auth)
    nxt = next(lnk for lnk in first.json()["links"] if lnk["rel"] == "next")
    second = client.get(nxt["href"].removeprefix("http://testserver"), headers=auth)
    prev = next(lnk for lnk in second.json()["links"] if lnk["rel"] == "previous")
    back = client.get(prev["href"].removeprefix("http://testserver"), headers=auth)
    assert _ids(back) == _ids(first)
    assert not set(_ids(first)) & set(_ids(second))


@pytest.mark.parametrize("token", ["next:zz:zz", "next:6162:6364", "sideways:6162:6364"])
def test_bad_paging_token_is_a_400(client, auth, token):
    response = client.get("/api/v1/search", params={"token": token}, headers=auth)
    assert response.status_code == 400, response.text
    assert set(response.json()) == {"code", "description"}


@pytest.mark.parametrize(
    "expr",
    [
        "eo:cloud_cover < 20",
        "astra:provider = 'usgs' AND (eo:cloud_cover < 20 OR gsd >= 10)",
        "NOT (platform <> 'landsat-9')",
        "eo:cloud_cover BETWEEN 1 AND 2",
        "s_intersects(geometry, POINT(1 2))",
        "platform LIKE 'landsat%'",
        {"op": "and", "args": [{"op": "<", "args": [{"property": "a"}, 1]}]},
        {"op": "<", "args": [{"property": "a"}, 1, 2]},
        {"op": "like", "args": [{"property": "a"}, 1]},
        {"op": "<", "args": [{"property": "a"}, True]},
    ],
)
def test_filters_checked_without_the_schema_agree_with_cql2(expr):
    from cql2 import Expr

    from astra_stac.errors import InvalidParameter
    from astra_stac.stac.search import filter_as_cql2_json

    try:
        Expr(expr).validate()
        valid = True
    except Exception:
        valid = False
    if valid:
        assert filter_as_cql2_json(expr) == Expr(expr).to_json()
    else:
        with pytest.raises(InvalidParameter):
            filter_as_cql2_json(expr)
