"""Operations: request ids, JSON logs, metrics, health."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import rasterio

from astra_stac.assets.signing import UrlSigner
from astra_stac.assets.storage import FILES_AREA
from astra_stac.auth import store
from astra_stac.auth.keys import Scope
from astra_stac.observability import JsonFormatter, request_id_var
from tests.conftest import _free_port

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


def _write_large_geotiff(path: Path) -> str:
    """A 32 MB uncompressed GeoTIFF (more than loopback socket buffers hold); its SHA-256."""
    path.parent.mkdir(parents=True)
    data = np.random.default_rng(7).integers(1, 10000, (4096, 4096), dtype="uint16")
    profile = {"driver": "GTiff", "width": 4096, "height": 4096, "count": 1, "dtype": "uint16"}
    transform = rasterio.transform.from_origin(500000, 4500000, 10, 10)
    with rasterio.open(path, "w", crs="EPSG:32613", transform=transform, **profile) as dst:
        dst.write(data, 1)
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_sigterm_finishes_in_flight_requests_then_exits_0(dsn, tmp_path):
    """`astra-stac serve` on SIGTERM stops accepting connections, lets the downloads it
    is in the middle of sending finish whole, and exits with status 0."""
    storage = tmp_path / "storage"
    digest = _write_large_geotiff(storage / "big" / "band.tif")
    signing_key = "g" * 40
    port = _free_port()
    base = f"http://127.0.0.1:{port}/api/v1/"
    env = {
        **os.environ,
        "ASTRA_DATABASE_URL": dsn,
        "ASTRA_STORAGE_ROOT": str(storage),
        "ASTRA_SIGNING_KEY": signing_key,
    }
    command = [str(Path(sys.executable).with_name("astra-stac")), "serve", "--port", str(port)]
    with (tmp_path / "serve.log").open("wb") as log:
        server = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{base}_mgmt/ping", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.1)
        else:
            raise AssertionError((tmp_path / "serve.log").read_text())
        url = UrlSigner(signing_key.encode()).sign_url(
            base, f"{FILES_AREA}/big/band.tif", int(time.time()) + 300
        )
        started = [threading.Event() for _ in range(3)]
        results: list[tuple[int, str, float]] = []

        def slow_download(first_bytes: threading.Event) -> None:
            hashed = hashlib.sha256()
            with httpx.stream("GET", url, timeout=30) as response:
                for chunk in response.iter_bytes(1 << 20):
                    hashed.update(chunk)
                    first_bytes.set()
                    time.sleep(0.1)  # a slow client: the server cannot send it all at once
                results.append((response.status_code, hashed.hexdigest(), time.monotonic()))

        threads = [threading.Thread(target=slow_download, args=(e,)) for e in started]
        for thread in threads:
            thread.start()
        for event in started:
            assert event.wait(30)
        server.send_signal(signal.SIGTERM)
        signalled = time.monotonic()
        refused_at = None
        while refused_at is None and time.monotonic() < signalled + 10:
            try:
                httpx.get(f"{base}_mgmt/ping", timeout=1)
                time.sleep(0.05)
            except httpx.TransportError:
                refused_at = time.monotonic()
        for thread in threads:
            thread.join(30)
        exit_status = server.wait(timeout=30)
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
    assert refused_at is not None, "still accepting connections after SIGTERM"
    assert [(status, got) for status, got, _ in results] == [(200, digest)] * 3
    assert exit_status == 0, (tmp_path / "serve.log").read_text()[-2000:]
    # The downloads were still in flight when new connections were already refused.
    assert all(finished > refused_at for *_, finished in results)
