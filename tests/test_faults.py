"""Faults: PostgreSQL going away and coming back under a running server."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import pytest

from astra_stac.auth import store
from astra_stac.auth.keys import Scope
from astra_stac.db.embedded import EmbeddedPostgres
from astra_stac.db.migrate import migrate
from astra_stac.ingest.load import upsert
from astra_stac.ingest.normalize import normalize_item, template_collection
from astra_stac.providers import load_registry
from tests.conftest import REAL_FIXTURES, _free_port

ITEM = REAL_FIXTURES / "earth-search/sentinel-2-l2a/S2B_20EPT_20250731_0_L2A.json"
SCENE = "earth-search:S2B_20EPT_20250731_0_L2A"


@pytest.fixture
def own_cluster():
    base = Path(tempfile.mkdtemp(prefix="astra-faults-", dir="/tmp"))
    os.chmod(base, 0o755)
    cluster = EmbeddedPostgres(base)
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()
        shutil.rmtree(base, ignore_errors=True)


def _wait_for(url: str, expect: int, headers: dict[str, str], seconds: float) -> httpx.Response:
    deadline = time.monotonic() + seconds
    while True:
        try:
            response = httpx.get(url, headers=headers, timeout=5)
            if response.status_code == expect or time.monotonic() > deadline:
                return response
        except httpx.TransportError:
            if time.monotonic() > deadline:
                raise
        time.sleep(0.2)


def test_database_restart_gives_fast_503s_then_recovers_in_the_same_process(own_cluster):
    dsn = own_cluster.dsn()
    migrate(dsn)
    provider = load_registry().providers["earth-search"]
    item = normalize_item(json.loads(ITEM.read_text()), provider)
    upsert(dsn, [template_collection(item["collection"], provider, "sentinel-2-l2a")], [item])
    key = store.create_key(dsn, "faults", Scope.read)[0].secret
    headers = {"Authorization": f"Bearer {key}"}
    port = _free_port()
    env = {**os.environ, "ASTRA_DATABASE_URL": dsn, "ASTRA_JSON_LOGS": "false"}
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "astra_stac.app:create_app",
            "--factory",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--log-level",
            "warning",
        ],
        env=env,
    )
    base = f"http://127.0.0.1:{port}/api/v1"
    try:
        assert _wait_for(f"{base}/scenes/{SCENE}", 200, headers, 30).status_code == 200

        own_cluster.stop()
        for path in (f"/scenes/{SCENE}", "/search", "/collections"):
            started = time.monotonic()
            down = httpx.get(base + path, headers=headers, timeout=10)
            assert down.status_code == 503, (path, down.text)
            assert down.json()["code"] == "SERVICE_UNAVAILABLE"
            assert time.monotonic() - started < 3
        assert httpx.get(f"{base}/_mgmt/health", timeout=10).status_code == 503
        assert httpx.get(f"{base}/_mgmt/ping", timeout=10).status_code == 200

        own_cluster.start()
        back = _wait_for(f"{base}/scenes/{SCENE}", 200, headers, 30)
        assert back.status_code == 200
        assert back.json()["id"] == SCENE
        assert server.poll() is None  # the same process, never restarted
    finally:
        server.terminate()
        server.wait(timeout=10)
