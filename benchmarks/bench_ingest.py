#!/usr/bin/env python
"""Bulk ingest: `astra-stac ingest` against `pypgstac load` on the same NDJSON file.

What it does, in order:

1. starts its own embedded PostgreSQL (`astra_stac.db.embedded`) under a temporary
   directory in /tmp and creates two empty, migrated databases;
2. writes `--items` synthetic Earth Search Sentinel-2 L2A items (the real fixture
   item with a new id, datetime and footprint each; 30+ assets with `eo:bands`,
   `raster:bands` and projection fields) as one NDJSON file, spread over 2021-2024;
3. loads the upstream collection in both databases (pypgstac needs it to exist;
   astra-stac reads the same collection.json in the same command);
4. times, as a user runs them, on the file cut into `--rounds` parts, the two
   commands taking turns part by part (so background load on a shared machine hits
   both alike; each loads into its own database, which grows alike):
   - `astra-stac ingest <collection.json> <part.ndjson>` (detects the provider,
     validates every item with stac-pydantic, adds band names, classifies each item
     against what is stored, writes 2,000 items per transaction);
   - `pypgstac load items <part.ndjson> --method upsert` (no validation, no
     classification, one transaction per partition and chunk);
5. runs astra-stac again on the whole file (every item unchanged), and prints
   items/s and the ratio astra / pypgstac; writes
   `benchmarks/results/ingest-<N>.md` and `.json`.

    .venv/bin/python benchmarks/bench_ingest.py                # 100,000 items
    .venv/bin/python benchmarks/bench_ingest.py --items 10000
"""

from __future__ import annotations

import argparse
import copy
import datetime as dt
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson
import psycopg

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from astra_stac.db.embedded import EmbeddedPostgres  # noqa: E402
from astra_stac.db.migrate import migrate  # noqa: E402

REAL = ROOT / "tests" / "data" / "real" / "earth-search"
TEMPLATE_ITEM = REAL / "sentinel-2-l2a" / "S2A_13TDE_20231008_0_L2A.json"
COLLECTION = REAL / "collections" / "sentinel-2-l2a.json"
BIN = Path(sys.executable).parent
RESULTS = ROOT / "benchmarks" / "results"


def write_items(path: Path, first: int, count: int, total: int) -> None:
    """Items `first` … `first + count - 1` of `total` distinct items derived from one
    real Earth Search item."""
    template = json.loads(TEMPLATE_ITEM.read_text())
    start = dt.datetime(2021, 1, 1, 10, 30, tzinfo=dt.UTC)
    with path.open("wb") as out:
        for n in range(first, first + count):
            item = copy.deepcopy(template)
            item["id"] = f"S2A_{n:07d}_BENCH_0_L2A"
            when = start + dt.timedelta(hours=n * 35040 / max(total, 1))
            stamp = when.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
            props = item["properties"]
            props["datetime"] = props["created"] = props["updated"] = stamp
            props["eo:cloud_cover"] = round((n * 7.31) % 100, 4)
            shift = (n % 3600) / 100.0
            for ring in item["geometry"]["coordinates"]:
                for point in ring:
                    point[0] = round(point[0] - 100 + shift, 9)
            west, south, east, north = item["bbox"]
            item["bbox"] = [west - 100 + shift, south, east - 100 + shift, north]
            for asset in item["assets"].values():
                asset["href"] = asset["href"].replace("S2A_13TDE_20231008_0_L2A", item["id"])
            out.write(orjson.dumps(item) + b"\n")


def create_database(cluster: EmbeddedPostgres, name: str) -> str:
    with psycopg.connect(cluster.dsn("postgres"), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
        conn.execute(f'CREATE DATABASE "{name}"')
    dsn = cluster.dsn(name)
    migrate(dsn)
    return dsn


def item_count(dsn: str) -> int:
    with psycopg.connect(dsn) as conn:
        row = conn.execute("SELECT count(*) FROM pgstac.items").fetchone()
    return int(row[0]) if row else 0


def timed(command: list[str], env: dict[str, str] | None = None) -> tuple[float, str]:
    started = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        sys.exit(f"{command[0]} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    return elapsed, done.stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=100_000)
    parser.add_argument("--batch-size", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=2, help="parts the two take turns on")
    args = parser.parse_args()

    base = Path(tempfile.mkdtemp(prefix="astra-bench-ingest-", dir="/tmp"))
    os.chmod(base, 0o755)
    cluster = EmbeddedPostgres(base / "db")
    cluster.start()
    try:
        print(f"writing {args.items:,} items in {args.rounds} NDJSON files …", flush=True)
        per_part = -(-args.items // args.rounds)
        parts = []
        for number in range(args.rounds):
            first = number * per_part
            count = min(per_part, args.items - first)
            if count > 0:
                parts.append(base / f"items-{number}.ndjson")
                write_items(parts[-1], first, count, args.items)
        size_mb = sum(p.stat().st_size for p in parts) / 1e6

        astra_dsn = create_database(cluster, "astra_ingest")
        plain_dsn = create_database(cluster, "pypgstac_load")
        collection = base / "collection.json"
        collection.write_text(COLLECTION.read_text())
        subprocess.run(
            [str(BIN / "pypgstac"), "load", "collections", str(collection), "--dsn", plain_dsn],
            check=True,
            capture_output=True,
        )

        env = {**os.environ, "ASTRA_DATABASE_URL": astra_dsn}

        def astra(*paths: Path) -> list[str]:
            return [
                str(BIN / "astra-stac"),
                "ingest",
                str(collection),
                *map(str, paths),
                "--json",
                "--batch-size",
                str(args.batch_size),
            ]

        def plain(path: Path) -> list[str]:
            return [
                str(BIN / "pypgstac"),
                "load",
                "items",
                str(path),
                "--dsn",
                plain_dsn,
                "--method",
                "upsert",
            ]

        astra_seconds = plain_seconds = 0.0
        inserted = 0
        for number, part in enumerate(parts):
            runs = [("astra", astra(part)), ("plain", plain(part))]
            for name, command in runs if number % 2 == 0 else runs[::-1]:
                print(f"round {number + 1}/{len(parts)}: {name} …", flush=True)
                seconds, out = timed(command, env if name == "astra" else None)
                if name == "astra":
                    astra_seconds += seconds
                    inserted += json.loads(out)["totals"]["inserted"]
                else:
                    plain_seconds += seconds
        print("astra-stac ingest again (unchanged) …", flush=True)
        again_seconds, out = timed(astra(*parts), env)
        again_report = json.loads(out)

        assert inserted == args.items, inserted
        assert again_report["totals"]["unchanged"] == args.items, again_report["totals"]
        assert item_count(astra_dsn) == item_count(plain_dsn) == args.items

        n = args.items
        result: dict[str, Any] = {
            "items": n,
            "ndjson_mb": round(size_mb, 1),
            "batch_size": args.batch_size,
            "rounds": args.rounds,
            "astra_seconds": round(astra_seconds, 2),
            "astra_items_per_second": round(n / astra_seconds),
            "pypgstac_seconds": round(plain_seconds, 2),
            "pypgstac_items_per_second": round(n / plain_seconds),
            "ratio_astra_over_pypgstac": round(plain_seconds / astra_seconds, 2),
            "astra_reingest_seconds": round(again_seconds, 2),
            "astra_reingest_items_per_second": round(n / again_seconds),
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d"),
        }
    finally:
        cluster.stop()
        shutil.rmtree(base, ignore_errors=True)

    lines = [
        f"# Bulk ingest, {n:,} items ({result['ndjson_mb']} MB NDJSON)",
        "",
        "| command | seconds | items/s |",
        "|---|---:|---:|",
        f"| `astra-stac ingest` (new items) | {result['astra_seconds']} | "
        f"{result['astra_items_per_second']:,} |",
        f"| `pypgstac load items --method upsert` | {result['pypgstac_seconds']} | "
        f"{result['pypgstac_items_per_second']:,} |",
        f"| `astra-stac ingest` again (all unchanged) | {result['astra_reingest_seconds']} | "
        f"{result['astra_reingest_items_per_second']:,} |",
        "",
        f"astra-stac / pypgstac throughput: **{result['ratio_astra_over_pypgstac']}×** "
        f"(target ≥ 0.8×). {result['cpus']} CPUs, Python {result['python']}, {result['date']}.",
    ]
    report = "\n".join(lines)
    print("\n" + report)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"ingest-{n}.md").write_text(report + "\n")
    (RESULTS / f"ingest-{n}.json").write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
