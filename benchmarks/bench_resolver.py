#!/usr/bin/env python
"""The Asset Resolver (direct routing) against Scene Details, on one server and the same scenes.

What it does, in order:

1. starts an embedded PostgreSQL under a temporary directory in /tmp and loads
   `--items` synthetic scenes from `bench_items.py` (half Sentinel-2, half
   Landsat, yearly partitions), with their band hrefs rewritten so that the
   resolver routes them `direct` without touching the network:
   - `local` scenes (every Landsat scene and a third of the Sentinel-2 ones): each
     band asset points at a file under the storage root, `cogs/<band>-<k>.tif`,
     one of `--files` real 1024×1024 uint16 COGs for red and nir (one for the
     other bands) written with rasterio and rio-cogeo here, so many scenes share
     a file and the resolver's per-file stat and rio-cogeo validation caches work
     as they do in production;
   - `https` scenes (a third of the Sentinel-2 ones): the Earth Search `https://`
     COG hrefs as they are, with `file:size` (public hrefs are returned unchanged);
   - `s3` scenes (the last third): `s3://astra-bench/cogs/<band>-<k>.tif`, the same
     files in a real S3-compatible server on loopback (moto), presigned as in production
     (object sizes from a `HEAD`, cached per object);
2. serves astra-stac (`astra_stac.app:create_app`, production settings, a key
   checked against the database on every request) under `uvicorn[standard]`;
3. checks that the resolver answers `direct` COG hrefs for red and nir, and that
   local and S3 hrefs download the file they name;
4. for 1 and 8 keep-alive connections, in interleaved rounds, asks for random
   scenes of each kind, the same ones on both routes:
   `GET /api/v1/scenes/{id}` and `GET /api/v1/assets?scene_id={id}&bands=red,nir`;
5. prints req/s, p50, p99 and resolver ÷ scene details, and writes
   `benchmarks/results/resolver.md` and `.json`.

    .venv/bin/python benchmarks/bench_resolver.py
    .venv/bin/python benchmarks/bench_resolver.py --items 2000 --requests 1000 --rounds 5
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import logging
import math
import os
import random
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
import boto3
import numpy as np
import orjson
import rasterio
from rasterio.transform import from_origin
from rio_cogeo.cogeo import cog_translate
from rio_cogeo.profiles import cog_profiles

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_items import (
    LANDSAT_COLLECTION,
    PREFIX_OF,
    S2_COLLECTION,
    BenchmarkFailure,
    Client,
    Server,
    _free_port,
    environment,
    environment_section,
    item_ids,
    load_database,
    prewarm,
    summarise,
    synthetic_items,
)

from astra_stac.auth import store
from astra_stac.auth.keys import Scope
from astra_stac.db.embedded import EmbeddedPostgres

RESULTS = Path(__file__).resolve().parent / "results"
BANDS = "red,nir"
EXPECTED = {S2_COLLECTION: ("B04", "B08"), LANDSAT_COLLECTION: ("B04", "B05")}  # native names
FILE_SIZE = 1024
# Asset keys of red and nir (Landsat's nir is `nir08`): `--files` files each; other bands one.
RESOLVED = ("red", "nir", "nir08")
KINDS = ("local", "https", "s3")
BUCKET = "astra-bench"
S3_CREDENTIALS = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}


# --- data -----------------------------------------------------------------------------------


def write_cogs(storage: Path, band_keys: list[str], files: int, seed: int) -> None:
    """`files` COGs per band key under `storage/cogs`: 1024×1024 uint16, smooth
    fields plus noise (compresses like imagery, not like a constant)."""
    rng = np.random.default_rng(seed)
    out = storage / "cogs"
    out.mkdir(parents=True, exist_ok=True)
    y, x = np.mgrid[0:FILE_SIZE, 0:FILE_SIZE] / FILE_SIZE
    profile = {
        "driver": "GTiff",
        "width": FILE_SIZE,
        "height": FILE_SIZE,
        "count": 1,
        "dtype": "uint16",
        "crs": "EPSG:32613",
        "transform": from_origin(399960, 4500000, 10, 10),
        "nodata": 0,
    }
    source = out / ".source.tif"
    for key in band_keys:
        for k in range(files):
            phase = rng.uniform(0, 2 * np.pi, 2)
            data = 3000 + 2000 * np.sin(6 * x + phase[0]) * np.cos(4 * y + phase[1])
            data += rng.normal(0, 150, data.shape)
            with rasterio.open(source, "w", **profile) as dst:
                dst.write(np.clip(data, 1, 65535).astype("uint16"), 1)
            cog_translate(
                str(source), str(out / f"{key}-{k}.tif"), cog_profiles["deflate"], quiet=True
            )
    source.unlink()


def start_s3(storage: Path, stack: contextlib.ExitStack) -> str:
    """A moto S3 server on loopback holding `storage/cogs/*` in `BUCKET`; its URL."""
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # moto's request log
    port = _free_port()
    s3 = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    s3.start()
    stack.callback(s3.stop)
    endpoint = f"http://127.0.0.1:{port}"
    client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", **S3_CREDENTIALS)
    client.create_bucket(Bucket=BUCKET)
    for path in sorted((storage / "cogs").glob("*.tif")):
        client.upload_file(str(path), BUCKET, f"cogs/{path.name}")
    return endpoint


def band_keys(item: dict[str, Any]) -> list[str]:
    return [key for key, asset in item["assets"].items() if "raster:bands" in asset]


def rewritten_items(count: int, seed: int, files: int) -> Iterator[dict[str, Any]]:
    """`bench_items.synthetic_items`, band hrefs pointing at the local COGs (`local`
    scenes) or at their copies in S3 (`s3`), or keeping their Earth Search https
    hrefs with a `file:size` (`https`)."""
    rng = random.Random(seed)
    for index, item in enumerate(synthetic_items(count, seed)):
        # Landsat's Planetary Computer hrefs would need SAS tokens: they go local.
        kind = "local" if item["collection"] == LANDSAT_COLLECTION else KINDS[index // 2 % 3]
        for key in band_keys(item):
            asset = item["assets"][key]
            name = f"cogs/{key}-{rng.randrange(files) if key in RESOLVED else 0}.tif"
            if kind == "local":
                asset["href"] = name
            elif kind == "s3":
                asset["href"] = f"s3://{BUCKET}/{name}"
            else:
                asset["file:size"] = rng.randrange(50_000_000, 250_000_000)
        item["properties"]["astra:bench"] = kind
        yield item


def samples(dsn: str, wanted: int, seed: int) -> dict[str, list[tuple[str, str]]]:
    """`wanted` random scenes of each kind."""
    import psycopg

    with psycopg.connect(dsn) as conn:
        rows = conn.execute(
            "SELECT collection, id, content->'properties'->>'astra:bench' FROM pgstac.items"
        ).fetchall()
    rng = random.Random(seed)
    out: dict[str, list[tuple[str, str]]] = {}
    for kind in KINDS:
        ids = sorted((c, i) for c, i, k in rows if k == kind)
        picked = rng.sample(ids, min(wanted, len(ids)))
        while len(picked) < wanted:
            picked += rng.sample(ids, min(wanted - len(picked), len(ids)))
        out[kind] = picked
    return out


# --- client ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Series:
    """A route and a kind of scene."""

    route: str  # scene | resolver
    kind: str  # local | https | s3

    @property
    def name(self) -> str:
        return f"{self.route}/{self.kind}"

    def path(self, collection: str, item_id: str) -> str:
        scoped = f"{PREFIX_OF[collection]}:{item_id}"
        if self.route == "scene":
            return f"/api/v1/scenes/{scoped}"
        return f"/api/v1/assets?scene_id={quote(scoped)}&bands={BANDS}"

    def check(self, body: bytes, collection: str, item_id: str) -> bool:
        scoped = f"{PREFIX_OF[collection]}:{item_id}"
        if self.route == "scene":
            return f'"id":"{scoped}"'.encode() in body
        return (
            f'"scene_id":"{scoped}"'.encode() in body
            and b'"routing":"direct"' in body
            and all(f'"{band}":{{"href":'.encode() in body for band in EXPECTED[collection])
        )


SERIES = [Series(route, kind) for kind in KINDS for route in ("scene", "resolver")]


class SeriesClient(Client):
    """`bench_items.Client`, checking each answer with the series' own rule."""

    async def _worker(self, share: list[tuple[str, str]], out: list[int]) -> None:
        series: Series = self.series  # type: ignore[assignment]
        for collection, item_id in share:
            url = self.base + series.path(collection, item_id)
            started = time.perf_counter_ns()
            async with self.session.get(url, headers=self.headers) as response:
                body = await response.read()
                elapsed = time.perf_counter_ns() - started
                status = response.status
            if status != 200 or not series.check(body, collection, item_id):
                raise BenchmarkFailure(f"GET {url} answered {status}: {body[:400]!r}")
            out.append(elapsed)


async def check_routing(
    base: str, key: str, sample: dict[str, list[tuple[str, str]]], s3_endpoint: str
) -> None:
    """Every kind resolves `direct`; local and S3 hrefs download the file they name, whole."""
    headers = {"Authorization": f"Bearer {key}"}
    async with aiohttp.ClientSession() as session:
        for kind, scenes in sample.items():
            collection, item_id = scenes[0]
            url = base + Series("resolver", kind).path(collection, item_id)
            async with session.get(url, headers=headers) as response:
                raw = await response.read()
            if response.status != 200:
                raise BenchmarkFailure(f"GET {url} answered {response.status}: {raw[:400]!r}")
            body = orjson.loads(raw)
            for band, asset in body["assets"].items():
                if asset["astra:routing"] != "direct" or "cloud-optimized" not in asset["type"]:
                    raise BenchmarkFailure(f"{kind} {band} is not a direct COG: {asset}")
                if kind == "s3" and not asset["href"].startswith(f"{s3_endpoint}/{BUCKET}/"):
                    raise BenchmarkFailure(f"s3 {band} is not a presigned URL: {asset}")
                if kind in ("local", "s3"):
                    async with session.get(asset["href"]) as download:
                        content = await download.read()
                    if download.status != 200 or len(content) != asset["file:size"]:
                        raise BenchmarkFailure(f"download of {band}: {download.status}")
                elif not asset["href"].startswith("https://sentinel-cogs."):
                    raise BenchmarkFailure(f"https {band} was not returned as it is: {asset}")


async def measure(
    base: str, key: str, args: argparse.Namespace, sample: dict[str, list[tuple[str, str]]]
) -> dict[str, Any]:
    """Warm-up, then `--rounds` interleaved rounds (order rotated) per connection count."""
    headers = {"Authorization": f"Bearer {key}", "Accept-Encoding": "gzip"}
    per_round = math.ceil(args.requests / args.rounds)
    results: dict[str, Any] = {}
    for level in args.levels:
        clients = [SeriesClient(base, s, level, headers) for s in SERIES]  # type: ignore[arg-type]
        latencies: dict[str, list[int]] = {s.name: [] for s in SERIES}
        seconds = {s.name: 0.0 for s in SERIES}
        try:
            for client, series in zip(clients, SERIES, strict=True):
                await client.run(sample[series.kind][: args.warmup])
            for round_no in range(args.rounds):
                shift = round_no % len(clients)
                for client in clients[shift:] + clients[:shift]:
                    series = client.series  # type: ignore[assignment]
                    start = args.warmup + round_no * per_round
                    lat, wall = await client.run(sample[series.kind][start : start + per_round])
                    latencies[series.name].extend(lat)
                    seconds[series.name] += wall
        finally:
            for client in clients:
                await client.close()
        rows = {name: summarise(latencies[name], seconds[name]) for name in latencies}
        for kind in KINDS:
            scene, resolver = rows[f"scene/{kind}"], rows[f"resolver/{kind}"]
            resolver["ratio_req_per_s"] = resolver["req_per_s"] / scene["req_per_s"]
            resolver["ratio_p50"] = scene["p50_ms"] / resolver["p50_ms"]
        results[str(level)] = rows
        print(f"\n{level} connection(s)")
        for name, row in rows.items():
            ratio = f"  ×scene {row['ratio_req_per_s']:.2f}" if "ratio_req_per_s" in row else ""
            print(
                f"  {name:<16} {row['req_per_s']:7.0f} req/s  p50 {row['p50_ms']:6.2f} ms"
                f"  p99 {row['p99_ms']:6.2f} ms{ratio}"
            )
    return results


# --- report ---------------------------------------------------------------------------------


def markdown(report: dict[str, Any]) -> str:
    params = report["parameters"]
    lines = [
        "# Asset Resolver (direct routing) vs Scene Details",
        "",
        f"Run {report['finished']} with `{report['command']}`.",
        "",
        f"One astra-stac server (uvicorn[standard], {params['workers']} worker(s), production "
        f"settings, the key read from PostgreSQL on every request), {params['items']:,} "
        "synthetic scenes from `bench_items.py` (yearly partitions). `local` scenes' red "
        f"and nir hrefs point at {params['files']} real 1024×1024 uint16 COGs per band under "
        "the storage root (shared by many scenes, as a handful of files would be; other "
        "bands at one file each); `s3` scenes at the same files in a moto S3 server on "
        "loopback (presigned URLs); `https` scenes keep their Earth Search COG "
        "hrefs with `file:size`. Each request is a "
        "different random scene, the same scenes on both routes: `GET /api/v1/scenes/{id}` "
        f"and `GET /api/v1/assets?scene_id={{id}}&bands={BANDS}` (answers checked: `direct` "
        f"COG hrefs for both bands). {params['requests']} measured requests per row in "
        f"{params['rounds']} interleaved rounds after {params['warmup']} warm-up requests; "
        "`Accept-Encoding: gzip`. Ratio = resolver ÷ scene details (req/s; and scene p50 ÷ "
        "resolver p50). Target: ≥ 0.8× (req/s).",
        "",
    ]
    for level, rows in report["results"].items():
        lines += [
            f"## {level} connection(s)",
            "",
            "| series | req/s | p50 ms | p99 ms | ×scene req/s | ×scene p50 |",
            "|---|---:|---:|---:|---:|---:|",
        ]
        for name, row in rows.items():
            ratios = (
                f"{row['ratio_req_per_s']:.2f} | {row['ratio_p50']:.2f}"
                if "ratio_req_per_s" in row
                else " | "
            )
            lines.append(
                f"| {name} | {row['req_per_s']:.0f} | {row['p50_ms']:.2f} | "
                f"{row['p99_ms']:.2f} | {ratios} |"
            )
        lines.append("")
    lines += [
        *environment_section(report),
    ]
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--items", type=int, default=10_000, help="synthetic scenes to load")
    parser.add_argument("--files", type=int, default=4, help="COG files per band")
    parser.add_argument("--requests", type=int, default=3000, help="measured requests per row")
    parser.add_argument("--warmup", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--workers", type=int, default=1, help="uvicorn workers")
    parser.add_argument("--levels", type=int, nargs="+", default=[1, 8], help="connections")
    parser.add_argument("--seed", type=int, default=20231008)
    parser.add_argument("--output-dir", type=Path, default=RESULTS)
    parser.add_argument(
        "--hold", action="store_true", help="after loading, keep the server up (for profiling)"
    )
    args = parser.parse_args(argv)
    if args.items < 8 or args.files < 1 or args.requests < args.rounds or args.rounds < 1:
        parser.error("--items ≥ 8, --files ≥ 1, --rounds ≥ 1, --requests ≥ --rounds")
    return args


def _exit_on_sigterm(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    workdir = Path(tempfile.mkdtemp(prefix="astra-bench-resolver-", dir="/tmp"))
    os.chmod(workdir, 0o755)
    cluster = EmbeddedPostgres(workdir / "db")
    server: Server | None = None
    stack = contextlib.ExitStack()
    try:
        storage = workdir / "storage"
        keys = sorted({key for item in synthetic_items(2, args.seed) for key in band_keys(item)})
        started = time.perf_counter()
        write_cogs(storage, [k for k in keys if k in RESOLVED], args.files, args.seed)
        write_cogs(storage, [k for k in keys if k not in RESOLVED], 1, args.seed)
        print(f"Wrote the band COGs in {time.perf_counter() - started:.0f} s")
        s3_endpoint = start_s3(storage, stack)
        cluster.start()
        dsn = cluster.dsn()
        took = load_database(
            dsn, args.items, args.seed, "year", rewritten_items(args.items, args.seed, args.files)
        )
        print(f"Loaded {args.items:,} items in {took:.0f} s")
        if len(item_ids(dsn)) != args.items:
            raise BenchmarkFailure("the database does not hold every item")
        key = store.create_key(dsn, "bench-resolver", Scope.read)[0].secret
        sample = samples(dsn, args.warmup + args.requests, args.seed + 1)
        prewarm(dsn, [s for scenes in sample.values() for s in scenes])
        server = Server(
            "astra",
            "astra_stac.app:create_app",
            {
                "ASTRA_DATABASE_URL": dsn,
                "ASTRA_STORAGE_ROOT": str(storage),
                "ASTRA_SIGNING_KEY": "bench-resolver-signing-key-0123456789abcdef",
                "ASTRA_RATE_LIMIT_PER_MINUTE": str(10**9),
                "ASTRA_S3_ENDPOINT_URL": s3_endpoint,
                "ASTRA_ASSET_HOSTS": json.dumps({"earth-search": [f"s3://{BUCKET}/"]}),
                "ASTRA_S3_REGION": "us-east-1",
                "ASTRA_S3_ADDRESSING_STYLE": "path",
                "ASTRA_S3_ACCESS_KEY_ID": S3_CREDENTIALS["aws_access_key_id"],
                "ASTRA_S3_SECRET_ACCESS_KEY": S3_CREDENTIALS["aws_secret_access_key"],
            },
            "/api/v1/_mgmt/ping",
        )
        server.start(args.workers, workdir)

        async def ready() -> None:
            async with aiohttp.ClientSession() as session:
                await server.wait_ready(session)
            await check_routing(server.base, key, sample, s3_endpoint)

        asyncio.run(ready())
        print("Every kind resolves direct; local and S3 hrefs download the whole file")
        if args.hold:
            assert server.process is not None
            print(
                f"{server.base} (pid {server.process.pid}) key {key}\nsample {sample['local'][0]}"
            )
            while True:
                time.sleep(3600)
        load_before = ", ".join(f"{x:.2f}" for x in os.getloadavg())
        results = asyncio.run(measure(server.base, key, args, sample))
        report = {
            "finished": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
            "command": " ".join(["python", "benchmarks/bench_resolver.py", *sys.argv[1:]]),
            "parameters": {
                "items": args.items,
                "files": args.files,
                "requests": math.ceil(args.requests / args.rounds) * args.rounds,
                "warmup": args.warmup,
                "rounds": args.rounds,
                "workers": args.workers,
                "levels": args.levels,
            },
            "environment": environment(dsn),
            "load_before": load_before,
            "load_after": ", ".join(f"{x:.2f}" for x in os.getloadavg()),
            "results": results,
        }
        args.output_dir.mkdir(parents=True, exist_ok=True)
        (args.output_dir / "resolver.json").write_text(json.dumps(report, indent=2) + "\n")
        (args.output_dir / "resolver.md").write_text(markdown(report))
        print(f"\nWrote {args.output_dir / 'resolver.md'} and resolver.json")
        return 0
    finally:
        if server is not None:
            server.stop()
        cluster.stop()
        stack.close()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
