"""API keys: hashed at rest, Bearer-checked, revocable, scoped; public routes stay public."""

from __future__ import annotations

import psycopg
import pytest

from astra_stac.auth import store
from astra_stac.auth.keys import KEY_PREFIX, Scope, generate_key, hash_key, lookup_id_of
from tests.conftest import make_client

SCENE = "/api/v1/scenes/earth-search:S2A_13TDE_20231008_0_L2A"


def test_generated_keys_are_long_random_and_distinct():
    keys = {generate_key().secret for _ in range(200)}
    assert len(keys) == 200
    for key in keys:
        assert key.startswith(KEY_PREFIX)
        body = key.removeprefix(KEY_PREFIX)
        assert len(body) == 40 and body.isalnum()  # 40 × log2(62) ≈ 238 bits
        assert lookup_id_of(key) == body[:8]


def test_only_a_hash_is_stored(dsn):
    new, stored = store.create_key(dsn, "hash-check", Scope.read)
    with psycopg.connect(dsn) as conn:
        row = conn.execute("SELECT * FROM astra.api_keys WHERE name = 'hash-check'").fetchone()
    assert new.secret not in repr(row)
    assert bytes(stored.key_hash) == hash_key(new.secret)


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer"},
        {"Authorization": "Basic dXNlcjpwYXNz"},
        {"Authorization": "Bearer astra_sk_live_wrong"},
        {"Authorization": "Bearer " + KEY_PREFIX + "A" * 40},
    ],
)
def test_missing_or_invalid_keys_are_401_with_bearer_challenge(client, headers):
    response = client.get(SCENE, headers=headers)
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"
    assert response.json()["code"] == "UNAUTHORIZED"
    assert set(response.json()) == {"code", "description"}


def test_a_tampered_key_is_refused(client, read_key):
    tampered = read_key[:-1] + ("A" if read_key[-1] != "A" else "B")
    assert client.get(SCENE, headers={"Authorization": f"Bearer {tampered}"}).status_code == 401


@pytest.mark.parametrize(
    "path",
    [
        "/api/v1",
        "/api/v1/conformance",
        "/api/v1/api",
        "/api/v1/api.html",
        "/api/v1/_mgmt/ping",
        "/api/v1/_mgmt/health",
    ],
)
def test_public_routes_need_no_key(client, path):
    assert client.get(path).status_code == 200


@pytest.mark.parametrize(
    "path",
    [
        "/api/v1/collections",
        "/api/v1/collections/es-sentinel-2-l2a",
        "/api/v1/collections/es-sentinel-2-l2a/items",
        "/api/v1/search",
        "/api/v1/queryables",
        SCENE,
    ],
)
def test_catalogue_routes_need_a_key(client, auth, path):
    assert client.get(path).status_code == 401
    assert client.get(path, headers=auth).status_code == 200


def test_revoked_key_fails_on_its_next_request(client, dsn, read_key, auth):
    assert client.get(SCENE, headers=auth).status_code == 200
    store.revoke_key(dsn, "tests-read")
    assert client.get(SCENE, headers=auth).status_code == 401


def test_revoke_by_prefix_and_ambiguity(dsn):
    new, _ = store.create_key(dsn, "by-prefix", Scope.read)
    revoked = store.revoke_key(dsn, new.secret[: len(KEY_PREFIX) + 6])
    assert revoked.name == "by-prefix" and revoked.revoked_at is not None
    with pytest.raises(Exception, match="No live key"):
        store.revoke_key(dsn, "by-prefix")


def test_auth_can_be_turned_off(dsn):
    with make_client(dsn, auth_enabled=False) as client:
        assert client.get(SCENE).status_code == 200


def test_transactions_need_write_scope(dsn):
    read = store.create_key(dsn, "r", Scope.read)[0].secret
    write = store.create_key(dsn, "w", Scope.write)[0].secret
    collection = {
        "type": "Collection",
        "stac_version": "1.0.0",
        "id": "local-test",
        "description": "test",
        "license": "proprietary",
        "extent": {
            "spatial": {"bbox": [[-180, -90, 180, 90]]},
            "temporal": {"interval": [[None, None]]},
        },
        "links": [],
    }
    with make_client(dsn, transactions_enabled=True) as client:
        denied = client.post(
            "/api/v1/collections", json=collection, headers={"Authorization": f"Bearer {read}"}
        )
        assert denied.status_code == 403
        assert denied.json()["code"] == "FORBIDDEN"
        # searching by POST is a read
        search = client.post(
            "/api/v1/search", json={"limit": 1}, headers={"Authorization": f"Bearer {read}"}
        )
        assert search.status_code == 200
        created = client.post(
            "/api/v1/collections", json=collection, headers={"Authorization": f"Bearer {write}"}
        )
        assert created.status_code in (200, 201), created.text


def test_transactions_are_off_by_default(client, dsn):
    admin = store.create_key(dsn, "a", Scope.admin)[0].secret
    response = client.post(
        "/api/v1/collections", json={}, headers={"Authorization": f"Bearer {admin}"}
    )
    assert response.status_code in (404, 405)


def test_last_used_is_recorded_by_the_periodic_flush(dsn, read_key, auth):
    with make_client(dsn, key_last_used_flush_seconds=3600) as client:
        client.get(SCENE, headers=auth)
        with psycopg.connect(dsn) as conn:
            before = conn.execute(
                "SELECT last_used_at FROM astra.api_keys WHERE name = 'tests-read'"
            ).fetchone()
        assert before == (None,)  # not written on the request itself
    # leaving the app flushes what it collected
    with psycopg.connect(dsn) as conn:
        after = conn.execute(
            "SELECT last_used_at FROM astra.api_keys WHERE name = 'tests-read'"
        ).fetchone()
    assert after[0] is not None
