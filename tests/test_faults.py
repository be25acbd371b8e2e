"""Faults: PostgreSQL going away and coming back under a running server, the S3
store going down, the conversion cache filling up, and an ingest killed mid-run."""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import boto3
import httpx
import numpy as np
import psycopg
import pytest
import rasterio
from fastapi import FastAPI
from fastapi.testclient import TestClient
from moto.server import ThreadedMotoServer

from astra_stac.auth import store
from astra_stac.auth.keys import Scope
from astra_stac.db.embedded import EmbeddedPostgres
from astra_stac.db.migrate import migrate
from astra_stac.errors import register_error_handlers
from astra_stac.ingest.load import upsert
from astra_stac.ingest.normalize import normalize_item, template_collection
from astra_stac.providers import load_registry
from tests.asset_helpers import (
    COG,
    GEOTIFF,
    app_client,
    asset_settings,
    band_asset,
    download,
    load_scene,
    read_tiff,
    resolve,
    scene_item,
    write_cog,
    write_striped,
)
from tests.conftest import REAL_FIXTURES, _free_port
from tests.test_asset_s3 import BUCKET, s3_settings
from tests.test_ssrf import TILE

ITEM = REAL_FIXTURES / "earth-search/sentinel-2-l2a/S2B_20EPT_20250731_0_L2A.json"
SCENE = "earth-search:S2B_20EPT_20250731_0_L2A"
BOTO_CREDENTIALS = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}


def pg_storage() -> Path:
    """The tests' storage root (set by the `pg_server` fixture)."""
    return Path(os.environ["ASTRA_STORAGE_ROOT"])


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


# --- the S3 store goes away ---------------------------------------------------------------


def test_s3_down_fails_asset_routes_fast_while_the_catalogue_answers(dsn, registry, auth, tmp_path):
    port = _free_port()
    moto = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    moto.start()
    endpoint = f"http://127.0.0.1:{port}"
    s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", **BOTO_CREDENTIALS)
    s3.create_bucket(Bucket=BUCKET)
    for name, writer in (("B04", write_cog), ("B08", write_striped), ("B03", write_cog)):
        s3.upload_file(str(writer(tmp_path / f"{name}.tif")), BUCKET, f"s2/{name}.tif")
    item = scene_item(
        "S2X_S3_FAULT",
        {
            "red": band_asset(f"s3://{BUCKET}/s2/B04.tif", COG, "B04", "red", 10),
            "nir": band_asset(f"s3://{BUCKET}/s2/B08.tif", GEOTIFF, "B08", "nir", 10),
            "green": band_asset(f"s3://{BUCKET}/s2/B03.tif", COG, "B03", "green", 10),
        },
        "astra-test-s3-fault",
    )
    scene = load_scene(dsn, registry, item)
    cache = tmp_path / "cache"
    settings = asset_settings(pg_storage(), cache, s3=s3_settings(endpoint))
    tile = f"/api/v1/scenes/{scene}/tiles/WebMercatorQuad/{TILE.z}/{TILE.x}/{TILE.y}.png"
    with app_client(dsn, settings, [f"s3://{BUCKET}/"]) as client:
        assert resolve(client, auth, scene_id=scene, bands="red").status_code == 200
        preview = f"/api/v1/scenes/{scene}/preview.png"
        assert client.get(preview, params={"bands": "red"}, headers=auth).status_code == 200

        moto.stop()
        for what, request in (
            ("direct", lambda: resolve(client, auth, scene_id=scene, bands="green")),
            ("converted", lambda: resolve(client, auth, scene_id=scene, bands="nir")),
            ("tile", lambda: client.get(tile, params={"bands": "nir"}, headers=auth)),
            ("preview", lambda: client.get(preview, params={"bands": "green"}, headers=auth)),
        ):
            started = time.monotonic()
            response = request()
            assert time.monotonic() - started < 5, what
            assert response.status_code == 502, (what, response.text)
            assert response.json() == {
                "code": "ASSET_UNAVAILABLE",
                "description": response.json()["description"],
            }
        # The catalogue itself is unaffected.
        assert client.get(f"/api/v1/scenes/{scene}", headers=auth).status_code == 200
        search = client.get("/api/v1/search", params={"ids": scene}, headers=auth)
        assert search.status_code == 200 and len(search.json()["features"]) == 1
    assert not [p for p in cache.rglob("*") if p.is_file() and p.name != ".lock"]


# --- the conversion cache runs out of space ------------------------------------------------


@pytest.fixture
def small_cache(tmp_path: Path) -> Iterator[Path]:
    """A 16 MB tmpfs as the conversion cache (needs root and mount; skipped otherwise)."""
    mount_point = tmp_path / "tmpfs"
    mount_point.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(mount_point)],
        capture_output=True,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


def _fill(directory: Path, leave: int) -> Path:
    """Fill the file system of `directory` until `leave` bytes are free."""
    ballast = directory / "ballast"
    free = shutil.disk_usage(directory).free
    with ballast.open("wb") as out:
        out.write(b"\0" * max(0, free - leave))
    return ballast


def test_a_full_cache_gives_507_leaves_nothing_partial_and_recovers(
    dsn, registry, auth, small_cache
):
    source_dir = Path(pg_storage()) / "faults" / uuid.uuid4().hex
    source_dir.mkdir(parents=True)
    striped = write_striped(source_dir / "B08.tif", size=1024)
    item = scene_item(
        "S2X_CACHE_FULL",
        {"nir": band_asset(striped.as_uri(), GEOTIFF, "B08", "nir", 10)},
        "astra-test-cache-full",
    )
    scene = load_scene(dsn, registry, item)
    cache = small_cache / "cache"
    ballast = _fill(small_cache, leave=64 * 1024)
    with app_client(dsn, asset_settings(pg_storage(), cache)) as client:
        full = resolve(client, auth, scene_id=scene, format="cog")
        assert full.status_code == 507, full.text
        assert full.json()["code"] == "INSUFFICIENT_STORAGE"
        leftovers = [p for p in cache.rglob("*") if p.is_file() and p.name != ".lock"]
        assert leftovers == []  # no partial or corrupt file under any name
        assert client.get(f"/api/v1/scenes/{scene}", headers=auth).status_code == 200

        ballast.unlink()  # space is back
        again = resolve(client, auth, scene_id=scene, format="cog")
        assert again.status_code == 200, again.text
        converted = download(client, again.json()["assets"]["B08"]["href"])
    assert converted.status_code == 200
    with rasterio.open(striped) as src:
        assert np.array_equal(read_tiff(converted.content), src.read(1))


# --- ingest killed mid-run ------------------------------------------------------------------


def _stored_ids(dsn: str) -> list[str]:
    with psycopg.connect(dsn) as conn:
        return [row[0] for row in conn.execute("SELECT id FROM pgstac.items").fetchall()]


def test_a_killed_ingest_is_completed_by_running_it_again(empty_dsn, tmp_path):
    template = json.loads(ITEM.read_text())
    count, batch = 4000, 100
    path = tmp_path / "big.ndjson"
    with path.open("w") as out:
        for n in range(count):
            out.write(json.dumps(template | {"id": f"S2B_KILL_{n:05d}"}) + "\n")
    env = {**os.environ, "ASTRA_DATABASE_URL": empty_dsn}
    command = [sys.executable, "-m", "astra_stac.cli", "ingest", str(path), "--json"]
    command += ["--batch-size", str(batch)]
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while len(_stored_ids(empty_dsn)) < 3 * batch:
            assert process.poll() is None, process.communicate()
            assert time.monotonic() < deadline
            time.sleep(0.02)
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
    finally:
        process.kill()
    assert process.returncode == -signal.SIGKILL
    killed_at = len(_stored_ids(empty_dsn))
    assert 3 * batch <= killed_at < count
    assert killed_at % batch == 0  # whole batches only

    rerun = subprocess.run(command, env=env, capture_output=True, check=False, timeout=300)
    assert rerun.returncode == 0, rerun.stderr.decode()[-2000:]
    report = json.loads(rerun.stdout)
    assert report["ok"] is True
    totals = report["totals"]
    assert totals["inserted"] == count - killed_at
    assert totals["unchanged"] + totals["updated"] == killed_at
    assert totals["failed"] == 0
    ids = _stored_ids(empty_dsn)
    assert len(ids) == len(set(ids)) == count


@pytest.mark.parametrize(
    ("error", "database_away"),
    [
        (ConnectionRefusedError(errno.ECONNREFUSED, "Connect call failed"), True),
        (OSError(errno.EHOSTUNREACH, "No route to host"), True),
        (OSError("Multiple exceptions: [Errno 111] …, [Errno 99] …"), True),
        (socket.gaierror(-2, "Name or service not known"), True),
        (PermissionError(errno.EACCES, "Permission denied", "/srv/x.tif"), False),
        (IsADirectoryError(errno.EISDIR, "Is a directory", "/srv"), False),
    ],
)
def test_only_connection_failures_are_reported_as_the_database_being_away(error, database_away):
    """A file error is the server's own (500), not 'the catalogue database is unavailable'."""
    app = FastAPI()
    register_error_handlers(app)

    @app.get("/fails")
    async def fails() -> None:
        raise error

    with TestClient(app, raise_server_exceptions=False) as client:
        response = client.get("/fails")
    body = response.json()
    if database_away:
        assert (response.status_code, body["code"]) == (503, "SERVICE_UNAVAILABLE")
        assert "database" in body["description"]
    else:
        assert (response.status_code, body["code"]) == (500, "INTERNAL_ERROR")
        assert "database" not in body["description"] and "/srv" not in response.text
