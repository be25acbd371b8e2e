"""End to end through a real uvicorn on loopback, with the clients users run.

- pystac-client: bbox, datetime, CQL2 filters, sort, provider-scoped ids, paging.
- The Python example of the Scene Details spec, run as written with `requests`.
- stac-api-validator, in-process, with the JSON schemas it needs served from
  `tests/data/stac-schemas` instead of the internet.
"""

from __future__ import annotations

import ast
import io
import json
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import pytest
import requests
import urllib3
from pystac_client import Client
from pystac_client.exceptions import APIError
from stac_api_validator.validations import QueryConfig, validate_api

# pystac, reading the demo items, cannot migrate their storage extension to v2: noise.
pytestmark = pytest.mark.filterwarnings("ignore:Could not parse bucket:UserWarning")

DATA = Path(__file__).parent / "data"
# Unchanged copies of the public JSON schemas the validator run needs, and only
# those, at HOST/PATH for https://HOST/PATH. The validator test names any missing.
SCHEMAS = DATA / "stac-schemas"

PROVIDERS = {
    "earth-search": "element84",
    "planetary-computer": "microsoft",
    "landsat": "usgs",
    "sentinel-2": "copernicus",
}
ES_S2 = "earth-search:S2A_13TDE_20231008_0_L2A"
ES_S2_C1 = "earth-search:S2B_T13TDE_20240331T175111_L2A"
ES_LANDSAT = "earth-search:LC08_L2SP_033032_20231008_02_T1"
PC_S2 = "planetary-computer:S2B_MSIL2A_20240825T173909_R098_T13TDE_20240825T215747"
PC_LANDSAT = "planetary-computer:LC09_L2SP_089084_20240807_02_T1"
USGS_LANDSAT = "landsat:LC09_L2SP_092068_20230607_20230609_02_T1_SR"
CDSE_S2 = "sentinel-2:S2A_MSIL2A_20220217T183431_N0510_R027_T13VEK_20240516T022440"
ALL_DEMO = {ES_S2, ES_S2_C1, ES_LANDSAT, PC_S2, PC_LANDSAT, USGS_LANDSAT, CDSE_S2}
# Around Denver: the three earth-search scenes and Planetary Computer's Sentinel-2 tile.
DENVER_BBOX = [-105.5, 39.8, -105.0, 40.2]


def _open(live_server) -> Client:
    return Client.open(live_server.url, headers={"Authorization": f"Bearer {live_server.key}"})


def _assert_scoped(item: Any) -> None:
    provider, _, original = item.id.partition(":")
    assert provider in PROVIDERS and original, item.id
    assert item.properties["astra:provider"] == PROVIDERS[provider]
    assert item.properties["astra:collection"] == item.collection_id


# pystac-client ------------------------------------------------------------------------------


def test_pystac_client_opens_the_api_with_the_key(live_server):
    client = _open(live_server)
    for conformance in ("ITEM_SEARCH", "FILTER", "SORT", "FIELDS", "QUERY"):
        assert client.conforms_to(conformance), conformance
    collections = {c.id for c in client.get_collections()}
    assert {"es-sentinel-2-l2a", "pc-sentinel-2-l2a", "cdse-sentinel-2-l2a"} <= collections


def test_pystac_client_without_a_key_is_refused(live_server):
    with pytest.raises(APIError) as raised:
        Client.open(live_server.url).search(max_items=1).item_collection()
    assert raised.value.status_code == 401


@pytest.mark.parametrize("method", ["GET", "POST"])
def test_pystac_client_bbox_and_datetime(live_server, method):
    client = _open(live_server)
    items = list(client.search(bbox=DENVER_BBOX, method=method).items())
    assert {item.id for item in items} == {ES_S2, ES_S2_C1, ES_LANDSAT, PC_S2}
    for item in items:
        _assert_scoped(item)
        west, south, east, north = item.bbox
        assert west <= DENVER_BBOX[2] and east >= DENVER_BBOX[0]
        assert south <= DENVER_BBOX[3] and north >= DENVER_BBOX[1]

    october = client.search(datetime="2023-10-01/2023-10-31", method=method)
    items = list(october.items())
    assert {item.id for item in items} == {ES_S2, ES_LANDSAT}
    assert all(item.datetime.strftime("%Y-%m") == "2023-10" for item in items)

    both = client.search(bbox=DENVER_BBOX, datetime="2024", method=method)
    assert {item.id for item in both.items()} == {ES_S2_C1, PC_S2}


ELEMENT84_TEXT = "\"astra:provider\" = 'element84'"
ELEMENT84_JSON = {"op": "=", "args": [{"property": "astra:provider"}, "element84"]}


@pytest.mark.parametrize("method", ["GET", "POST"])
def test_pystac_client_cql2_text_and_json_filters(live_server, method):
    client = _open(live_server)
    earth_search = {ES_S2, ES_S2_C1, ES_LANDSAT}
    # pystac-client sends each as the method's encoding: text for GET, JSON for POST
    for cql2 in (ELEMENT84_TEXT, ELEMENT84_JSON):
        items = list(client.search(filter=cql2, method=method).items())
        assert {item.id for item in items} == earth_search, cql2
        assert all(item.properties["astra:provider"] == "element84" for item in items)

    clear = client.search(
        filter={
            "op": "and",
            "args": [ELEMENT84_JSON, {"op": "<", "args": [{"property": "eo:cloud_cover"}, 10]}],
        },
        method=method,
    )
    items = list(clear.items())
    assert {item.id for item in items} == {ES_S2, ES_LANDSAT}
    assert all(item.properties["eo:cloud_cover"] < 10 for item in items)

    by_scoped_id = client.search(filter=f"id = '{PC_LANDSAT}'", method=method)
    assert [item.id for item in by_scoped_id.items()] == [PC_LANDSAT]


def test_pystac_client_cql2_json_over_get(live_server):
    client = _open(live_server)
    search = client.search(filter=ELEMENT84_JSON, filter_lang="cql2-json", method="GET")
    assert "filter-lang=cql2-json" in search.url_with_parameters()
    assert {item.id for item in search.items()} == {ES_S2, ES_S2_C1, ES_LANDSAT}


@pytest.mark.parametrize("method", ["GET", "POST"])
def test_pystac_client_sortby(live_server, method):
    client = _open(live_server)
    newest_first = list(client.search(sortby="-properties.datetime", method=method).items())
    assert len(newest_first) == len(ALL_DEMO)
    datetimes = [item.datetime for item in newest_first]
    assert datetimes == sorted(datetimes, reverse=True)

    clearest_first = list(
        client.search(
            sortby=[{"field": "properties.eo:cloud_cover", "direction": "asc"}], method=method
        ).items()
    )
    clouds = [item.properties["eo:cloud_cover"] for item in clearest_first]
    assert clouds == sorted(clouds)
    assert clearest_first[0].id == ES_S2


@pytest.mark.parametrize("method", ["GET", "POST"])
def test_pystac_client_ids_from_different_providers(live_server, method):
    client = _open(live_server)
    wanted = [ES_S2, PC_LANDSAT, USGS_LANDSAT, CDSE_S2]
    items = list(client.search(ids=wanted, method=method).items())
    assert sorted(item.id for item in items) == sorted(wanted)
    for item in items:
        _assert_scoped(item)
        # what a user does next: read the item again from its collection, and its self link
        again = client.get_collection(item.collection_id).get_item(item.id)
        assert again is not None and again.id == item.id
        assert item.get_self_href().startswith(live_server.url)

    # a scoped id of one provider never finds another provider's scene
    wrong = "planetary-computer:LC08_L2SP_033032_20231008_02_T1"
    assert list(client.search(ids=[wrong], method=method).items()) == []


@pytest.mark.parametrize("method", ["GET", "POST"])
def test_pystac_client_pages_through_every_item(live_server, method):
    client = _open(live_server)
    search = client.search(limit=2, method=method)
    pages = list(search.pages())
    assert [len(page) for page in pages] == [2, 2, 2, 1]
    ids = [item.id for page in pages for item in page]
    assert len(ids) == len(set(ids)) == len(ALL_DEMO)
    assert set(ids) == ALL_DEMO
    # the same through the item iterator, which follows the same next links
    assert {item.id for item in client.search(limit=2, method=method).items()} == ALL_DEMO


@pytest.mark.parametrize("method", ["GET", "POST"])
def test_pystac_client_query_extension_operators(live_server, method):
    client = _open(live_server)

    def ids(query: dict[str, Any]) -> set[str]:
        return {item.id for item in client.search(query=query, method=method).items()}

    assert ids({"platform": {"startsWith": "sentinel-2"}, "eo:cloud_cover": {"lt": 45}}) == {
        ES_S2,
        CDSE_S2,
    }
    assert ids({"platform": {"endsWith": "-9"}}) == {PC_LANDSAT}
    assert ids({"platform": {"contains": "andsat"}}) == {ES_LANDSAT, PC_LANDSAT}
    assert ids({"landsat:wrs_path": {"in": ["033", "089"]}}) == {ES_LANDSAT, PC_LANDSAT}
    assert ids({"platform": {"neq": "sentinel-2a"}}) == ALL_DEMO - {ES_S2, CDSE_S2}
    assert ids({"eo:cloud_cover": {"gte": 1.2, "lte": 41.21}}) == {
        PC_LANDSAT,
        USGS_LANDSAT,
        CDSE_S2,
    }
    # `_` and `%` are matched as themselves
    assert ids({"platform": {"startsWith": "landsat_"}}) == set()
    assert ids({"platform": {"startsWith": "LANDSAT_"}}) == {USGS_LANDSAT}
    # a scoped id in a query is scoped like everywhere else
    assert ids({"id": {"in": [PC_LANDSAT, ES_S2]}}) == {PC_LANDSAT, ES_S2}


@pytest.mark.parametrize(
    "query",
    [
        {"platform": {"startsWith": 5}},
        {"platform": {"in": "landsat-9"}},
        {"platform": {"in": []}},
        {"platform": {"regex": "^l"}},
        {"eo:cloud_cover": {"lt": [1, 2]}},
    ],
)
def test_bad_query_is_a_400(live_server, query):
    response = requests.post(
        f"{live_server.url}/search",
        json={"query": query},
        headers={"Authorization": f"Bearer {live_server.key}"},
    )
    assert response.status_code == 400, response.text
    assert response.json()["code"] == "INVALID_PARAMETER"


def test_post_search_takes_collections_as_a_string(live_server):
    response = requests.post(
        f"{live_server.url}/search",
        json={"collections": "es-sentinel-2-l2a,pc-sentinel-2-l2a"},
        headers={"Authorization": f"Bearer {live_server.key}"},
    )
    assert response.status_code == 200, response.text
    assert {f["id"] for f in response.json()["features"]} == {ES_S2, PC_S2}


# The default set (and `collection`, which scoping needs), and a whole item's keys.
DEFAULT_KEYS = {"type", "stac_version", "id", "collection", "geometry", "bbox", "links", "assets"}
ALL_KEYS = DEFAULT_KEYS | {"properties", "stac_extensions"}


@pytest.mark.parametrize(
    ("method", "fields", "keys", "cloud_cover"),
    [
        ("POST", {}, DEFAULT_KEYS | {"properties"}, False),
        ("POST", {"include": None, "exclude": None}, DEFAULT_KEYS | {"properties"}, False),
        (
            "POST",
            {"include": [], "exclude": ["geometry"]},
            DEFAULT_KEYS - {"geometry"} | {"properties"},
            False,
        ),
        ("GET", "-geometry", DEFAULT_KEYS - {"geometry"} | {"properties"}, False),
        # include missing: the whole item but the geometry
        ("POST", {"exclude": ["geometry"]}, ALL_KEYS - {"geometry"}, True),
        (
            "GET",
            "properties.eo:cloud_cover",
            {"type", "id", "collection", "properties", "links"},
            True,
        ),
        (
            "POST",
            {"include": ["bbox"], "exclude": ["id", "type"]},
            {"type", "id", "collection", "bbox", "links"},
            False,
        ),
    ],
)
def test_fields_follow_the_extensions_include_exclude_table(
    live_server, method, fields, keys, cloud_cover
):
    headers = {"Authorization": f"Bearer {live_server.key}"}
    if method == "GET":
        params = {"ids": ES_S2, "fields": fields}
        response = requests.get(f"{live_server.url}/search", params=params, headers=headers)
    else:
        body = {"ids": [ES_S2], "fields": fields}
        response = requests.post(f"{live_server.url}/search", json=body, headers=headers)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/geo+json"
    (feature,) = response.json()["features"]
    assert set(feature) == keys
    assert feature["id"] == ES_S2  # scoped, whatever was asked
    assert ("eo:cloud_cover" in feature.get("properties", {})) is cloud_cover


def test_fields_null_is_a_400(live_server):
    response = requests.post(
        f"{live_server.url}/search",
        json={"fields": None},
        headers={"Authorization": f"Bearer {live_server.key}"},
    )
    assert response.status_code == 400
    assert response.json()["code"] == "INVALID_PARAMETER"


# The spec's Python example ------------------------------------------------------------------

# spec/scene-details-api.txt, "Python" (scene_detail.py), as written.
SPEC_EXAMPLE = """
import requests
scene_id = "sentinel-2:S2B_MSIL2A_20250115T184929"
response = requests.get(
f"https://astraos.cloud/api/v1/scenes/{scene_id}",
headers={"Authorization": "Bearer astra_sk_live_your_key_here"},
)
scene = response.json()
print(f"Platform: {scene['properties']['platform']}")
print(f"Cloud cover: {scene['properties']['eo:cloud_cover']}%")
print(f"Available bands: {list(scene['assets'].keys())}")
"""


def test_the_spec_python_example_runs_as_written(live_server, capsys):
    code = (
        SPEC_EXAMPLE.replace("https://astraos.cloud/api/v1", live_server.url)
        .replace("astra_sk_live_your_key_here", live_server.key)
        .replace("sentinel-2:S2B_MSIL2A_20250115T184929", ES_S2)
    )
    exec(compile(code, "scene_detail.py", "exec"), {})
    printed = capsys.readouterr().out.splitlines()
    assert printed[0] == "Platform: sentinel-2a"
    assert printed[1] == "Cloud cover: 0.000299%"
    assert printed[2].startswith("Available bands: [")
    bands = ast.literal_eval(printed[2].removeprefix("Available bands: "))
    assert {"red", "green", "blue", "nir", "swir16", "visual", "thumbnail"} <= set(bands)


# stac-api-validator -------------------------------------------------------------------------


class Offline:
    """No internet, except JSON schemas served from `root` (`https://HOST/PATH` is `HOST/PATH`).

    Everything the validator's libraries fetch over HTTP goes through urllib3's
    connection pools: requests for stac-validator, stac-check and pystac-client,
    urllib3 directly for pystac. Schema requests are answered there; requests to
    loopback (the live server) go through and are recorded. Name resolution of
    any other host fails, as on a machine without internet, so the links
    stac-validator opens with urllib to upstream hosts fail the same way
    whether or not this machine is online.
    """

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()
        self.served: set[str] = set()
        self.missing: set[str] = set()
        self.api_requests: list[tuple[str, str]] = []

    def schema(self, url: str) -> bytes | None:
        parts = urlsplit(url)
        path = (self.root / str(parts.hostname) / parts.path.lstrip("/")).resolve()
        if self.root in path.parents and path.is_file():
            self.served.add(url)
            return path.read_bytes()
        self.missing.add(url)
        return None

    @contextmanager
    def installed(self, monkeypatch: pytest.MonkeyPatch) -> Iterator[Offline]:
        pool_urlopen = urllib3.connectionpool.HTTPConnectionPool.urlopen
        getaddrinfo = socket.getaddrinfo
        offline = self

        def urlopen(pool, method, url, *args, **kwargs):
            if _is_loopback(pool.host):
                offline.api_requests.append((method, url))
                return pool_urlopen(pool, method, url, *args, **kwargs)
            full = url if "://" in url else f"{pool.scheme}://{pool.host}{url}"
            body = offline.schema(full)
            if body is None:
                raise urllib3.exceptions.NameResolutionError(
                    pool.host,
                    None,
                    socket.gaierror(f"offline, and {full} is not in {offline.root}"),
                )
            return urllib3.response.HTTPResponse(
                body=io.BytesIO(body),
                headers={"Content-Type": "application/schema+json"},
                status=200,
                reason="OK",
                preload_content=kwargs.get("preload_content", True),
                decode_content=kwargs.get("decode_content", True),
                request_method=method,
                request_url=full,
            )

        def resolve_loopback_only(host, *args, **kwargs):
            if not _is_loopback(host):
                raise socket.gaierror(socket.EAI_NONAME, f"offline: {host}")
            return getaddrinfo(host, *args, **kwargs)

        monkeypatch.setattr(urllib3.connectionpool.HTTPConnectionPool, "urlopen", urlopen)
        monkeypatch.setattr(socket, "getaddrinfo", resolve_loopback_only)
        yield self


def _is_loopback(host: Any) -> bool:
    if isinstance(host, bytes):
        host = host.decode()
    return host in {"127.0.0.1", "localhost", "::1"}


VALIDATOR_COLLECTION = "es-sentinel-2-l2a"
# Inside the footprint of that collection's one scene, S2A_13TDE_20231008_0_L2A.
VALIDATOR_GEOMETRY = {
    "type": "Polygon",
    "coordinates": [
        [[-105.5, 40.0], [-105.2, 40.0], [-105.2, 40.3], [-105.5, 40.3], [-105.5, 40.0]]
    ],
}
CONFORMANCE = [
    "core",
    "collections",
    "features",
    "item-search",
    "item-search#sort",
    "item-search#fields",
    "item-search#query",
    "filter",
]
# The scene's own values, so that every operator finds it.
QUERY_CONFIG = QueryConfig(
    query_comparison_field="eo:cloud_cover",  # 0.000299
    query_eq_value="0.000299",
    query_neq_value="50",
    query_lt_value="1",
    query_lte_value="0.000299",
    query_gt_value="0",
    query_gte_value="0.000299",
    query_substring_field="platform",  # sentinel-2a
    query_starts_with_value="sentinel",
    query_ends_with_value="2a",
    query_contains_value="nel-2",
    # The validator checks `in` results with set(value): the characters of a
    # string. A one-letter property keeps that check meaningful.
    query_in_field="mgrs:latitude_band",  # T
    query_in_values="T,S",
)


def test_stac_api_validator_reports_no_errors(live_server, monkeypatch):
    """In-process, so that a crash inside the validator (which its CLI reports
    with exit status 0) fails the test, and its (warnings, errors) are read as
    they are. The same run from the command line:

        stac-api-validator --root-url URL -H "Authorization: Bearer KEY" \\
          --conformance core --conformance collections --conformance features \\
          --conformance item-search --conformance item-search#sort \\
          --conformance item-search#fields --conformance item-search#query \\
          --conformance filter \\
          --collection es-sentinel-2-l2a --geometry 'VALIDATOR_GEOMETRY as JSON' \\
          --fields-nested-property properties.eo:cloud_cover \\
          --query-comparison-field eo:cloud_cover --query-eq-value 0.000299 \\
          --query-neq-value 50 --query-lt-value 1 --query-lte-value 0.000299 \\
          --query-gt-value 0 --query-gte-value 0.000299 \\
          --query-substring-field platform --query-starts-with-value sentinel \\
          --query-ends-with-value 2a --query-contains-value nel-2 \\
          --query-in-field mgrs:latitude_band --query-in-values T,S

    except for `open_assets_urls=False`, which the CLI has no option for: asset
    hrefs point at the providers' buckets, not at this API.
    """
    with Offline(SCHEMAS).installed(monkeypatch) as offline:
        _warnings, errors = validate_api(
            root_url=live_server.url,
            ccs_to_validate=CONFORMANCE,
            collection=VALIDATOR_COLLECTION,
            geometry=json.dumps(VALIDATOR_GEOMETRY),
            auth_bearer_token=None,
            auth_query_parameter=None,
            # as a header rather than auth_bearer_token: the validator's closing
            # pystac-client check sends only these headers
            headers={"Authorization": f"Bearer {live_server.key}"},
            fields_nested_property="properties.eo:cloud_cover",
            # needs two scenes in one collection; paging is checked with pystac-client above
            validate_pagination=False,
            query_config=QUERY_CONFIG,
            transaction_collection=None,
            open_assets_urls=False,
        )
    assert not errors, "stac-api-validator errors:\n" + "\n".join(errors)
    assert not offline.missing, f"schemas to add to {SCHEMAS}: {sorted(offline.missing)}"

    # The validator returns early, with no error, when it is misconfigured:
    # make sure every class was exercised against the live server.
    api = urlsplit(live_server.url).path
    gets = [unquote(url) for method, url in offline.api_requests if method == "GET"]
    posts = [url for method, url in offline.api_requests if method == "POST"]
    for expected in (
        f"{api}/conformance",
        f"{api}/collections/{VALIDATOR_COLLECTION}",
        f"{api}/collections/{VALIDATOR_COLLECTION}/items",
        f"{api}/queryables",
        f"{api}/search?",
    ):
        assert any(url.startswith(expected) for url in gets), expected
    for parameter in ("sortby=", "fields=", '"startsWith"', '"in"', "filter=", "intersects="):
        assert any(url.startswith(f"{api}/search?") and parameter in url for url in gets), parameter
    assert len(posts) > 50
    # stac-validator and pystac validated items and collections against real schemas
    assert any("item-spec" in url for url in offline.served)
    assert any("collection-spec" in url for url in offline.served)
