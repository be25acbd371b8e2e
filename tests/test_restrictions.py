"""Keys limited to providers or collections, rate limits and the audit trail."""

from __future__ import annotations

import logging

import pytest

from astra_stac.auth import store
from astra_stac.auth.keys import Scope
from astra_stac.auth.ratelimit import RateLimiter
from tests.conftest import make_client

ES_SCENE = "earth-search:S2A_13TDE_20231008_0_L2A"
PC_SCENE = "planetary-computer:LC09_L2SP_089084_20240807_02_T1"


@pytest.fixture
def es_only(dsn):
    secret = store.create_key(dsn, "es-only", Scope.read, providers=["earth-search"])[0].secret
    return {"Authorization": f"Bearer {secret}"}


def _ids(response):
    assert response.status_code == 200, response.text
    return [f["id"] for f in response.json()["features"]]


def test_restricted_key_sees_only_its_provider_in_search_and_pages(client, es_only):
    seen, response = [], client.get("/api/v1/search", params={"limit": 1}, headers=es_only)
    while True:
        seen += _ids(response)
        nxt = next((lnk for lnk in response.json()["links"] if lnk["rel"] == "next"), None)
        if nxt is None:
            break
        response = client.get(nxt["href"].removeprefix("http://testserver"), headers=es_only)
    assert seen and all(i.startswith("earth-search:") for i in seen)
    assert len(seen) == 3


def test_restricted_key_cannot_reach_other_items_by_ids_filter_or_collections(client, es_only):
    assert _ids(client.get("/api/v1/search", params={"ids": PC_SCENE}, headers=es_only)) == []
    assert _ids(
        client.post("/api/v1/search", json={"ids": [PC_SCENE, ES_SCENE]}, headers=es_only)
    ) == [ES_SCENE]
    text = client.get("/api/v1/search", params={"filter": f"id = '{PC_SCENE}'"}, headers=es_only)
    assert _ids(text) == []
    asked = client.get(
        "/api/v1/search", params={"collections": "pc-landsat-c2-l2"}, headers=es_only
    )
    assert _ids(asked) == []


def test_restricted_key_gets_not_found_for_other_scenes_and_collections(client, es_only, auth):
    assert client.get(f"/api/v1/scenes/{ES_SCENE}", headers=es_only).status_code == 200
    hidden = client.get(f"/api/v1/scenes/{PC_SCENE}", headers=es_only)
    assert hidden.status_code == 404 and hidden.json()["code"] == "SCENE_NOT_FOUND"
    assert client.get(f"/api/v1/scenes/{PC_SCENE}", headers=auth).status_code == 200
    for path in (
        "/api/v1/collections/pc-landsat-c2-l2",
        "/api/v1/collections/pc-landsat-c2-l2/items",
        f"/api/v1/collections/pc-landsat-c2-l2/items/{PC_SCENE}",
    ):
        assert client.get(path, headers=es_only).status_code == 404, path
    listed = client.get("/api/v1/collections", headers=es_only).json()["collections"]
    assert listed and all(c["id"].startswith("es-") for c in listed)


def test_key_limited_to_one_collection(client, dsn):
    secret = store.create_key(dsn, "one", Scope.read, collections=["es-landsat-c2-l2"])[0].secret
    ids = _ids(
        client.get(
            "/api/v1/search", params={"limit": 50}, headers={"Authorization": f"Bearer {secret}"}
        )
    )
    assert ids == ["earth-search:LC08_L2SP_033032_20231008_02_T1"]


def test_per_key_rate_limit_answers_429_with_retry_after(dsn, auth):
    with make_client(dsn, rate_limits_enabled=True, rate_limit_per_minute=3) as client:
        statuses = [
            client.get(f"/api/v1/scenes/{ES_SCENE}", headers=auth).status_code for _ in range(4)
        ]
        assert statuses == [200, 200, 200, 429]
        limited = client.get(f"/api/v1/scenes/{ES_SCENE}", headers=auth)
        assert limited.json()["code"] == "TOO_MANY_REQUESTS"
        assert int(limited.headers["retry-after"]) >= 1
        assert client.get("/api/v1/_mgmt/ping").status_code == 200  # public routes unaffected


def test_failed_authentications_are_rate_limited_per_client(dsn, auth):
    with make_client(dsn, rate_limits_enabled=True, failed_auth_per_minute=2) as client:
        bad = {"Authorization": "Bearer astra_sk_live_" + "x" * 40}
        assert [client.get("/api/v1/search", headers=bad).status_code for _ in range(2)] == [
            401,
            401,
        ]
        blocked = client.get("/api/v1/search", headers=auth)
        assert blocked.status_code == 429
        assert "retry-after" in blocked.headers


def test_token_bucket_refills_over_time():
    now = [0.0]
    limiter = RateLimiter(60, clock=lambda: now[0])  # one a second, bursts of 60
    assert all(limiter.spend("k") is None for _ in range(60))
    assert limiter.spend("k") == 1
    now[0] += 1.0
    assert limiter.spend("k") is None
    assert RateLimiter(0).spend("k") is None  # 0 turns the limit off


def test_audit_lines_for_keys_and_denied_requests(client, dsn, caplog):
    with caplog.at_level(logging.INFO, logger="astra.audit"):
        store.create_key(dsn, "audited", Scope.read)
        store.revoke_key(dsn, "audited")
        client.get("/api/v1/search")
    events = [r.fields["event"] for r in caplog.records if r.name == "astra.audit"]  # type: ignore[attr-defined]
    assert events == ["key_created", "key_revoked", "request_denied"]
    secretless = " ".join(str(r.__dict__) for r in caplog.records)
    assert "astra_sk_live_" not in secretless.replace("astra_sk_live_…", "")


def test_restricted_key_gets_not_found_for_other_collections_queryables(client, es_only):
    own = client.get("/api/v1/collections/es-sentinel-2-l2a/queryables", headers=es_only)
    assert own.status_code == 200
    hidden = client.get("/api/v1/collections/pc-landsat-c2-l2/queryables", headers=es_only)
    assert hidden.status_code == 404 and hidden.json()["code"] == "NOT_FOUND"


def _new_item(client, auth, collection_id: str, new_id: str) -> dict:
    stored = client.get(f"/api/v1/collections/{collection_id}/items", headers=auth).json()
    item = stored["features"][0]
    item["id"], item["collection"], item["links"] = new_id, collection_id, []
    for key in ("astra:provider", "astra:collection"):
        item["properties"].pop(key, None)
    return item


@pytest.fixture
def writer(dsn):
    with make_client(dsn, transactions_enabled=True) as client:
        yield client


def _bearer(dsn, name: str, **limits) -> dict[str, str]:
    secret = store.create_key(dsn, name, Scope.write, **limits)[0].secret
    return {"Authorization": f"Bearer {secret}"}


def test_restricted_write_key_writes_only_items_of_its_collections(writer, dsn, auth):
    limited = _bearer(dsn, "es-writer", providers=["earth-search"])
    full = _bearer(dsn, "writer")
    own = _new_item(writer, auth, "es-sentinel-2-l2a", "S2A_OWN_WRITE")
    created = writer.post("/api/v1/collections/es-sentinel-2-l2a/items", json=own, headers=limited)
    assert created.status_code in (200, 201), created.text

    other = _new_item(writer, auth, "pc-landsat-c2-l2", "LC09_OTHER_WRITE")
    refused = writer.post("/api/v1/collections/pc-landsat-c2-l2/items", json=other, headers=limited)
    assert refused.status_code == 404 and refused.json()["code"] == "NOT_FOUND"
    deleted = writer.delete(
        "/api/v1/collections/pc-landsat-c2-l2/items/LC09_L2SP_089084_20240807_02_T1",
        headers=limited,
    )
    assert deleted.status_code == 404
    collection = writer.get("/api/v1/collections/es-sentinel-2-l2a", headers=auth).json()
    collection["id"] = "es-made-by-limited-key"
    made = writer.post("/api/v1/collections", json=collection, headers=limited)
    assert made.status_code == 403 and made.json()["code"] == "FORBIDDEN"
    dropped = writer.delete("/api/v1/collections/es-sentinel-2-l2a", headers=limited)
    assert dropped.status_code == 403

    assert writer.get(f"/api/v1/scenes/{PC_SCENE}", headers=auth).status_code == 200
    assert writer.get("/api/v1/collections/es-sentinel-2-l2a", headers=auth).status_code == 200
    assert writer.get("/api/v1/collections/es-made-by-limited-key", headers=auth).status_code == 404
    stored = writer.get("/api/v1/collections/pc-landsat-c2-l2/items/LC09_OTHER_WRITE", headers=auth)
    assert stored.status_code == 404
    accepted = writer.post("/api/v1/collections/pc-landsat-c2-l2/items", json=other, headers=full)
    assert accepted.status_code in (200, 201), accepted.text
