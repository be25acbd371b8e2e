#!/usr/bin/env python
"""Load and soak: scene details, search, assets and tiles at once against `astra-stac serve`.

What it does, in order:

1. starts an embedded PostgreSQL under /tmp and loads `--items` synthetic scenes with
   bench_items.py's generator and loader (half Earth Search Sentinel-2, half Planetary
   Computer Landsat, partitioned by year), and the demo scenes with their band files,
   as `astra-stac serve --demo` loads them;
2. gives `--band-scenes` synthetic scenes real band files: a 256×256 uint16 COG per band
   asset over the scene's footprint, under the server's storage root, with the asset's
   href and `proj:*` pointing at it (as the demo scenes' band files are);
3. runs the server `make demo` runs, as a real process: `astra-stac serve` (uvicorn with
   uvloop and httptools, `--workers W`) with its production settings — Bearer key checked
   against the database on every request, JSON access log, metrics, Brotli/gzip, the rate
   limiter in the path with a limit the run never reaches — on that database;
4. drives a mix of requests (`MIX`) from one async aiohttp client on keep-alive
   connections: a short warm-up, a baseline on 1 connection (`--baseline-seconds`), the
   load on `--connections` (64) for `--seconds` (60), then the soak, the same for
   `--soak-seconds` (600) while sampling the resident memory of every server process
   from /proc every `--rss-interval` seconds;
5. prints and writes `benchmarks/results/load-<N>.md` and `.json`: per route count, errors,
   p50, p99, req/s (and the ratio to the 1-connection baseline), the RSS at start, after
   warm-up, max and end, and whether it is steady.

Every request is bounded (`--timeout`); each phase stops at its time or after
`--max-requests`. Any non-2xx answer, transport error, timeout or unexpected body is an
error: counted per route, the first ones printed, and the exit status is 1.

    make load                                              # 100,000 scenes, ~15 minutes
    .venv/bin/python benchmarks/bench_load.py --items 10000 --seconds 10 --soak-seconds 30
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import aiohttp
import morecantile
import orjson
import psycopg
import rasterio
import uvloop
from bench_items import (
    COG,
    END,
    PREFIX_OF,
    RESULTS,
    START,
    BenchmarkFailure,
    Server,
    environment,
    environment_section,
    item_ids,
    load_database,
    summarise,
)
from pypgstac.db import PgstacDB
from pypgstac.load import Loader, Methods

from astra_stac.auth import store
from astra_stac.auth.keys import Scope
from astra_stac.db.embedded import EmbeddedPostgres
from astra_stac.demo import demo_items, write_stand_in_cog
from astra_stac.ingest.load import upsert
from astra_stac.providers import load_registry

API = "/api/v1"
PNG = b"\x89PNG"
TILE_ZOOMS = (9, 10, 11, 12)
RENDER = {"bands": "red", "rescale": "0,10000"}
# Route name → weight in the mix.
MIX = {
    "scene": 24,
    "search-bbox-datetime": 12,
    "search-filter": 12,
    "assets": 12,
    "download": 4,
    "tilejson": 4,
    "tile-key": 16,
    "tile-signed": 16,
}
ROUTES = {
    "scene": "GET /api/v1/scenes/{provider:id}, any scene",
    "search-bbox-datetime": "GET /api/v1/search?bbox=(5°×5°)&datetime=(3 months)&limit=10",
    "search-filter": "POST /api/v1/search, a collection, CQL2-JSON on eo:cloud_cover and "
    "platform, a year, limit 10",
    "assets": "GET /api/v1/assets?scene_id=…&bands=red,nir (a scene with band files)",
    "download": "GET a signed href from /assets, Range: bytes=0-16383, no key",
    "tilejson": "GET /api/v1/scenes/{id}/WebMercatorQuad/tilejson.json?bands=red&rescale=…",
    "tile-key": "GET /api/v1/scenes/{id}/tiles/WebMercatorQuad/{z}/{x}/{y}.png?bands=red"
    "&rescale=0,10000, Bearer key",
    "tile-signed": "the same tile from the TileJSON's signed URL (expires, sig), no key",
}
SEARCH_COLLECTIONS = {"es-sentinel-2-l2a": "sentinel-2", "pc-landsat-c2-l2": "landsat-"}


# --- data -----------------------------------------------------------------------------------


def _is_band(asset: dict[str, Any]) -> bool:
    return asset.get("type") == COG and "data" in (asset.get("roles") or [])


def give_band_files(dsn: str, storage: Path, count: int, seed: int) -> list[str]:
    """Point every band asset of `count` synthetic scenes at a real COG under `storage`;
    returns their provider-scoped ids."""
    rng = random.Random(seed)
    candidates = item_ids(dsn)
    rng.shuffle(candidates)
    items: list[dict[str, Any]] = []
    with psycopg.connect(dsn) as conn:
        for collection, item_id in candidates:
            if len(items) == count:
                break
            row = conn.execute("SELECT pgstac.get_item(%s, %s)", (item_id, collection)).fetchone()
            item = row[0] if row else None
            if item is None:
                continue
            west, south, east, north = item["bbox"]
            if not (-179 < west < east < 179 and -70 < south < north < 70):
                continue  # keep clear of the antimeridian and the poles
            for key, asset in item["assets"].items():
                if not _is_band(asset):
                    continue
                path = storage / "load" / collection / item_id / f"{key}.tif"
                write_stand_in_cog(path, item, key)
                with rasterio.open(path) as dataset:
                    transform, shape = dataset.transform, list(dataset.shape)
                asset.update(
                    {
                        "href": path.resolve().as_uri(),
                        "proj:shape": shape,
                        "proj:transform": list(transform)[:6],
                        "file:size": path.stat().st_size,
                    }
                )
            items.append(item)
    with PgstacDB(dsn=dsn) as db:
        Loader(db=db).load_items(iter(items), insert_mode=Methods.upsert)
    return [f"{PREFIX_OF[item['collection']]}:{item['id']}" for item in items]


def load_demo_scenes(dsn: str, storage: Path) -> list[str]:
    """The demo scenes (with their band files under `storage`), as `serve --demo` loads them;
    the two collections the synthetic scenes share with them keep the synthetic definitions
    their items were stored against. Returns their provider-scoped ids."""
    registry = load_registry()
    collections, items = demo_items(registry, storage)
    upsert(dsn, [c for c in collections if c["id"] not in PREFIX_OF], items)
    scoped = []
    for item in items:
        provider = registry.provider_of_collection(item["collection"])
        assert provider is not None
        scoped.append(f"{provider.prefix}:{item['id']}")
    return scoped


def tiles_inside(bbox: list[float], zooms: tuple[int, ...]) -> list[tuple[int, int, int]]:
    """WebMercatorQuad tiles of `zooms` wholly inside `bbox`."""
    tms = morecantile.tms.get("WebMercatorQuad")
    west, south, east, north = bbox[0], bbox[1], bbox[-3 if len(bbox) == 6 else 2], bbox[-1]
    out = []
    for tile in tms.tiles(west, south, east, north, list(zooms)):
        b = tms.bounds(tile)
        if b.left >= west and b.right <= east and b.bottom >= south and b.top <= north:
            out.append((tile.z, tile.x, tile.y))
    return out


# --- the server -----------------------------------------------------------------------------


@dataclass
class Serve(Server):
    """`astra-stac serve` in a subprocess, as `make demo` runs it."""

    data_dir: Path = Path()

    def start(self, workers: int, workdir: Path) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("ASTRA_", "PG"))}
        env.update(self.env)
        self.log = workdir / "serve.log"
        command = [
            str(Path(sys.executable).with_name("astra-stac")),
            "serve",
            "--data-dir",
            str(self.data_dir),
            "--port",
            str(self.port),
            "--workers",
            str(workers),
        ]
        with self.log.open("wb") as out:
            self.process = subprocess.Popen(
                command, env=env, cwd=workdir, stdout=out, stderr=subprocess.STDOUT
            )


def tree_rss(pid: int) -> int:
    """Resident bytes of `pid` and all its descendants (uvicorn workers), from /proc."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, ValueError, IndexError):
            stat = (entry / "stat").read_text()
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            children.setdefault(ppid, []).append(int(entry.name))
    total, todo, page = 0, [pid], os.sysconf("SC_PAGE_SIZE")
    while todo:
        current = todo.pop()
        with contextlib.suppress(OSError, ValueError, IndexError):
            total += int(Path(f"/proc/{current}/statm").read_text().split()[1]) * page
        todo += children.get(current, [])
    return total


def log_problems(log: Path) -> list[str]:
    """Error lines and tracebacks the server logged."""
    problems = []
    with log.open(errors="replace") as lines:
        for line in lines:
            if '"level": "error"' in line or '"level": "critical"' in line or "Traceback" in line:
                problems.append(line.strip()[:500])
    return problems


# --- the mix --------------------------------------------------------------------------------


@dataclass
class Request:
    method: str
    url: str
    headers: dict[str, str]
    check: Callable[[int, bytes], bool]
    body: bytes | None = None


@dataclass
class Mix:
    """What each route of the mix asks for: random scenes, boxes, filters, tiles."""

    base: str
    key: str
    scenes: list[str]  # every scene, provider-scoped
    band_scenes: list[str]
    tiles: dict[str, list[tuple[int, int, int]]] = field(default_factory=dict)
    signed: dict[str, str] = field(default_factory=dict)  # scene → signed tile template
    downloads: list[str] = field(default_factory=list)

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}", "Accept-Encoding": "gzip"}

    def request(self, route: str, rng: random.Random) -> Request:
        build: Callable[[random.Random], Request] = getattr(self, "_" + route.replace("-", "_"))
        return build(rng)

    def _scene(self, rng: random.Random) -> Request:
        scene = rng.choice(self.scenes)
        expected = f'"id":"{scene}"'.encode()
        return Request(
            "GET",
            f"{self.base}{API}/scenes/{scene}",
            self.auth,
            lambda status, body: status == 200 and expected in body,
        )

    def _search_bbox_datetime(self, rng: random.Random) -> Request:
        west, south = rng.uniform(-180, 175), rng.uniform(-60, 65)
        start = START + dt.timedelta(days=rng.uniform(0, (END - START).days - 92))
        query = {
            "bbox": f"{west:.3f},{south:.3f},{west + 5:.3f},{south + 5:.3f}",
            "datetime": f"{start:%Y-%m-%dT00:00:00Z}/{start + dt.timedelta(days=92):%Y-%m-%d}"
            "T00:00:00Z",
            "limit": 10,
        }
        return Request(
            "GET", f"{self.base}{API}/search?{urlencode(query)}", self.auth, _is_collection
        )

    def _search_filter(self, rng: random.Random) -> Request:
        collection, platform = rng.choice(list(SEARCH_COLLECTIONS.items()))
        platform += rng.choice("ab" if platform.startswith("sentinel") else "89")
        year = rng.randrange(START.year, END.year)
        body = {
            "collections": [collection],
            "datetime": f"{year}-01-01T00:00:00Z/{year}-12-31T23:59:59Z",
            "filter-lang": "cql2-json",
            "filter": {
                "op": "and",
                "args": [
                    {"op": "<", "args": [{"property": "eo:cloud_cover"}, rng.randrange(5, 60)]},
                    {"op": "=", "args": [{"property": "platform"}, platform]},
                ],
            },
            "limit": 10,
        }
        headers = {**self.auth, "Content-Type": "application/json"}
        return Request(
            "POST", f"{self.base}{API}/search", headers, _is_collection, orjson.dumps(body)
        )

    def _assets(self, rng: random.Random) -> Request:
        query = urlencode({"scene_id": rng.choice(self.band_scenes), "bands": "red,nir"})
        return Request(
            "GET",
            f"{self.base}{API}/assets?{query}",
            self.auth,
            lambda status, body: status == 200 and b'"assets"' in body,
        )

    def _download(self, rng: random.Random) -> Request:
        return Request(
            "GET",
            rng.choice(self.downloads),
            {"Range": "bytes=0-16383"},
            lambda status, body: status == 206 and len(body) == 16384,
        )

    def tilejson_url(self, scene: str) -> str:
        query = urlencode({**RENDER, "tile_format": "png", "tilesize": 256})
        return f"{self.base}{API}/scenes/{scene}/WebMercatorQuad/tilejson.json?{query}"

    def _tilejson(self, rng: random.Random) -> Request:
        return Request(
            "GET",
            self.tilejson_url(rng.choice(self.band_scenes)),
            self.auth,
            lambda status, body: status == 200 and b'"tiles"' in body,
        )

    def _tile_key(self, rng: random.Random) -> Request:
        scene = rng.choice(self.band_scenes)
        z, x, y = rng.choice(self.tiles[scene])
        return Request(
            "GET",
            f"{self.base}{API}/scenes/{scene}/tiles/WebMercatorQuad/{z}/{x}/{y}.png"
            f"?{urlencode(RENDER)}",
            self.auth,
            _is_png,
        )

    def _tile_signed(self, rng: random.Random) -> Request:
        scene = rng.choice(self.band_scenes)
        z, x, y = rng.choice(self.tiles[scene])
        template = self.signed[scene]
        url = template.replace("{z}", str(z)).replace("{x}", str(x)).replace("{y}", str(y))
        return Request("GET", url, {}, _is_png)


def _is_collection(status: int, body: bytes) -> bool:
    return status == 200 and b'"FeatureCollection"' in body


def _is_png(status: int, body: bytes) -> bool:
    return status == 200 and body.startswith(PNG)


async def prepare_mix(mix: Mix, session: aiohttp.ClientSession) -> None:
    """Per scene with band files: its tiles, its signed tile template, its download hrefs."""
    kept = []
    for scene in mix.band_scenes:
        async with session.get(f"{mix.base}{API}/scenes/{scene}", headers=mix.auth) as response:
            item = await response.json(content_type=None)
            if response.status != 200:
                raise BenchmarkFailure(f"scene {scene}: {response.status} {item}")
        tiles = tiles_inside(item["bbox"], TILE_ZOOMS)
        if not tiles:
            continue
        async with session.get(mix.tilejson_url(scene), headers=mix.auth) as response:
            tilejson = await response.json(content_type=None)
            if response.status != 200:
                raise BenchmarkFailure(f"TileJSON of {scene}: {response.status} {tilejson}")
        query = urlencode({"scene_id": scene, "bands": "red,nir"})
        async with session.get(f"{mix.base}{API}/assets?{query}", headers=mix.auth) as response:
            assets = await response.json(content_type=None)
            if response.status != 200:
                raise BenchmarkFailure(f"assets of {scene}: {response.status} {assets}")
        mix.tiles[scene] = tiles
        mix.signed[scene] = tilejson["tiles"][0]
        mix.downloads += [a["href"] for a in assets["assets"].values()]
        kept.append(scene)
    mix.band_scenes = kept


# --- driving it -----------------------------------------------------------------------------


@dataclass
class Phase:
    """What one phase measured."""

    latencies: dict[str, list[int]] = field(default_factory=lambda: {r: [] for r in MIX})
    errors: dict[str, int] = field(default_factory=lambda: dict.fromkeys(MIX, 0))
    messages: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def fail(self, route: str, message: str) -> None:
        self.errors[route] += 1
        if len(self.messages) < 20:
            self.messages.append(f"{route}: {message}")
            print(f"  ERROR {route}: {message}", flush=True)

    def summary(self) -> dict[str, Any]:
        rows: dict[str, Any] = {}
        for route, values in self.latencies.items():
            row: dict[str, Any] = {"count": len(values), "errors": self.errors[route]}
            if values:
                row |= summarise(values, self.seconds)
            rows[route] = row
        everything = [x for values in self.latencies.values() for x in values]
        total: dict[str, Any] = {"count": len(everything), "errors": sum(self.errors.values())}
        if everything:
            total |= summarise(everything, self.seconds)
        rows["all"] = total
        return rows


async def drive(
    mix: Mix,
    connections: int,
    seconds: float,
    max_requests: int,
    timeout: float,
    seed: int,
) -> Phase:
    """The mix on `connections` keep-alive connections until `seconds` or `max_requests`."""
    phase = Phase()
    names, weights = list(MIX), list(MIX.values())
    sent = 0
    connector = aiohttp.TCPConnector(limit=connections, force_close=False)
    limits = aiohttp.ClientTimeout(total=timeout)
    async with aiohttp.ClientSession(connector=connector, timeout=limits) as session:
        deadline = time.monotonic() + seconds

        async def worker(number: int) -> None:
            nonlocal sent
            rng = random.Random(seed * 1000 + number)
            while time.monotonic() < deadline and sent < max_requests:
                sent += 1
                route = rng.choices(names, weights)[0]
                request = mix.request(route, rng)
                started = time.perf_counter_ns()
                try:
                    async with session.request(
                        request.method, request.url, headers=request.headers, data=request.body
                    ) as response:
                        body = await response.read()
                        status = response.status
                except (aiohttp.ClientError, OSError, TimeoutError) as exc:
                    phase.fail(route, f"{request.method} {request.url}: {exc!r}")
                    continue
                elapsed = time.perf_counter_ns() - started
                if not request.check(status, body):
                    phase.fail(route, f"{request.method} {request.url}: {status} {body[:300]!r}")
                    continue
                phase.latencies[route].append(elapsed)

        started = time.perf_counter()
        await asyncio.gather(*(worker(i) for i in range(connections)))
        phase.seconds = time.perf_counter() - started
    return phase


async def sample_rss(
    pid: int, interval: float, samples: list[tuple[float, int]], stop: asyncio.Event
) -> None:
    started = time.monotonic()
    while True:
        samples.append((round(time.monotonic() - started, 1), tree_rss(pid)))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), interval)
            samples.append((round(time.monotonic() - started, 1), tree_rss(pid)))
            return


def rss_report(samples: list[tuple[float, int]], warmup: float) -> dict[str, Any]:
    """Start, after warm-up, max and end RSS, the trend after warm-up, and steadiness."""
    mib = 1024 * 1024
    after = [s for s in samples if s[0] >= warmup] or samples[-1:]
    warm = after[0][1]
    end = samples[-1][1]
    if len(after) > 1:
        xs, ys = [s[0] for s in after], [s[1] for s in after]
        mean_x, mean_y = sum(xs) / len(xs), sum(ys) / len(ys)
        var = sum((x - mean_x) ** 2 for x in xs) or 1.0
        slope = sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys, strict=True)) / var
    else:
        slope = 0.0
    return {
        "start_mib": samples[0][1] / mib,
        "warm_mib": warm / mib,
        "warm_at_s": after[0][0],
        "max_mib": max(s[1] for s in samples) / mib,
        "end_mib": end / mib,
        "end_over_warm": end / warm,
        "trend_mib_per_min": slope * 60 / mib,
        "steady": end < 1.2 * warm,
        "samples": [[t, round(b / mib, 1)] for t, b in samples],
    }


# --- reports --------------------------------------------------------------------------------


def _table(rows: dict[str, Any], baseline: dict[str, Any] | None = None) -> list[str]:
    head = "| route | count | errors | p50 ms | p99 ms | req/s |"
    rule = "|---|---:|---:|---:|---:|---:|"
    if baseline is not None:
        head += " p50 ÷ 1-connection p50 |"
        rule += "---:|"
    lines = [head, rule]
    for route, row in rows.items():
        if not row["count"]:
            lines.append(f"| {route} | 0 | {row['errors']} | | | |" + (" |" if baseline else ""))
            continue
        line = (
            f"| {route} | {row['count']:,} | {row['errors']} | {row['p50_ms']:.1f} | "
            f"{row['p99_ms']:.1f} | {row['req_per_s']:,.1f} |"
        )
        if baseline is not None:
            base = baseline.get(route, {})
            ratio = row["p50_ms"] / base["p50_ms"] if base.get("count") else None
            line += f" {ratio:.1f} |" if ratio else " |"
        lines.append(line)
    return lines


def markdown(report: dict[str, Any]) -> str:
    params, rss = report["parameters"], report["soak_rss"]
    phases = report["phases"]
    lines = [
        f"# Load and soak, {params['items']:,} scenes",
        "",
        f"Run {report['finished']} with `{report['command']}`.",
        "",
        f"`astra-stac serve` ({params['workers']} worker(s), uvicorn with uvloop and "
        "httptools, production settings: key checked on every request, JSON access log at "
        "info, metrics, compression, rate limiter in the path with a limit the run never "
        f"reaches) on an embedded PostgreSQL with {params['items']:,} synthetic scenes plus "
        f"{report['demo_scenes']} demo scenes; {report['band_scenes']} scenes have real band "
        "files (256×256 COGs under the storage root) and serve the asset and tile requests. "
        f"One aiohttp client drives the mix below: {params['connections']} keep-alive "
        f"connections for {params['seconds']} s (load), then {params['soak_seconds']} s "
        f"(soak), after a {params['baseline_seconds']} s baseline on 1 connection. Every "
        f"request has a {params['timeout']} s timeout; any non-2xx answer, transport error "
        "or unexpected body counts as an error.",
        "",
        "| route | weight | request |",
        "|---|---:|---|",
        *[f"| {name} | {MIX[name]} | {ROUTES[name]} |" for name in MIX],
        "",
        f"**Errors: {report['errors']}** (load {phases['load']['all']['errors']}, soak "
        f"{phases['soak']['all']['errors']}, baseline {phases['baseline']['all']['errors']}); "
        f"server log error lines: {len(report['server_log_problems'])}.",
        "",
        f"## Load: {params['connections']} connections, {params['seconds']} s",
        "",
        *_table(phases["load"], phases["baseline"]),
        "",
        f"## Soak: {params['connections']} connections, {params['soak_seconds']} s",
        "",
        *_table(phases["soak"], phases["baseline"]),
        "",
        f"Server RSS (every process, from /proc, every {params['rss_interval']} s): start "
        f"{rss['start_mib']:.0f} MiB, after warm-up ({rss['warm_at_s']:.0f} s) "
        f"{rss['warm_mib']:.0f} MiB, max {rss['max_mib']:.0f} MiB, end {rss['end_mib']:.0f} "
        f"MiB: end ÷ warm-up {rss['end_over_warm']:.2f}, trend after warm-up "
        f"{rss['trend_mib_per_min']:+.2f} MiB/min → "
        f"**{'steady' if rss['steady'] else 'NOT steady'}** (steady = end < 1.2 × warm-up). "
        f"RSS before the first request: {report['rss_idle_mib']:.0f} MiB, after the load "
        f"phase: {report['rss_after_load_mib']:.0f} MiB.",
        "",
        f"## Baseline: 1 connection, {params['baseline_seconds']} s",
        "",
        *_table(phases["baseline"]),
        "",
    ]
    if report["error_messages"]:
        lines += ["## First errors", "", *[f"- `{m}`" for m in report["error_messages"]], ""]
    if report["server_log_problems"]:
        lines += [
            "## Server log problems",
            "",
            *[f"- `{m}`" for m in report["server_log_problems"][:20]],
            "",
        ]
    lines += [
        *environment_section(
            report,
            f"data load: {report['load_seconds']}",
            "the client runs on the same machine as the server and PostgreSQL and competes "
            "with them for its cores",
        ),
    ]
    return "\n".join(lines)


def print_rows(title: str, rows: dict[str, Any]) -> None:
    print(f"\n== {title}")
    print(f"{'route':<22}{'count':>8}{'errors':>8}{'p50 ms':>9}{'p99 ms':>9}{'req/s':>9}")
    for route, row in rows.items():
        if row["count"]:
            print(
                f"{route:<22}{row['count']:>8}{row['errors']:>8}{row['p50_ms']:>9.1f}"
                f"{row['p99_ms']:>9.1f}{row['req_per_s']:>9.1f}"
            )
        else:
            print(f"{route:<22}{0:>8}{row['errors']:>8}")


# --- main -----------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--items", type=int, default=100_000, help="synthetic scenes to load")
    parser.add_argument("--band-scenes", type=int, default=48, help="scenes given band files")
    parser.add_argument("--connections", type=int, default=64, help="keep-alive connections")
    parser.add_argument("--seconds", type=float, default=60, help="length of the load phase")
    parser.add_argument("--soak-seconds", type=float, default=600, help="length of the soak")
    parser.add_argument("--baseline-seconds", type=float, default=15, help="1-connection run")
    parser.add_argument("--warmup-seconds", type=float, default=5, help="unmeasured warm-up")
    parser.add_argument(
        "--soak-warmup", type=float, default=60, help="seconds into the soak of the warm RSS"
    )
    parser.add_argument("--rss-interval", type=float, default=5, help="seconds between samples")
    parser.add_argument("--max-requests", type=int, default=2_000_000, help="cap per phase")
    parser.add_argument("--timeout", type=float, default=30, help="seconds per request")
    parser.add_argument("--workers", type=int, default=1, help="uvicorn workers (make demo: 1)")
    parser.add_argument("--seed", type=int, default=20231008)
    parser.add_argument("--output-dir", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    if args.items < 2 or args.connections < 1 or args.band_scenes < 1:
        parser.error("--items ≥ 2, --connections ≥ 1 and --band-scenes ≥ 1")
    return args


def _exit_on_sigterm(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)  # runs the clean-up: the server and PostgreSQL stop


def _load_average() -> str:
    return ", ".join(f"{x:.2f}" for x in os.getloadavg())


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    workdir = Path(tempfile.mkdtemp(prefix="astra-bench-load-", dir="/tmp"))
    os.chmod(workdir, 0o755)  # as root the cluster runs as the unprivileged `postgres` user
    cluster = EmbeddedPostgres(workdir / "db")
    server: Serve | None = None
    try:
        cluster.start()
        dsn = cluster.dsn()
        print(f"Loading {args.items:,} items under {workdir}")
        took = load_database(dsn, args.items, args.seed, "year")
        load_seconds = f"{took:.0f} s ({args.items / took:,.0f} items/s)"
        serve_dir = workdir / "serve"
        storage = serve_dir / "storage"  # `serve --data-dir` serves files from here
        demo = load_demo_scenes(dsn, storage)
        with_files = give_band_files(dsn, storage, args.band_scenes, args.seed)
        scenes = list(dict.fromkeys([f"{PREFIX_OF[c]}:{i}" for c, i in item_ids(dsn)] + demo))
        key = store.create_key(dsn, "bench-load", Scope.read)[0].secret
        server = Serve(
            "astra",
            "astra-stac serve",
            {
                "ASTRA_DATABASE_URL": dsn,
                # Keep the rate limiter in the path, but never let it refuse a request.
                "ASTRA_RATE_LIMIT_PER_MINUTE": str(10**9),
            },
            f"{API}/_mgmt/ping",
            data_dir=serve_dir,
        )
        server.start(args.workers, workdir)
        assert server.process is not None
        pid = server.process.pid
        uvloop.install()
        mix = Mix(server.base, key, scenes, with_files + demo)

        async def setup() -> None:
            async with aiohttp.ClientSession() as session:
                await server.wait_ready(session, timeout=300)
                await prepare_mix(mix, session)

        asyncio.run(setup())
        print(
            f"{len(mix.scenes):,} scenes ({len(demo)} demo), {len(mix.band_scenes)} with band "
            f"files ({sum(len(t) for t in mix.tiles.values()):,} tiles at zooms {TILE_ZOOMS})"
        )
        rss_idle = tree_rss(pid)
        load_before = _load_average()

        def run(name: str, connections: int, seconds: float, seed: int) -> Phase:
            print(f"{name}: {connections} connection(s), {seconds:.0f} s", flush=True)
            return asyncio.run(
                drive(mix, connections, seconds, args.max_requests, args.timeout, seed)
            )

        warmup = run("warm-up", args.connections, args.warmup_seconds, args.seed)
        baseline = run("baseline", 1, args.baseline_seconds, args.seed + 1)
        load = run("load", args.connections, args.seconds, args.seed + 2)
        print_rows("load", load.summary())
        rss_after_load = tree_rss(pid)

        async def soak() -> tuple[Phase, list[tuple[float, int]]]:
            samples: list[tuple[float, int]] = []
            stop = asyncio.Event()
            sampler = asyncio.create_task(sample_rss(pid, args.rss_interval, samples, stop))
            phase = await drive(
                mix,
                args.connections,
                args.soak_seconds,
                args.max_requests,
                args.timeout,
                args.seed + 3,
            )
            stop.set()
            await sampler
            return phase, samples

        print(f"soak: {args.connections} connections, {args.soak_seconds:.0f} s", flush=True)
        soaked, samples = asyncio.run(soak())
        print_rows("soak", soaked.summary())
        rss = rss_report(samples, min(args.soak_warmup, args.soak_seconds / 5))
        print(
            f"\nRSS start {rss['start_mib']:.0f} MiB, warm {rss['warm_mib']:.0f} MiB, max "
            f"{rss['max_mib']:.0f} MiB, end {rss['end_mib']:.0f} MiB "
            f"({'steady' if rss['steady'] else 'NOT steady'})"
        )
        phases = {"baseline": baseline, "load": load, "soak": soaked}
        errors = sum(sum(p.errors.values()) for p in (warmup, *phases.values()))
        problems = log_problems(server.log) if server.log else []
        report = {
            "finished": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
            "command": " ".join(["python", "benchmarks/bench_load.py", *sys.argv[1:]]),
            "parameters": {
                k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()
            },
            "environment": environment(dsn),
            "load_seconds": load_seconds,
            "load_before": load_before,
            "load_after": _load_average(),
            "scenes": len(mix.scenes),
            "demo_scenes": len(demo),
            "band_scenes": len(mix.band_scenes),
            "errors": errors,
            "error_messages": [m for p in (warmup, *phases.values()) for m in p.messages][:20],
            "server_log_problems": problems,
            "rss_idle_mib": rss_idle / 2**20,
            "rss_after_load_mib": rss_after_load / 2**20,
            "phases": {name: phase.summary() for name, phase in phases.items()},
            "soak_rss": rss,
        }
        args.output_dir.mkdir(parents=True, exist_ok=True)
        stem = args.output_dir / f"load-{args.items}"
        stem.with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n")
        stem.with_suffix(".md").write_text(markdown(report))
        print(f"\n{errors} error(s); wrote {stem}.md and {stem}.json")
        return 1 if errors or not rss["steady"] else 0
    finally:
        if server is not None:
            server.stop()
        cluster.stop()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
