"""`astra-stac ingest`: every real provider file in, read back unchanged; remote
APIs with paging; idempotence, dry runs, transactional batches, id clashes, band
names, and each kind of bad input reported where it is."""

from __future__ import annotations

import copy
import functools
import http.server
import io
import json
import math
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from fastapi.testclient import TestClient

from astra_stac.auth import store as key_store
from astra_stac.auth.keys import Scope
from astra_stac.cli import main
from astra_stac.ingest import store as store_module
from astra_stac.ingest.console import run_ingest
from astra_stac.ingest.normalize import prepare_item
from astra_stac.ingest.pipeline import Ingest, IngestOptions
from astra_stac.ingest.report import IngestReport
from astra_stac.ingest.sources import ApiQuery, SourceOptions, SourceReader
from astra_stac.ingest.store import PgstacStore
from astra_stac.providers import load_registry
from tests.conftest import EMPTY_TEMPLATE, REAL_FIXTURES, _fresh_database, make_client

REGISTRY = load_registry()
# Fixture directory → (provider prefix, astra:provider organisation).
PROVIDER_OF_DIR = {
    "cdse": ("sentinel-2", "copernicus"),
    "earth-search": ("earth-search", "element84"),
    "planetary-computer": ("planetary-computer", "microsoft"),
    "usgs-landsatlook": ("landsat", "usgs"),
}
INFERRED_RELS = {"self", "parent", "collection", "root"}
ES_ITEM = REAL_FIXTURES / "earth-search/sentinel-2-l2a/S2A_13TDE_20231008_0_L2A.json"
PC_ITEM = (
    REAL_FIXTURES / "planetary-computer/sentinel-2-l2a"
    "/S2B_MSIL2A_20200501T174909_R141_T13SDV_20200920T031539.json"
)
CDSE_ITEM = (
    REAL_FIXTURES
    / "cdse/sentinel-2-l2a/S2A_MSIL2A_20220217T183431_N0510_R027_T13VEK_20240516T022440.json"
)


def ingest(dsn: str, *sources: Any, **options: Any) -> IngestReport:
    """Run an ingest through the Python API."""
    query = options.pop("query", ApiQuery())
    headers = options.pop("headers", {})
    ingest_options = IngestOptions(**options)
    with (
        PgstacStore(dsn, REGISTRY, dry_run=ingest_options.dry_run) as store,
        SourceReader(SourceOptions(query=query, headers=headers)) as reader,
    ):
        return Ingest(store, REGISTRY, ingest_options).run(reader.read([str(s) for s in sources]))


def _read(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())


def _write(path: Path, document: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document))
    return path


def _rows(dsn: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(dsn) as conn:
        return conn.execute(
            "SELECT collection, id, xmin::text, content FROM pgstac.items ORDER BY 1, 2"
        ).fetchall()


def _collections(dsn: str) -> list[str]:
    with psycopg.connect(dsn) as conn:
        return [r[0] for r in conn.execute("SELECT id FROM pgstac.collections ORDER BY id")]


def _client_with_key(dsn: str) -> tuple[TestClient, dict[str, str]]:
    key = key_store.create_key(dsn, "ingest-tests", Scope.read)[0].secret
    return make_client(dsn), {"Authorization": f"Bearer {key}"}


def _without_added_band_fields(item: dict[str, Any], original: dict[str, Any]) -> None:
    """Drop, in place, the band `name`/common-name fields ingest added to `item`."""

    def strip(bands: Any, before: Any) -> None:
        for index, band in enumerate(bands):
            if isinstance(band, dict):
                kept = before[index] if isinstance(before[index], dict) else {}
                for key in set(band) - set(kept):
                    assert key in ("name", "common_name", "eo:common_name"), key
                    del band[key]

    assets, originals = item.get("assets") or {}, original.get("assets") or {}
    for key, asset in assets.items():
        for field in ("eo:bands", "bands"):
            if field not in asset:
                continue
            if field not in originals[key]:
                del asset[field]
            else:
                strip(asset[field], originals[key][field])
    if "eo:bands" in original.get("properties", {}):
        strip(item["properties"]["eo:bands"], original["properties"]["eo:bands"])


def comparable(read_back: dict[str, Any], original: dict[str, Any]) -> dict[str, Any]:
    """What the read-back item must equal: the original, minus what ingest and the API add."""
    item = copy.deepcopy(read_back)
    item["id"] = item["id"].split(":", 1)[1]
    if "collection" in original:
        item["collection"] = original["collection"]
    else:
        item.pop("collection", None)
    item["properties"] = {k: v for k, v in item["properties"].items() if not k.startswith("astra:")}
    item["links"] = [link for link in item["links"] if link["rel"] not in INFERRED_RELS]
    _without_added_band_fields(item, original)
    return item


def _close(left: Any, right: Any) -> bool:
    """Coordinates equal to the last digit pgstac prints: it writes GeoJSON with at most
    20 decimals, so a coordinate within 1e-5 of zero can lose digits below 1e-20."""
    if isinstance(left, list) and isinstance(right, list):
        return len(left) == len(right) and all(map(_close, left, right))
    if isinstance(left, float | int) and isinstance(right, float | int):
        return math.isclose(left, right, rel_tol=1e-15, abs_tol=1e-19)
    return bool(left == right)


def assert_same_item(read_back: dict[str, Any], original: dict[str, Any]) -> None:
    """The read-back item is the original, apart from what ingest and the API add."""
    mine, sent = comparable(read_back, original), _as_sent(original)
    geometry, expected_geometry = mine.pop("geometry"), sent.pop("geometry")
    assert mine == sent
    assert geometry["type"] == expected_geometry["type"]
    assert _close(geometry["coordinates"], expected_geometry["coordinates"])


def _as_sent(original: dict[str, Any]) -> dict[str, Any]:
    expected = copy.deepcopy(original)
    expected["links"] = [link for link in expected["links"] if link["rel"] not in INFERRED_RELS]
    expected["properties"] = {
        k: v for k, v in expected["properties"].items() if not k.startswith("astra:")
    }
    return expected


# --- every real provider file ----------------------------------------------------------------


def _real_items() -> list[tuple[str, Path, int | None]]:
    found = []
    for path in sorted(REAL_FIXTURES.rglob("*.json")):
        document = _read(path)
        if document["type"] == "Feature":
            found.append((str(path.relative_to(REAL_FIXTURES)), path, None))
        elif document["type"] == "FeatureCollection":
            for index in range(len(document["features"])):
                label = f"{path.relative_to(REAL_FIXTURES)}#{index}"
                found.append((label, path, index))
    return found


REAL_ITEMS = _real_items()


@pytest.fixture(scope="module")
def real_db(pg_server) -> Iterator[tuple[str, IngestReport]]:
    """A database holding everything in tests/data/real, ingested in one run."""
    database = _fresh_database(pg_server, EMPTY_TEMPLATE)
    dsn = next(database)
    report = ingest(dsn, REAL_FIXTURES)
    yield dsn, report
    next(database, None)


@pytest.fixture(scope="module")
def real_client(real_db) -> Iterator[tuple[TestClient, dict[str, str]]]:
    client, headers = _client_with_key(real_db[0])
    with client:
        yield client, headers


def test_every_real_file_ingests(real_db):
    dsn, report = real_db
    assert report.failures == []
    totals = report.totals
    # 44 item files, 3 search-response features (two repeat item files).
    assert (totals.inserted, totals.updated, totals.unchanged, totals.failed) == (45, 0, 2, 0)
    assert set(_collections(dsn)) == {
        "cdse-sentinel-2-l2a",
        "es-landsat-c2-l2",
        "es-sentinel-2-c1-l2a",
        "es-sentinel-2-l2a",
        "pc-landsat-c2-l2",
        "pc-sentinel-2-l2a",
        "usgs-landsat-c2l2-sr",
    }
    # The provider's own collection documents where the fixtures have them; USGS has none.
    kinds = {c.id: c.template for c in report.collections.values()}
    assert kinds["usgs-landsat-c2l2-sr"] is True
    assert kinds["cdse-sentinel-2-l2a"] is False
    assert len(_rows(dsn)) == 45


@pytest.mark.parametrize(("label", "path", "index"), REAL_ITEMS, ids=[i[0] for i in REAL_ITEMS])
def test_real_item_reads_back_as_ingested(real_client, label, path, index):
    client, headers = real_client
    document = _read(path)
    original = document if index is None else document["features"][index]
    prefix, organisation = PROVIDER_OF_DIR[path.relative_to(REAL_FIXTURES).parts[0]]
    response = client.get(f"/api/v1/scenes/{prefix}:{original['id']}", headers=headers)
    assert response.status_code == 200, response.text
    scene = response.json()
    assert scene["id"] == f"{prefix}:{original['id']}"
    assert scene["properties"]["astra:provider"] == organisation
    assert scene["properties"]["astra:collection"] == scene["collection"]
    assert REGISTRY.provider_of_collection(scene["collection"]).prefix == prefix
    assert_same_item(scene, original)


def _band_assets(item: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    for key, asset in item["assets"].items():
        for band in asset.get("eo:bands", []) + asset.get("bands", []):
            if isinstance(band, dict):
                yield key, band


@pytest.mark.parametrize(("label", "path", "index"), REAL_ITEMS, ids=[i[0] for i in REAL_ITEMS])
def test_every_declared_band_has_a_name_and_common_name(real_client, label, path, index):
    client, headers = real_client
    document = _read(path)
    original = document if index is None else document["features"][index]
    prefix, _ = PROVIDER_OF_DIR[path.relative_to(REAL_FIXTURES).parts[0]]
    scene = client.get(f"/api/v1/scenes/{prefix}:{original['id']}", headers=headers).json()
    for key, band in _band_assets(scene):
        assert band.get("name"), key
        if band["name"].upper() not in ("SCL", "AOT", "WVP"):
            assert band.get("common_name") or band.get("eo:common_name"), (key, band)


@pytest.mark.parametrize(
    ("organisation", "prefix"),
    [
        ("usgs", "landsat"),
        ("copernicus", "sentinel-2"),
        ("element84", "earth-search"),
        ("microsoft", "planetary-computer"),
    ],
)
def test_search_by_astra_provider_finds_each_providers_items(real_client, organisation, prefix):
    client, headers = real_client
    expected = set()
    for _, path, index in REAL_ITEMS:
        if PROVIDER_OF_DIR[path.relative_to(REAL_FIXTURES).parts[0]][0] == prefix:
            document = _read(path)
            original = document if index is None else document["features"][index]
            expected.add(f"{prefix}:{original['id']}")
    body = {
        "filter-lang": "cql2-json",
        "filter": {"op": "=", "args": [{"property": "astra:provider"}, organisation]},
        "limit": 100,
    }
    response = client.post("/api/v1/search", json=body, headers=headers)
    assert response.status_code == 200, response.text
    assert {f["id"] for f in response.json()["features"]} == expected


# --- band names --------------------------------------------------------------------------


def test_band_names_come_from_the_band_table_when_the_item_has_none():
    item = _read(PC_ITEM)
    for asset in item["assets"].values():
        asset.pop("eo:bands", None)
    provider = REGISTRY.providers["planetary-computer"]
    prepare_item(item, provider, "pc-sentinel-2-l2a", REGISTRY)
    assert item["assets"]["B04"]["eo:bands"] == [{"name": "B04", "common_name": "red"}]
    assert item["assets"]["B8A"]["eo:bands"] == [{"name": "B8A", "common_name": "nir08"}]
    assert item["assets"]["B08"]["eo:bands"] == [{"name": "B08", "common_name": "nir"}]
    # Not one band: the true-colour image and the scene classification get nothing.
    assert "eo:bands" not in item["assets"]["visual"]
    assert "eo:bands" not in item["assets"]["SCL"]


def test_stac_1_1_items_get_bands_with_eo_common_name():
    item = _read(CDSE_ITEM)
    for asset in item["assets"].values():
        asset.pop("bands", None)
    prepare_item(item, REGISTRY.providers["sentinel-2"], "cdse-sentinel-2-l2a", REGISTRY)
    assert item["assets"]["B04_10m"]["bands"] == [{"name": "B04", "eo:common_name": "red"}]
    assert item["assets"]["B8A_20m"]["bands"] == [{"name": "B8A", "eo:common_name": "nir08"}]
    assert not any("eo:bands" in asset for asset in item["assets"].values())


def test_existing_band_fields_are_kept_and_missing_ones_filled():
    item = _read(PC_ITEM)
    prepare_item(item, REGISTRY.providers["planetary-computer"], "pc-sentinel-2-l2a", REGISTRY)
    # Planetary Computer calls B8A "rededge": kept. It gives B09 no common name: filled.
    assert item["assets"]["B8A"]["eo:bands"][0]["common_name"] == "rededge"
    assert item["assets"]["B09"]["eo:bands"][0] == {
        **_read(PC_ITEM)["assets"]["B09"]["eo:bands"][0],
        "common_name": "nir09",
    }


def test_landsat_band_table_is_chosen_by_platform():
    path = REAL_FIXTURES / "usgs-landsatlook/landsat-c2l2-sr"
    item = _read(path / "LT05_L2SP_010067_19860424_20200918_02_T2_SR.json")
    for asset in item["assets"].values():
        asset.pop("eo:bands", None)
    prepare_item(item, REGISTRY.providers["landsat"], "usgs-landsat-c2l2-sr", REGISTRY)
    # TM band 4 is the near infrared (OLI's B04 would be red).
    assert item["assets"]["nir08"]["eo:bands"] == [{"name": "B04", "common_name": "nir"}]


def test_added_band_names_are_stored(empty_dsn, tmp_path):
    item = _read(PC_ITEM)
    for asset in item["assets"].values():
        asset.pop("eo:bands", None)
    ingest(empty_dsn, _write(tmp_path / "item.json", item))
    client, headers = _client_with_key(empty_dsn)
    with client:
        scene = client.get(f"/api/v1/scenes/planetary-computer:{item['id']}", headers=headers)
    assert scene.json()["assets"]["B04"]["eo:bands"] == [{"name": "B04", "common_name": "red"}]


# --- idempotence, updates, dry runs ------------------------------------------------------------


def test_reingesting_changes_nothing(empty_dsn):
    first = ingest(empty_dsn, REAL_FIXTURES / "earth-search", REAL_FIXTURES / "cdse")
    before = _rows(empty_dsn)
    again = ingest(empty_dsn, REAL_FIXTURES / "earth-search", REAL_FIXTURES / "cdse")
    assert first.totals.inserted == 21
    assert again.ok
    assert (again.totals.inserted, again.totals.updated, again.totals.failed) == (0, 0, 0)
    assert again.totals.unchanged == first.totals.total
    assert all(c.outcome.value == "unchanged" for c in again.collections.values())
    assert _rows(empty_dsn) == before  # same rows, same versions: nothing rewritten


def test_a_changed_upstream_item_is_updated(empty_dsn, tmp_path):
    ingest(empty_dsn, REAL_FIXTURES / "earth-search/sentinel-2-l2a")
    item = _read(ES_ITEM)
    item["properties"]["eo:cloud_cover"] = 42.5
    item["assets"]["red"]["href"] = "https://sentinel-cogs.s3.us-west-2.amazonaws.com/new/B04.tif"
    report = ingest(empty_dsn, _write(tmp_path / "changed.json", item))
    assert (report.totals.inserted, report.totals.updated, report.totals.unchanged) == (0, 1, 0)
    client, headers = _client_with_key(empty_dsn)
    with client:
        scene = client.get(f"/api/v1/scenes/earth-search:{item['id']}", headers=headers).json()
    assert scene["properties"]["eo:cloud_cover"] == 42.5
    assert scene["assets"]["red"]["href"].endswith("/new/B04.tif")
    assert_same_item(scene, item)


def test_dry_run_reports_without_writing(empty_dsn, tmp_path):
    report = ingest(empty_dsn, REAL_FIXTURES, dry_run=True)
    assert report.ok and report.dry_run
    assert (report.totals.inserted, report.totals.unchanged) == (45, 2)
    assert len(report.collections) == 7
    assert _collections(empty_dsn) == [] and _rows(empty_dsn) == []

    ingest(empty_dsn, REAL_FIXTURES / "earth-search/sentinel-2-l2a")
    before = _rows(empty_dsn)
    item = _read(ES_ITEM)
    item["properties"]["eo:cloud_cover"] = 1.0
    changed = _write(tmp_path / "changed.json", item)
    new = REAL_FIXTURES / "earth-search/sentinel-2-c1-l2a/S2A_T13TDE_20240412T175055_L2A.json"
    report = ingest(empty_dsn, changed, ES_ITEM, new, dry_run=True)
    # The original after its changed copy: compared with the copy, so updated again.
    assert (report.totals.inserted, report.totals.updated) == (1, 2)
    assert report.collections["es-sentinel-2-c1-l2a"].outcome.value == "inserted"
    assert _rows(empty_dsn) == before


def test_an_item_repeated_in_one_run_is_stored_once(empty_dsn, tmp_path):
    item = _read(ES_ITEM)
    later = copy.deepcopy(item)
    later["properties"]["eo:cloud_cover"] = 3.0
    lines = "\n".join(json.dumps(i) for i in (item, later)) + "\n"
    path = tmp_path / "twice.ndjson"
    path.write_text(lines)
    report = ingest(empty_dsn, path)
    assert (report.totals.inserted, report.totals.updated) == (1, 1)
    ((*_, content),) = _rows(empty_dsn)
    assert content["properties"]["eo:cloud_cover"] == 3.0


# --- transactions ---------------------------------------------------------------------------


def test_interrupted_ingest_keeps_whole_batches_only(empty_dsn, monkeypatch):
    real_dehydrate = store_module.dehydrate
    calls = {"n": 0}

    def interrupting(base: dict, item: dict) -> dict:
        calls["n"] += 1
        if calls["n"] == 13:  # inside the third batch's COPY
            raise KeyboardInterrupt
        return real_dehydrate(base, item)

    monkeypatch.setattr(store_module, "dehydrate", interrupting)
    report = ingest(empty_dsn, REAL_FIXTURES / "planetary-computer", batch_size=5)
    assert report.interrupted and not report.ok
    assert report.totals.inserted == 10
    assert len(_rows(empty_dsn)) == 10


@pytest.mark.parametrize("signal_number", [signal.SIGINT, signal.SIGKILL], ids=["ctrl-c", "kill"])
def test_a_stopped_ingest_process_leaves_whole_batches(empty_dsn, tmp_path, signal_number):
    template = _read(ES_ITEM)
    template["assets"] = {k: template["assets"][k] for k in ("red", "nir", "thumbnail")}
    path = tmp_path / "many.ndjson"
    with path.open("w") as out:
        for n in range(6000):
            out.write(json.dumps(template | {"id": f"S2A_STOP_{n:05d}"}) + "\n")
    env = {**os.environ, "ASTRA_DATABASE_URL": empty_dsn}
    command = [sys.executable, "-m", "astra_stac.cli", "ingest", str(path), "--batch-size", "50"]
    # As on a terminal: a shell starts background jobs (CI included) with SIGINT ignored.
    process = subprocess.Popen(
        command,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        deadline = time.monotonic() + 60
        while len(_rows(empty_dsn)) < 100:
            assert process.poll() is None, process.communicate()
            assert time.monotonic() < deadline
            time.sleep(0.02)
        process.send_signal(signal_number)
        process.wait(timeout=30)
    finally:
        process.kill()
    stored = len(_rows(empty_dsn))
    assert 100 <= stored < 6000
    assert stored % 50 == 0  # whole batches only
    if signal_number == signal.SIGINT:
        assert process.returncode == 130
        assert "the batch in flight was rolled back" in process.stderr.read().decode()


def test_a_batch_the_database_refuses_is_narrowed_to_the_bad_item(empty_dsn, monkeypatch):
    real_clashes = PgstacStore._clashes

    def refusing(self: PgstacStore, cur: Any, items: list) -> Any:
        # After the rows were dehydrated and copied: the retries reuse them.
        if any(i.id.startswith("S2B_MSIL2A_20200606") for i in items):
            raise psycopg.errors.DataError("value out of range")
        return real_clashes(self, cur, items)

    monkeypatch.setattr(PgstacStore, "_clashes", refusing)
    report = ingest(empty_dsn, REAL_FIXTURES / "planetary-computer/sentinel-2-l2a", batch_size=50)
    assert report.totals.inserted == 10
    (failure,) = report.failures
    assert failure.id.startswith("S2B_MSIL2A_20200606")
    assert "refused by the database: value out of range" in failure.reason
    assert failure.location.endswith(".json")
    client, headers = _client_with_key(empty_dsn)
    with client:
        for path in sorted((REAL_FIXTURES / "planetary-computer/sentinel-2-l2a").glob("*")):
            original = _read(path)
            if original["id"].startswith("S2B_MSIL2A_20200606"):
                continue
            scene = client.get(
                f"/api/v1/scenes/planetary-computer:{original['id']}", headers=headers
            )
            assert_same_item(scene.json(), original)


# --- id clashes ------------------------------------------------------------------------------


def test_same_id_in_two_collections_of_one_provider_is_refused(empty_dsn, tmp_path):
    item = _read(ES_ITEM)
    other = copy.deepcopy(item)
    other["collection"] = "sentinel-2-c1-l2a"
    report = ingest(
        empty_dsn, _write(tmp_path / "a.json", item), _write(tmp_path / "b.json", other)
    )
    assert report.totals.inserted == 1
    (failure,) = report.failures
    assert failure.location == str(tmp_path / "b.json")
    assert "id clash" in failure.reason and "es-sentinel-2-l2a" in failure.reason

    # Across runs, the stored item is what it clashes with.
    again = ingest(empty_dsn, tmp_path / "b.json")
    (failure,) = again.failures
    assert "id clash" in failure.reason and "'es-sentinel-2-l2a'" in failure.reason
    assert [r[0] for r in _rows(empty_dsn)] == ["es-sentinel-2-l2a"]


def test_same_id_at_two_providers_is_fine(empty_dsn):
    ingest(empty_dsn, ES_ITEM)
    report = ingest(empty_dsn, ES_ITEM, provider="planetary-computer")
    assert report.ok and report.totals.inserted == 1
    assert [r[0] for r in _rows(empty_dsn)] == ["es-sentinel-2-l2a", "pc-sentinel-2-l2a"]


# --- sources -------------------------------------------------------------------------------


def test_ndjson_feature_collection_and_array_sources(empty_dsn, tmp_path):
    items = [_read(p) for p in sorted((REAL_FIXTURES / "earth-search/sentinel-2-l2a").glob("*"))]
    ndjson = tmp_path / "items.ndjson"
    ndjson.write_text("".join(json.dumps(i) + "\n" for i in items[:4]))
    collection = _write(tmp_path / "fc.json", {"type": "FeatureCollection", "features": items[4:8]})
    array = _write(tmp_path / "array.json", items[8:])
    report = ingest(empty_dsn, ndjson, collection, array)
    assert report.ok and report.totals.inserted == len(items) == 12


def test_static_catalog_is_followed_through_its_links(empty_dsn, tmp_path):
    collection = _read(REAL_FIXTURES / "earth-search/collections/sentinel-2-l2a.json")
    collection["links"] = [
        {"rel": "root", "href": "../catalog.json"},
        {"rel": "item", "href": "./items/one.json"},
        {"rel": "item", "href": "./items/two.json"},
    ]
    one = _read(ES_ITEM)
    two = _read(REAL_FIXTURES / "earth-search/sentinel-2-l2a/S2B_13SDV_20200501_0_L2A.json")
    del two["collection"]  # the catalog says which collection it is in
    root = tmp_path / "catalog"
    _write(root / "s2/items/one.json", one)
    _write(root / "s2/items/two.json", two)
    _write(root / "s2/collection.json", collection)
    _write(
        root / "catalog.json",
        {
            "type": "Catalog",
            "stac_version": "1.0.0",
            "id": "mine",
            "description": "a static catalog",
            "links": [{"rel": "child", "href": "./s2/collection.json"}],
        },
    )
    report = ingest(empty_dsn, root / "catalog.json")
    assert report.ok, report.failures
    assert report.totals.inserted == 2
    assert report.collections["es-sentinel-2-l2a"].template is False
    # Walking the directory instead reads each file once.
    again = ingest(empty_dsn, root)
    assert again.ok and again.totals.unchanged == 2 and again.totals.total == 2


def test_a_collection_after_its_items_replaces_the_template(empty_dsn, tmp_path):
    # CDSE's collection template names no CDSE host: only its items can place it.
    collection = _read(REAL_FIXTURES / "cdse/collections/sentinel-2-l2a.json")
    path = tmp_path / "late.ndjson"
    path.write_text(json.dumps(_read(CDSE_ITEM)) + "\n" + json.dumps(collection) + "\n")
    report = ingest(empty_dsn, path)
    assert report.ok, report.failures
    assert report.collections["cdse-sentinel-2-l2a"].template is False
    with psycopg.connect(empty_dsn) as conn:
        (title,) = conn.execute(
            "SELECT content->>'title' FROM pgstac.collections WHERE id = 'cdse-sentinel-2-l2a'"
        ).fetchone()
    assert title == collection["title"]
    client, headers = _client_with_key(empty_dsn)
    with client:
        scene = client.get(
            f"/api/v1/scenes/sentinel-2:{_read(CDSE_ITEM)['id']}", headers=headers
        ).json()
    assert_same_item(scene, _read(CDSE_ITEM))


def test_static_catalog_over_http(empty_dsn, tmp_path):
    collection = _read(REAL_FIXTURES / "planetary-computer/collections/sentinel-2-l2a.json")
    collection["links"] = [{"rel": "item", "href": "items/one.json"}]
    _write(tmp_path / "collection.json", collection)
    _write(tmp_path / "items/one.json", _read(PC_ITEM))
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/collection.json"
        report = ingest(empty_dsn, url)
    finally:
        server.shutdown()
    assert report.ok, report.failures
    assert report.totals.inserted == 1
    assert report.collections["pc-sentinel-2-l2a"].template is False


# --- remote STAC API ---------------------------------------------------------------------------


def _bearer(live_server) -> dict[str, str]:
    return {"Authorization": f"Bearer {live_server.key}"}


def test_ingest_from_a_stac_api_follows_every_page(live_server, empty_dsn):
    headers = _bearer(live_server)
    report = ingest(empty_dsn, live_server.url, headers=headers, query=ApiQuery(page_size=2))
    assert report.ok, report.failures
    assert report.totals.inserted == 7  # every demo scene, two per page
    client, auth = _client_with_key(empty_dsn)
    import httpx

    with client, httpx.Client(headers=headers) as remote:
        for (provider, _), counts in report.by_collection.items():
            assert counts.inserted >= 1
        for row in _rows(empty_dsn):
            collection, original_id = row[0], row[1]
            prefix = REGISTRY.provider_of_collection(collection).prefix
            scene_id = f"{prefix}:{original_id}"
            mine = client.get(f"/api/v1/scenes/{scene_id}", headers=auth).json()
            theirs = remote.get(f"{live_server.url}/scenes/{scene_id}").json()
            # The same scene under the same id (ids and collections were not re-prefixed).
            assert mine["id"] == theirs["id"] == scene_id
            assert mine["collection"] == theirs["collection"] == collection
            assert_same_item(mine, theirs | {"id": original_id})
    again = ingest(empty_dsn, live_server.url, headers=headers, query=ApiQuery(page_size=3))
    assert again.ok and again.totals.unchanged == 7


def test_ingest_from_a_stac_api_with_query_options(live_server, empty_dsn):
    headers = _bearer(live_server)
    query = ApiQuery(collections=["es-sentinel-2-l2a", "es-landsat-c2-l2"], page_size=1)
    report = ingest(empty_dsn, live_server.url, headers=headers, query=query)
    assert report.ok
    assert set(_collections(empty_dsn)) == {"es-sentinel-2-l2a", "es-landsat-c2-l2"}
    limited = ingest(
        empty_dsn, live_server.url, headers=headers, query=ApiQuery(max_items=3, page_size=2)
    )
    assert limited.totals.total == 3
    filtered = ingest(
        empty_dsn,
        live_server.url,
        headers=headers,
        query=ApiQuery(filter="\"astra:provider\" = 'usgs'"),
        dry_run=True,
    )
    assert filtered.totals.total == 1, filtered.failures


def test_a_stac_api_that_refuses_the_key_is_reported(live_server, empty_dsn):
    report = ingest(empty_dsn, live_server.url, headers={"Authorization": "Bearer nope"})
    assert not report.ok
    assert "HTTP 401" in report.failures[0].reason


# --- bad input -----------------------------------------------------------------------------


def _one_failure(report: IngestReport) -> Any:
    assert len(report.failures) == 1, report.failures
    return report.failures[0]


def test_invalid_json_file(empty_dsn, tmp_path):
    broken = tmp_path / "broken.json"
    broken.write_text('{"type": "Feature", "id": ')
    report = ingest(empty_dsn, broken, ES_ITEM)
    failure = _one_failure(report)
    assert failure.location == str(broken)
    assert failure.reason.startswith("invalid JSON")
    assert report.totals.inserted == 1


def test_invalid_ndjson_line_is_reported_with_its_line(empty_dsn, tmp_path):
    items = [_read(p) for p in sorted((REAL_FIXTURES / "earth-search/sentinel-2-l2a").glob("*"))]
    path = tmp_path / "items.ndjson"
    path.write_text(json.dumps(items[0]) + "\n{not json\n\n" + json.dumps(items[1]) + "\n")
    report = ingest(empty_dsn, path)
    failure = _one_failure(report)
    assert failure.location == f"{path}:2"
    assert failure.reason.startswith("invalid JSON")
    assert report.totals.inserted == 2


def test_json_that_is_not_stac(empty_dsn, tmp_path):
    report = ingest(empty_dsn, _write(tmp_path / "other.json", {"hello": "world"}))
    assert "not a STAC object" in _one_failure(report).reason


def test_feature_collection_member_reported_by_index(empty_dsn, tmp_path):
    bad = _read(ES_ITEM) | {"id": "S2A_BAD_ONE"}
    bad["links"] = [{"rel": "self"}]  # a link without href
    path = _write(
        tmp_path / "fc.json", {"type": "FeatureCollection", "features": [_read(ES_ITEM), bad]}
    )
    failure = _one_failure(ingest(empty_dsn, path))
    assert failure.location == f"{path}#features[1]"
    assert failure.id == "S2A_BAD_ONE"
    assert failure.reason.startswith("not a valid STAC item") and "links.0.href" in failure.reason


def test_item_failing_stac_pydantic(empty_dsn, tmp_path):
    item = _read(ES_ITEM) | {"bbox": "everywhere"}
    failure = _one_failure(ingest(empty_dsn, _write(tmp_path / "i.json", item)))
    assert failure.reason.startswith("not a valid STAC item") and "bbox" in failure.reason


def test_item_without_geometry(empty_dsn, tmp_path):
    item = _read(ES_ITEM) | {"geometry": None}
    failure = _one_failure(ingest(empty_dsn, _write(tmp_path / "i.json", item)))
    assert "no geometry" in failure.reason


def test_item_without_datetime(empty_dsn, tmp_path):
    item = _read(ES_ITEM)
    item["properties"]["datetime"] = None
    failure = _one_failure(ingest(empty_dsn, _write(tmp_path / "i.json", item)))
    assert "no datetime" in failure.reason


def test_item_with_unreadable_datetime(empty_dsn, tmp_path):
    item = _read(ES_ITEM)
    item["properties"]["datetime"] = "yesterday"
    failure = _one_failure(ingest(empty_dsn, _write(tmp_path / "i.json", item)))
    assert "RFC 3339" in failure.reason


def test_item_in_an_unknown_collection(empty_dsn, tmp_path):
    item = _read(ES_ITEM) | {"collection": "mystery"}
    failure = _one_failure(ingest(empty_dsn, _write(tmp_path / "i.json", item)))
    assert "unknown collection 'mystery'" in failure.reason
    assert "collection.json" in failure.reason
    assert _collections(empty_dsn) == []


def test_item_whose_provider_cannot_be_told(empty_dsn, tmp_path):
    item = _read(ES_ITEM) | {"collection": "mystery", "links": []}
    for asset in item["assets"].values():
        asset["href"] = "https://example.com/" + asset["href"].rsplit("/", 1)[-1]
    failure = _one_failure(ingest(empty_dsn, _write(tmp_path / "i.json", item)))
    assert "cannot tell which provider" in failure.reason
    assert "--provider" in failure.reason
    for prefix in REGISTRY.providers:
        assert prefix in failure.reason


def test_item_id_that_cannot_form_a_scene_id(empty_dsn, tmp_path):
    item = _read(ES_ITEM) | {"id": "has a space"}
    failure = _one_failure(ingest(empty_dsn, _write(tmp_path / "i.json", item)))
    assert "scene id" in failure.reason


def test_missing_source(empty_dsn, tmp_path):
    failure = _one_failure(ingest(empty_dsn, tmp_path / "nowhere.json", ES_ITEM))
    assert failure.reason == "no such file or directory"


def test_own_data_needs_its_collection(empty_dsn, tmp_path):
    item = _read(ES_ITEM) | {"collection": "my-scenes", "links": []}
    path = _write(tmp_path / "i.json", item)
    failure = _one_failure(ingest(empty_dsn, path, provider="local"))
    assert "unknown collection 'my-scenes'" in failure.reason
    collection = _read(REAL_FIXTURES / "earth-search/collections/sentinel-2-l2a.json")
    collection |= {"id": "my-scenes", "links": []}
    coll_path = _write(tmp_path / "collection.json", collection)
    report = ingest(empty_dsn, coll_path, path, provider="local")
    assert report.ok and report.totals.inserted == 1
    assert _collections(empty_dsn) == ["my-scenes"]


# --- the command ------------------------------------------------------------------------------


@pytest.fixture
def configured(monkeypatch, empty_dsn):
    monkeypatch.setenv("ASTRA_DATABASE_URL", empty_dsn)
    return empty_dsn


def test_cli_exit_zero_and_one_line_when_piped(configured, capsys):
    assert main(["ingest", str(REAL_FIXTURES / "cdse")]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1 and "1 were inserted" in out[0]


def test_cli_exit_one_when_anything_failed(configured, capsys, tmp_path):
    broken = tmp_path / "broken.json"
    broken.write_text("{")
    assert main(["ingest", str(broken), str(ES_ITEM)]) == 1
    captured = capsys.readouterr()
    assert "1 were inserted" in captured.out
    assert f"failed: {broken}:" in captured.err


def test_cli_json_report(configured, capsys, tmp_path):
    item = _read(ES_ITEM) | {"geometry": None}
    path = _write(tmp_path / "i.json", item)
    assert main(["ingest", "--json", str(path), str(REAL_FIXTURES / "cdse")]) == 1
    report = json.loads(capsys.readouterr().out)
    assert report["totals"] == {"inserted": 1, "updated": 0, "unchanged": 0, "failed": 1}
    assert report["failures"][0]["location"] == str(path)
    assert {"provider": "sentinel-2", "collection": "cdse-sentinel-2-l2a"}.items() <= report[
        "by_collection"
    ][-1].items()


def test_cli_dry_run_writes_nothing(configured, capsys):
    assert main(["ingest", "--dry-run", str(REAL_FIXTURES / "cdse")]) == 0
    assert "dry run" in capsys.readouterr().out
    assert _collections(configured) == []


def test_cli_unknown_provider_is_a_usage_error(configured, capsys):
    assert main(["ingest", "--provider", "nope", str(ES_ITEM)]) == 2
    err = capsys.readouterr().err
    assert "unknown provider 'nope'" in err and "earth-search" in err


def test_cli_api_options_need_an_api(configured, capsys):
    assert main(["ingest", "--collections", "x", str(ES_ITEM)]) == 1
    assert "STAC API URLs only" in capsys.readouterr().err


def test_cli_bad_bbox_is_rejected_by_argparse(configured, capsys):
    with pytest.raises(SystemExit) as exited:
        main(["ingest", "--bbox", "1,2", "http://localhost/"])
    assert exited.value.code == 2


def test_cli_ingests_from_a_stac_api(configured, capsys, live_server):
    code = main(
        [
            "ingest",
            live_server.url,
            "--header",
            f"Authorization: Bearer {live_server.key}",
            "--page-size",
            "2",
            "--max-items",
            "5",
            "--json",
        ]
    )
    assert code == 0
    assert json.loads(capsys.readouterr().out)["totals"]["inserted"] == 5


def test_cli_bad_filter_is_reported(configured, capsys, live_server):
    code = main(["ingest", live_server.url, "--filter", "platform = "])
    assert code == 1
    assert "--filter is not valid CQL2" in capsys.readouterr().err


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_terminal_gets_a_progress_bar_and_a_summary_table(empty_dsn, tmp_path):
    items = [_read(p) for p in sorted((REAL_FIXTURES / "earth-search/sentinel-2-l2a").glob("*"))]
    path = tmp_path / "items.ndjson"
    path.write_text("".join(json.dumps(i) + "\n" for i in items) + "{oops\n")
    out, err = _Terminal(), _Terminal()
    code = run_ingest(
        empty_dsn, REGISTRY, [str(path)], IngestOptions(), SourceOptions(), stdout=out, stderr=err
    )
    assert code == 1
    table = out.getvalue()
    assert "PROVIDER" in table and "es-sentinel-2-l2a" in table
    assert "collection es-sentinel-2-l2a (earth-search): inserted from the provider template" in (
        table
    )
    assert "12 were inserted" in table
    progress = err.getvalue()
    assert "/13 [" in progress and "items/s" in progress  # total known for NDJSON: an ETA
    assert f"failed: {path}:13:" in progress


# --- queryables -------------------------------------------------------------------------------

SCENE_QUERYABLES = {
    "astra:provider": "string",
    "astra:collection": "string",
    "eo:cloud_cover": "number",
    "platform": "string",
    "constellation": "string",
    "gsd": "number",
}


@pytest.mark.parametrize(
    "path", ["/api/v1/queryables", "/api/v1/collections/es-sentinel-2-l2a/queryables"]
)
def test_queryables_list_the_scene_fields(client, auth, path):
    response = client.get(path, headers=auth)
    assert response.status_code == 200, response.text
    properties = response.json()["properties"]
    for name, kind in SCENE_QUERYABLES.items():
        assert properties[name]["type"] == kind, name
        assert "$ref" not in properties[name]
    assert properties["eo:cloud_cover"]["minimum"] == 0
