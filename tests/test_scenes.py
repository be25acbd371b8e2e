"""Scene Details as the spec shows it: the full item, and its three errors."""

from __future__ import annotations

import pytest

SCENE = "earth-search:S2A_13TDE_20231008_0_L2A"


def test_scene_details_returns_the_full_item(client, auth):
    response = client.get(f"/api/v1/scenes/{SCENE}", headers=auth)
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/geo+json"
    scene = response.json()
    assert scene["type"] == "Feature"
    assert scene["id"] == SCENE
    assert scene["properties"]["astra:provider"] == "element84"
    assert scene["properties"]["astra:collection"] == "es-sentinel-2-l2a"
    assert scene["properties"]["platform"] == "sentinel-2a"
    assert "red" in scene["assets"] and "nir" in scene["assets"]
    links = {link["rel"]: link["href"] for link in scene["links"]}
    assert links["self"] == f"http://testserver/api/v1/scenes/{SCENE}"
    assert links["parent"] == "http://testserver/api/v1/search"
    assert links["root"] == "http://testserver/api/v1/"


def test_scene_links_resolve(client, auth):
    scene = client.get(f"/api/v1/scenes/{SCENE}", headers=auth).json()
    for link in scene["links"]:
        if link["rel"] in ("self", "parent", "root", "collection"):
            path = link["href"].removeprefix("http://testserver")
            assert client.get(path, headers=auth).status_code == 200, link


@pytest.mark.parametrize(
    "scene_id",
    [
        "nocolon",
        "a:b:c",
        ":S2A_13TDE_20231008_0_L2A",
        "earth-search:",
        "Earth-Search:S2A",
        "earth-search:S2A 13TDE",
        "earth-search:bad%00id",
        "earth-search:%C3%A9t%C3%A9",
        "earth-search:" + "x" * 300,
    ],
)
def test_malformed_ids_are_invalid_id_format(client, auth, scene_id):
    response = client.get(f"/api/v1/scenes/{scene_id}", headers=auth)
    assert response.status_code == 400
    assert response.json()["code"] == "INVALID_ID_FORMAT"
    assert set(response.json()) == {"code", "description"}


@pytest.mark.parametrize(
    "scene_id", ["earth-search:S2A_NOT_THERE", "nowhere:S2A_13TDE_20231008_0_L2A"]
)
def test_unknown_scenes_are_scene_not_found(client, auth, scene_id):
    response = client.get(f"/api/v1/scenes/{scene_id}", headers=auth)
    assert response.status_code == 404
    assert response.json()["code"] == "SCENE_NOT_FOUND"


def test_same_original_id_at_two_providers_stays_apart(client, auth):
    """Earth Search and Planetary Computer both publish Landsat ids; the prefix decides."""
    es = client.get("/api/v1/scenes/earth-search:LC08_L2SP_033032_20231008_02_T1", headers=auth)
    pc = client.get(
        "/api/v1/scenes/planetary-computer:LC08_L2SP_033032_20231008_02_T1", headers=auth
    )
    assert es.status_code == 200
    assert es.json()["properties"]["astra:provider"] == "element84"
    assert pc.status_code == 404


def test_duplicate_original_id_inside_one_provider_takes_registry_order(dsn, auth):
    """The collection listed first in the registry wins; the other stays reachable by route."""
    import json

    from astra_stac.ingest.load import upsert
    from astra_stac.providers import load_registry
    from tests.conftest import make_client

    registry = load_registry()
    provider = registry.providers["earth-search"]
    with make_client(dsn) as client:
        original = client.get(f"/api/v1/scenes/{SCENE}", headers=auth).json()
    twin = json.loads(json.dumps(original))
    twin["id"] = SCENE.split(":")[1]
    twin["collection"] = "es-sentinel-2-c1-l2a"
    twin["properties"]["astra:collection"] = "es-sentinel-2-c1-l2a"
    twin["links"] = []
    upsert(dsn, [], [twin])
    assert provider.collection_ids.index("es-sentinel-2-l2a") < provider.collection_ids.index(
        "es-sentinel-2-c1-l2a"
    )
    with make_client(dsn) as client:
        scene = client.get(f"/api/v1/scenes/{SCENE}", headers=auth).json()
        assert scene["collection"] == "es-sentinel-2-l2a"
        other = client.get(f"/api/v1/collections/es-sentinel-2-c1-l2a/items/{SCENE}", headers=auth)
        assert other.status_code == 200
        assert other.json()["collection"] == "es-sentinel-2-c1-l2a"
