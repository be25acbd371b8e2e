"""Operations: request ids, JSON logs, metrics, health."""

from __future__ import annotations

import json
import logging

from astra_stac.auth import store
from astra_stac.auth.keys import Scope
from astra_stac.observability import JsonFormatter, request_id_var

SCENE = "/api/v1/scenes/earth-search:S2A_13TDE_20231008_0_L2A"


def test_request_id_is_returned_and_generated(client, auth):
    mine = client.get(SCENE, headers={**auth, "X-Request-ID": "abc-123"})
    assert mine.headers["x-request-id"] == "abc-123"
    generated = client.get(SCENE, headers=auth).headers["x-request-id"]
    assert len(generated) == 32
    # an unsafe incoming id is replaced, not echoed
    hostile = client.get(SCENE, headers={**auth, "X-Request-ID": "a b\tc" * 50})
    assert hostile.headers["x-request-id"] != "a b\tc" * 50
    # errors carry it too
    assert "x-request-id" in client.get(SCENE).headers


def test_access_log_line_has_route_status_and_key(client, auth, caplog):
    with caplog.at_level(logging.INFO, logger="astra.access"):
        client.get(SCENE, headers={**auth, "X-Request-ID": "trace-me"})
    record = next(r for r in caplog.records if r.name == "astra.access")
    fields = record.fields  # type: ignore[attr-defined]
    assert fields["route"] == "/api/v1/scenes/{scene_id}"
    assert fields["status"] == 200
    assert fields["key"] == "tests-read"
    assert fields["duration_ms"] > 0


def test_json_formatter_writes_one_object_with_the_request_id():
    token = request_id_var.set("rid-1")
    try:
        record = logging.LogRecord("astra", logging.WARNING, __file__, 1, "hello %s", ("x",), None)
        line = JsonFormatter().format(record)
    finally:
        request_id_var.reset(token)
    entry = json.loads(line)
    assert entry["message"] == "hello x"
    assert entry["request_id"] == "rid-1"
    assert entry["level"] == "warning"


def test_metrics_need_an_admin_key_and_count_requests(client, dsn, auth):
    assert client.get("/api/v1/_mgmt/metrics").status_code == 401
    assert client.get("/api/v1/_mgmt/metrics", headers=auth).status_code == 403
    admin = store.create_key(dsn, "ops", Scope.admin)[0].secret
    client.get(SCENE, headers=auth)
    response = client.get("/api/v1/_mgmt/metrics", headers={"Authorization": f"Bearer {admin}"})
    assert response.status_code == 200
    text = response.text
    assert (
        'astra_http_requests_total{method="GET",route="/api/v1/scenes/{scene_id}",status="200"}'
        in text
    )
    assert "astra_http_request_duration_seconds_bucket" in text
    assert 'astra_db_pool_size{pool="writer"}' in text


def test_health_checks_the_database(client):
    body = client.get("/api/v1/_mgmt/health").json()
    assert body["status"] == "UP"
    assert body["pgstac"]["status"] == "UP"
