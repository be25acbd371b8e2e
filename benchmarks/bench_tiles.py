#!/usr/bin/env python
"""Scene tiles: astra-stac's tiler against bare titiler.core on the same local COG.

What it does, in order:

1. starts its own embedded PostgreSQL under a temporary directory in /tmp, migrates
   a database and loads the demo scenes (their band files are generated 256×256
   uint16 COGs under the same directory), and creates a read API key;
2. serves, each under a real `uvicorn[standard]` (uvloop + httptools, same worker
   count), on loopback:
   - `astra`: `astra_stac.app:create_app`, tiles at
     `/api/v1/scenes/earth-search:S2A_13TDE_20231008_0_L2A/tiles/WebMercatorQuad/{z}/{x}/{y}.png?bands=red`
     (key check, scene lookup, band mapping, then rio-tiler);
   - `titiler`: a bare titiler.core `TilerFactory` app (this file's `bare_app`),
     tiles at `/tiles/WebMercatorQuad/{z}/{x}/{y}.png?url=<the red band's COG>`;
3. checks both answer the same PNG bytes for a sample of tiles;
4. for 1 and 8 connections, in interleaved rounds, requests every tile of the
   scene's footprint at zooms 8-11 (256×256 PNG, `rescale=0,10000`) from:
   astra with a Bearer key, astra with a signed URL from its TileJSON (no key),
   and bare titiler; prints req/s, p50, p99 and the ratio astra ÷ titiler; writes
   `benchmarks/results/tiles.md` and `.json`.

    .venv/bin/python benchmarks/bench_tiles.py
    .venv/bin/python benchmarks/bench_tiles.py --requests 3000 --rounds 3 --workers 1
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import aiohttp
import morecantile

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from bench_items import (  # noqa: E402
    BenchmarkFailure,
    Server,
    _version,
    environment_section,
    summarise,
)

SCENE = "earth-search:S2A_13TDE_20231008_0_L2A"
BAND_FILE = Path("demo/earth-search/S2A_13TDE_20231008_0_L2A/red.tif")
ZOOMS = (8, 9, 10, 11)
RENDER = {"rescale": "0,10000"}
RESULTS = ROOT / "benchmarks" / "results"
_TILE = (
    f"/api/v1/scenes/{SCENE}/tiles/WebMercatorQuad/{{z}}/{{x}}/{{y}}.png?bands=red&rescale=0,10000"
)
ROUTES = {
    "astra-key": f"{_TILE} + Authorization: Bearer",
    "astra-signed": f"{_TILE}&tilesize=256&expires=…&sig=… (from the TileJSON), no key",
    "titiler": "/tiles/WebMercatorQuad/{z}/{x}/{y}.png?url=<file>&rescale=0,10000",
}
NOTES = """\
What astra adds per request, and titiler does not: its middleware (request id,
metrics, access log at warning level, CORS, proxy headers, body-size limit, rate
limiter), the key check — **astra-key reads the key row from PostgreSQL on every
request** (so a revoked key fails on its next request): one database round trip
per tile; astra-signed checks an HMAC instead —, the scene lookup (cached per
worker for `ASTRA_TILER_SCENE_CACHE_SECONDS`), band mapping (memoised per scene)
and rio-tiler's multi-asset reader over the one band. One thing astra does with
less work: it checks that a tile meets the scene (the scene's bounds, then the
file's) with a PROJ transformer made once per pair of CRSs, where rio-tiler's
`tile_exists` builds one per call through rasterio's `transform_bounds`
(~0.5 ms). Both servers log nothing per request. On a shared 2-core machine the
ratios between servers, measured in interleaved rounds, are more telling than
the absolute numbers.
"""


def bare_app() -> Any:
    """titiler.core as its docs show it: a `TilerFactory` reading `?url=`."""
    from fastapi import FastAPI
    from titiler.core.errors import DEFAULT_STATUS_CODES, add_exception_handlers
    from titiler.core.factory import TilerFactory

    app = FastAPI()
    app.include_router(TilerFactory().router)
    add_exception_handlers(app, DEFAULT_STATUS_CODES)

    @app.get("/ping")
    def ping() -> dict[str, str]:
        return {"message": "PONG"}

    return app


def footprint_tiles(cog: Path) -> list[morecantile.Tile]:
    """Every WebMercatorQuad tile of `ZOOMS` that the COG covers."""
    import rasterio
    from rasterio.warp import transform_bounds

    with rasterio.open(cog) as dataset:
        west, south, east, north = transform_bounds(dataset.crs, "EPSG:4326", *dataset.bounds)
    tms = morecantile.tms.get("WebMercatorQuad")
    tiles = [t for z in ZOOMS for t in tms.tiles(west, south, east, north, [z])]
    # Inner tiles only: edge tiles are partly empty, and the same for both servers anyway.
    return [t for t in tiles if _inside(tms, t, (west, south, east, north))] or tiles


def _inside(tms: morecantile.TileMatrixSet, tile: morecantile.Tile, bounds: tuple) -> bool:
    b = tms.bounds(tile)
    return (
        b.left >= bounds[0]
        and b.right <= bounds[2]
        and b.bottom >= bounds[1]
        and b.top <= bounds[3]
    )


@dataclass(frozen=True)
class Series:
    """A way of asking for a tile."""

    name: str
    server: str
    headers: dict[str, str]
    template: str  # with {z}/{x}/{y}

    def url(self, base: str, tile: morecantile.Tile) -> str:
        return base + self.template.format(z=tile.z, x=tile.x, y=tile.y)


async def _get(session: aiohttp.ClientSession, url: str, headers: dict[str, str]) -> int:
    started = time.perf_counter_ns()
    async with session.get(url, headers=headers) as response:
        body = await response.read()
        elapsed = time.perf_counter_ns() - started
        if response.status != 200 or not body.startswith(b"\x89PNG"):
            raise BenchmarkFailure(f"GET {url} answered {response.status}: {body[:300]!r}")
    return elapsed


async def run_series(
    base: str, series: Series, tiles: list[morecantile.Tile], concurrency: int
) -> tuple[list[int], float]:
    """Latencies (ns) of every request and the wall time (s)."""
    connector = aiohttp.TCPConnector(limit=concurrency, force_close=False)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def worker(share: list[morecantile.Tile], out: list[int]) -> None:
            for tile in share:
                out.append(await _get(session, series.url(base, tile), series.headers))

        outs: list[list[int]] = [[] for _ in range(concurrency)]
        started = time.perf_counter()
        await asyncio.gather(*(worker(tiles[i::concurrency], outs[i]) for i in range(concurrency)))
        return [x for out in outs for x in out], time.perf_counter() - started


async def check_same_tiles(
    servers: dict[str, Server], series: list[Series], tiles: list[morecantile.Tile]
) -> None:
    async with aiohttp.ClientSession() as session:
        for tile in tiles:
            bodies = {}
            for s in series:
                async with session.get(s.url(servers[s.server].base, tile), headers=s.headers) as r:
                    bodies[s.name] = (r.status, await r.read())
            if len({b for b in bodies.values()}) != 1:
                statuses = {k: v[0] for k, v in bodies.items()}
                raise BenchmarkFailure(f"tile {tile} differs between servers: {statuses}")


def environment() -> dict[str, Any]:
    return {
        "python": platform.python_version(),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
        "titiler.core": _version("titiler.core"),
        "rio-tiler": _version("rio-tiler"),
        "rasterio": _version("rasterio"),
        "uvicorn": _version("uvicorn"),
    }


async def measure(
    servers: dict[str, Server],
    series: list[Series],
    tiles: list[morecantile.Tile],
    args: argparse.Namespace,
) -> dict[str, Any]:
    results: dict[str, Any] = {}
    for concurrency in args.levels:
        per_series: dict[str, tuple[list[int], float]] = {s.name: ([], 0.0) for s in series}
        for s in series:  # warm-up: GDAL caches, scene cache, connection pools
            await run_series(servers[s.server].base, s, tiles[: args.warmup], concurrency)
        for round_no in range(args.rounds):
            shift = round_no % len(series)  # each series goes first in turn
            for s in series[shift:] + series[:shift]:
                share = [tiles[i % len(tiles)] for i in range(args.requests // args.rounds)]
                latencies, seconds = await run_series(servers[s.server].base, s, share, concurrency)
                done, took = per_series[s.name]
                per_series[s.name] = (done + latencies, took + seconds)
        level = {name: summarise(*value) for name, value in per_series.items()}
        bare = level["titiler"]
        for row in level.values():
            row["ratio_req_per_s"] = row["req_per_s"] / bare["req_per_s"]
            row["ratio_p50"] = bare["p50_ms"] / row["p50_ms"]
        results[str(concurrency)] = level
        print(f"\n{concurrency} connection(s)")
        for name, row in level.items():
            print(
                f"  {name:<14} {row['req_per_s']:8.0f} req/s  p50 {row['p50_ms']:6.2f} ms"
                f"  p99 {row['p99_ms']:6.2f} ms  ×titiler {row['ratio_req_per_s']:.2f}"
            )
    return results


def markdown(report: dict[str, Any], routes: dict[str, str]) -> str:
    params = report["parameters"]
    lines = [
        "# Scene tiles: astra-stac vs bare titiler.core",
        "",
        f"Run {report['finished']} with `{report['command']}`.",
        "",
        f"The same 256×256 uint16 COG (a demo band file), {params['tiles']} WebMercatorQuad "
        f"tiles inside its footprint at zooms {ZOOMS[0]}-{ZOOMS[-1]}, rendered as 256×256 PNG "
        f"with `rescale=0,10000`; {params['requests']} measured requests per row in "
        f"{params['rounds']} interleaved rounds (order rotated) after {params['warmup']} "
        "warm-up requests; "
        f"uvicorn[standard] (uvloop, httptools) with {params['workers']} worker(s) per server, "
        "access log off; both servers answer byte-identical PNGs (checked first). "
        "Ratio = astra ÷ titiler (req/s; and titiler p50 ÷ astra p50).",
        "",
        "| series | request |",
        "|---|---|",
        *[f"| {name} | `{route}` |" for name, route in routes.items()],
        "",
    ]
    for level, rows in report["results"].items():
        lines += [
            f"## {level} connection(s)",
            "",
            "| series | req/s | p50 ms | p99 ms | ×titiler req/s | ×titiler p50 |",
            "|---|---:|---:|---:|---:|---:|",
        ]
        for name, row in rows.items():
            lines.append(
                f"| {name} | {row['req_per_s']:.0f} | {row['p50_ms']:.2f} | {row['p99_ms']:.2f} "
                f"| {row['ratio_req_per_s']:.2f} | {row['ratio_p50']:.2f} |"
            )
        lines.append("")
    lines += [NOTES]
    lines += [
        *environment_section(report),
    ]
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=2000, help="measured requests per row")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--warmup", type=int, default=100)
    parser.add_argument("--workers", type=int, default=1, help="uvicorn workers per server")
    parser.add_argument("--levels", type=int, nargs="+", default=[1, 8], help="connections")
    parser.add_argument("--output-dir", type=Path, default=RESULTS)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    from astra_stac.auth import store
    from astra_stac.auth.keys import Scope
    from astra_stac.db.embedded import EmbeddedPostgres
    from astra_stac.db.migrate import migrate
    from astra_stac.demo import load_demo
    from astra_stac.providers import load_registry

    args = parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="astra-bench-tiles-", dir="/tmp"))
    os.chmod(workdir, 0o755)
    cluster = EmbeddedPostgres(workdir / "db")
    servers: list[Server] = []
    try:
        cluster.start()
        dsn = cluster.dsn()
        migrate(dsn)
        storage = workdir / "storage"
        load_demo(dsn, load_registry(), storage)
        key = store.create_key(dsn, "bench-tiles", Scope.read)[0].secret
        cog = (storage / BAND_FILE).resolve()
        tiles = footprint_tiles(cog)
        print(f"{len(tiles)} tiles at zooms {ZOOMS} inside {cog}")

        astra_env = {
            "ASTRA_DATABASE_URL": dsn,
            "ASTRA_STORAGE_ROOT": str(storage),
            "ASTRA_RATE_LIMIT_PER_MINUTE": str(10**9),
            "ASTRA_JSON_LOGS": "false",
            "ASTRA_LOG_LEVEL": "warning",
        }
        quiet = ["--log-level", "warning", "--no-access-log"]
        bare_env = {"PYTHONPATH": str(ROOT / "benchmarks")}
        servers = [
            Server(
                "astra", "astra_stac.app:create_app", astra_env, "/api/v1/_mgmt/ping", options=quiet
            ),
            Server("titiler", "bench_tiles:bare_app", bare_env, "/ping", options=quiet),
        ]
        by_name = {s.name: s for s in servers}
        for server in servers:
            server.start(args.workers, workdir)

        async def ready() -> str:
            async with aiohttp.ClientSession() as session:
                for server in servers:
                    await server.wait_ready(session)
                params = {"bands": "red", "tile_format": "png", "tilesize": 256, **RENDER}
                tilejson = (
                    f"{by_name['astra'].base}/api/v1/scenes/{SCENE}/WebMercatorQuad/tilejson.json"
                    f"?{urlencode(params)}"
                )
                async with session.get(
                    tilejson, headers={"Authorization": f"Bearer {key}"}
                ) as response:
                    if response.status != 200:
                        raise BenchmarkFailure(
                            f"TileJSON: {response.status} {await response.text()}"
                        )
                    signed = str((await response.json())["tiles"][0])
            return signed.removeprefix(by_name["astra"].base)

        signed_template = asyncio.run(ready())
        query = urlencode({"bands": "red", **RENDER})
        series = [
            Series(
                "astra-key",
                "astra",
                {"Authorization": f"Bearer {key}"},
                f"/api/v1/scenes/{SCENE}/tiles/WebMercatorQuad/{{z}}/{{x}}/{{y}}.png?{query}",
            ),
            Series("astra-signed", "astra", {}, signed_template),
            Series(
                "titiler",
                "titiler",
                {},
                "/tiles/WebMercatorQuad/{z}/{x}/{y}.png?" + urlencode({"url": str(cog), **RENDER}),
            ),
        ]
        asyncio.run(check_same_tiles(by_name, series, tiles[:: max(1, len(tiles) // 20)]))
        print("astra and titiler answer byte-identical PNGs for the sampled tiles")
        load_before = ", ".join(f"{x:.2f}" for x in os.getloadavg())
        results = asyncio.run(measure(by_name, series, tiles, args))
        report = {
            "finished": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
            "command": " ".join(["python", "benchmarks/bench_tiles.py", *sys.argv[1:]]),
            "parameters": {
                "tiles": len(tiles),
                "requests": args.requests // args.rounds * args.rounds,
                "rounds": args.rounds,
                "warmup": args.warmup,
                "workers": args.workers,
                "levels": args.levels,
            },
            "environment": environment(),
            "load_before": load_before,
            "load_after": ", ".join(f"{x:.2f}" for x in os.getloadavg()),
            "results": results,
        }
        args.output_dir.mkdir(parents=True, exist_ok=True)
        (args.output_dir / "tiles.json").write_text(json.dumps(report, indent=2) + "\n")
        (args.output_dir / "tiles.md").write_text(markdown(report, ROUTES))
        print(f"\nWrote {args.output_dir / 'tiles.md'} and tiles.json")
        return 0
    finally:
        for server in servers:
            server.stop()
        cluster.stop()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
