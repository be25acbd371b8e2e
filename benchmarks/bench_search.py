#!/usr/bin/env python
"""Unified search: astra-stac against plain stac-fastapi-pgstac on the same database.

What it does, in order:

1. the database of `bench_items.py` (its embedded PostgreSQL, synthetic Sentinel-2 and
   Landsat scenes, pypgstac loader, yearly partitions), with `--items` scenes
   (default 1,000,000); `--keep-db DIR` keeps it for the next run. A kept database
   is migrated again on reuse, so new astra migrations (indexes) reach it;
2. the three servers of `bench_items.py`: astra-stac with production settings,
   plain stac-fastapi-pgstac 7.2 default, and plain with `USE_API_HYDRATE=true`;
3. `--searches` fixed random searches (seeded, the same for every server):
   a bbox of 1-4 degrees around a real scene, a datetime range of 1-6 months,
   `eo:cloud_cover < T` (T in 10, 20, 30, 50) as a CQL2-JSON filter, limit 10,
   POSTed to `/api/v1/search` (astra) and `/search` (plain). Every server must
   answer the same features (apart from `id` and `links`) in the same order;
4. measures them at 1 and 8 keep-alive connections in interleaved rounds, and
   pages through 1,000 results of one wide search in pages of 100 following the
   `next` links, timed per server;
5. prints the table and writes `benchmarks/results/search-<N>.md` and `.json`.

    .venv/bin/python benchmarks/bench_search.py --keep-db /tmp/astra-search-1m
    .venv/bin/python benchmarks/bench_search.py --items 10000 --keep-db /tmp/astra-search-10k
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import math
import os
import random
import shutil
import signal
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import psycopg
from bench_items import (
    END,
    RESULTS,
    START,
    BenchmarkFailure,
    Server,
    _exit_on_sigterm,
    _prepare_dir,
    environment,
    environment_section,
    make_servers,
    open_database,
    summarise,
)

from astra_stac.auth import store
from astra_stac.auth.keys import Scope
from astra_stac.db.embedded import EmbeddedPostgres

SEARCH_PATH = {"astra": "/api/v1/search", "plain-default": "/search", "plain-hydrate": "/search"}
SERVERS = list(SEARCH_PATH)
CLOUD_THRESHOLDS = (10, 20, 30, 50)
PAGE_SIZE = 100
PAGED_RESULTS = 1000
JSON = {"Content-Type": "application/json"}


def _cloud_filter(threshold: float) -> dict[str, Any]:
    return {"op": "<", "args": [{"property": "eo:cloud_cover"}, threshold]}


def _interval(start: dt.datetime, end: dt.datetime) -> str:
    return f"{start:%Y-%m-%dT%H:%M:%SZ}/{end:%Y-%m-%dT%H:%M:%SZ}"


def scene_centres(dsn: str, count: int, seed: int) -> list[tuple[float, float]]:
    """Centres of `count` random scenes: bboxes around them find something."""
    with psycopg.connect(dsn) as conn:
        conn.execute("SELECT setseed(%s)", (seed % 1000 / 1000,))
        rows = conn.execute(
            "SELECT ST_X(c), ST_Y(c) FROM (SELECT ST_Centroid(geometry) AS c FROM pgstac.items"
            " ORDER BY random() LIMIT %s) s",
            (count,),
        ).fetchall()
    return [(float(x), float(y)) for x, y in rows]


def make_searches(centres: list[tuple[float, float]], seed: int) -> list[dict[str, Any]]:
    """bbox + datetime + cloud-cover searches, limit 10, one per centre."""
    rng = random.Random(seed)
    span = (END - START).total_seconds()
    searches = []
    for lon, lat in centres:
        half = rng.uniform(0.5, 2.0)
        start = START + dt.timedelta(seconds=rng.uniform(0, span * 0.85))
        end = min(END, start + dt.timedelta(days=rng.randint(30, 180)))
        searches.append(
            {
                "bbox": [
                    round(max(-180.0, lon - half), 4),
                    round(max(-90.0, lat - half), 4),
                    round(min(180.0, lon + half), 4),
                    round(min(90.0, lat + half), 4),
                ],
                "datetime": _interval(start, end),
                "filter-lang": "cql2-json",
                "filter": _cloud_filter(rng.choice(CLOUD_THRESHOLDS)),
                "limit": 10,
            }
        )
    return searches


# A continent and four years: well over 1,000 matches at every size this benchmark is run at.
PAGED_SEARCH = {
    "bbox": [-30.0, -60.0, 60.0, 75.0],
    "datetime": "2021-01-01T00:00:00Z/2024-12-31T23:59:59Z",
    "filter-lang": "cql2-json",
    "filter": _cloud_filter(50),
    "limit": PAGE_SIZE,
}


def _comparable(feature: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in feature.items() if k not in ("id", "links")}


async def _post(
    session: aiohttp.ClientSession, url: str, body: dict[str, Any], headers: dict[str, str]
) -> tuple[int, dict[str, Any]]:
    """One search; its latency in ns and the parsed answer. Anything but 200 stops the run."""
    started = time.perf_counter_ns()
    async with session.post(url, data=orjson.dumps(body), headers=JSON | headers) as response:
        raw = await response.read()
        elapsed = time.perf_counter_ns() - started
        if response.status != 200:
            raise BenchmarkFailure(f"POST {url} answered {response.status}: {raw[:500]!r}")
    return elapsed, orjson.loads(raw)


async def _follow(
    session: aiohttp.ClientSession, link: dict[str, Any], headers: dict[str, str]
) -> dict[str, Any]:
    """Follow a `next` link as it says: GET its href, or POST its body."""
    if link.get("method", "GET").upper() == "POST":
        async with session.post(link["href"], json=link.get("body"), headers=headers) as response:
            raw = await response.read()
            status = response.status
    else:
        async with session.get(link["href"], headers=headers) as response:
            raw = await response.read()
            status = response.status
    if status != 200:
        raise BenchmarkFailure(f"{link['href']} answered {status}: {raw[:500]!r}")
    return dict(orjson.loads(raw))


def _next_link(page: dict[str, Any]) -> dict[str, Any] | None:
    return next((link for link in page.get("links", []) if link.get("rel") == "next"), None)


async def check_same_results(
    bases: dict[str, str], searches: list[dict[str, Any]], headers: dict[str, str]
) -> int:
    """Every server answers every search with the same features in the same order."""
    total = 0
    async with aiohttp.ClientSession(headers=headers) as session:
        for body in searches:
            answers = {}
            for name, base in bases.items():
                _, page = await _post(session, base + SEARCH_PATH[name], body, {})
                answers[name] = [_comparable(f) for f in page["features"]]
                answers[name + " next"] = _next_link(page) is not None
            for name in SERVERS:
                if answers[name] != answers["plain-default"]:
                    raise BenchmarkFailure(f"{name} answers {body} unlike plain-default")
                if answers[name + " next"] != answers["plain-default next"]:
                    raise BenchmarkFailure(f"{name} pages {body} unlike plain-default")
            total += len(answers["plain-default"])
    return total


async def _run(
    session: aiohttp.ClientSession, url: str, searches: list[dict[str, Any]], concurrency: int
) -> tuple[list[int], float]:
    """Latencies (ns) of these searches over `concurrency` connections, and the wall time."""
    outs: list[list[int]] = [[] for _ in range(concurrency)]

    async def worker(share: list[dict[str, Any]], out: list[int]) -> None:
        for body in share:
            out.append((await _post(session, url, body, {}))[0])

    started = time.perf_counter()
    await asyncio.gather(*(worker(searches[i::concurrency], outs[i]) for i in range(concurrency)))
    return [x for out in outs for x in out], time.perf_counter() - started


async def measure(
    bases: dict[str, str], args: argparse.Namespace, searches: list[dict[str, Any]]
) -> dict[str, Any]:
    """Warm every server up, then measure them in short interleaved rounds."""
    headers = {"Authorization": f"Bearer {args.key}", "Accept-Encoding": args.accept_encoding}
    warmup = searches[: args.warmup]
    count = len(searches)
    measured = [searches[i % count] for i in range(args.warmup, args.warmup + args.requests)]
    per_round = math.ceil(args.requests / args.rounds)
    results: dict[str, Any] = {}
    for level in args.levels:
        sessions = {
            name: aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=level), headers=headers
            )
            for name in SERVERS
        }
        latencies: dict[str, list[int]] = {name: [] for name in SERVERS}
        seconds = dict.fromkeys(SERVERS, 0.0)
        try:
            for name in SERVERS:
                await _run(sessions[name], bases[name] + SEARCH_PATH[name], warmup, level)
            for round_no in range(args.rounds):
                chunk = measured[round_no * per_round : (round_no + 1) * per_round]
                shift = round_no % len(SERVERS)
                for name in SERVERS[shift:] + SERVERS[:shift]:
                    url = bases[name] + SEARCH_PATH[name]
                    lat, wall = await _run(sessions[name], url, chunk, level)
                    latencies[name].extend(lat)
                    seconds[name] += wall
        finally:
            for session in sessions.values():
                await session.close()
        results[str(level)] = {name: summarise(latencies[name], seconds[name]) for name in SERVERS}
        print(f"  {level} connection(s): {args.rounds} rounds done", flush=True)
    return results


async def page_through(
    bases: dict[str, str], args: argparse.Namespace
) -> dict[str, dict[str, float]]:
    """Seconds to read 1,000 results in pages of 100 following `next`, per server (median)."""
    headers = {"Authorization": f"Bearer {args.key}", "Accept-Encoding": args.accept_encoding}
    times: dict[str, list[float]] = {name: [] for name in SERVERS}
    async with aiohttp.ClientSession(headers=headers) as session:
        for repeat in range(args.paging_repeats + 1):  # the first pass warms up
            for name in SERVERS:
                started = time.perf_counter()
                _, page = await _post(session, bases[name] + SEARCH_PATH[name], PAGED_SEARCH, {})
                count = len(page["features"])
                while count < PAGED_RESULTS:
                    link = _next_link(page)
                    if link is None:
                        raise BenchmarkFailure(f"{name}: no next link after {count} results")
                    page = await _follow(session, link, {})
                    count += len(page["features"])
                if repeat:
                    times[name].append(time.perf_counter() - started)
    return {
        name: {"median_s": sorted(values)[len(values) // 2], "max_s": max(values)}
        for name, values in times.items()
    }


def ratios(results: dict[str, Any]) -> dict[str, Any]:
    """astra req/s ÷ plain req/s, against each plain setting and the better of the two."""
    out: dict[str, Any] = {}
    for conc, rows in results.items():
        best = max(("plain-default", "plain-hydrate"), key=lambda n: rows[n]["req_per_s"])
        out[conc] = {
            "plain_best": best,
            "vs_plain-default": rows["astra"]["req_per_s"] / rows["plain-default"]["req_per_s"],
            "vs_plain-hydrate": rows["astra"]["req_per_s"] / rows["plain-hydrate"]["req_per_s"],
            "vs_plain-best": rows["astra"]["req_per_s"] / rows[best]["req_per_s"],
        }
    return out


def targets(
    results: dict[str, Any], speedups: dict[str, Any], paging: dict[str, Any]
) -> list[dict[str, Any]]:
    """The issue's targets: at one connection, and the paging time."""
    checks = [
        {
            "target": "astra paging 1,000 results in pages of 100 < 2 s",
            "value": paging["astra"]["median_s"],
            "unit": "s",
            "ok": paging["astra"]["median_s"] < 2.0,
        }
    ]
    if "1" in results:
        one = speedups["1"]
        checks = [
            {
                "target": "≥ 2× plain default (req/s, 1 connection)",
                "value": one["vs_plain-default"],
                "unit": "×",
                "ok": one["vs_plain-default"] >= 2.0,
            },
            {
                "target": f"≥ 1.0× plain best, {one['plain_best']} (req/s, 1 connection)",
                "value": one["vs_plain-best"],
                "unit": "×",
                "ok": one["vs_plain-best"] >= 1.0,
            },
            {
                "target": "astra p50 < 25 ms at 1 connection",
                "value": results["1"]["astra"]["p50_ms"],
                "unit": " ms",
                "ok": results["1"]["astra"]["p50_ms"] < 25.0,
            },
            *checks,
        ]
    return checks


def markdown(report: dict[str, Any]) -> str:
    params = report["parameters"]
    lines = [
        f"# Unified search, {params['items']:,} items",
        "",
        f"Run {report['finished']} with `{report['command']}`.",
        "",
        f"{params['items']:,} synthetic scenes (half `es-sentinel-2-l2a`, half "
        f"`pc-landsat-c2-l2`), pgstac partitioned by `{params['partition']}` per collection. "
        f"{params['searches']} fixed random searches (bbox of 1-4° around a real scene, "
        "datetime range of 1-6 months, CQL2-JSON `eo:cloud_cover < 10|20|30|50`, limit 10, "
        f"POST), {report['matched_features']} features in all, checked identical (apart from "
        f"`id` and `links`) on every server; {params['requests']:,} measured searches per row "
        f"over {params['rounds']} interleaved rounds after {params['warmup']} warm-up searches; "
        f"uvicorn[standard] with {params['workers']} worker(s) per server; "
        f"`Accept-Encoding: {params['accept_encoding']}`. Speed-up = astra req/s ÷ plain req/s.",
        "",
    ]
    for conc, rows in report["results"].items():
        speed = report["ratios"][conc]
        lines += [
            f"## {conc} connection{'s' if conc != '1' else ''}",
            "",
            "| server | p50 ms | p90 ms | p99 ms | req/s | astra × |",
            "|---|---:|---:|---:|---:|---:|",
        ]
        for name in SERVERS:
            stats = rows[name]
            vs = "" if name == "astra" else f"{speed[f'vs_{name}']:.2f}"
            lines.append(
                f"| {name} | {stats['p50_ms']:.2f} | {stats['p90_ms']:.2f} | "
                f"{stats['p99_ms']:.2f} | {stats['req_per_s']:,.1f} | {vs} |"
            )
        lines += ["", f"plain-best at {conc} connection(s): {speed['plain_best']}.", ""]
    lines += [
        f"## Paging: {PAGED_RESULTS:,} results in pages of {PAGE_SIZE}, following `next`",
        "",
        f"`{json.dumps(PAGED_SEARCH)}`, median of {params['paging_repeats']} passes.",
        "",
        "| server | median s | max s |",
        "|---|---:|---:|",
        *(
            f"| {name} | {row['median_s']:.3f} | {row['max_s']:.3f} |"
            for name, row in report["paging"].items()
        ),
        "",
        "## Targets",
        "",
        "| target | value | met |",
        "|---|---:|---|",
        *(
            f"| {c['target']} | {c['value']:.2f}{c['unit']} | {'yes' if c['ok'] else 'NO'} |"
            for c in report["targets"]
        ),
        "",
        *environment_section(report, f"data load: {report['load_seconds']}"),
    ]
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--items", type=int, default=1_000_000, help="synthetic scenes to load")
    parser.add_argument("--searches", type=int, default=200, help="distinct fixed searches")
    parser.add_argument("--requests", type=int, default=600, help="measured searches per row")
    parser.add_argument("--warmup", type=int, default=60, help="warm-up searches per row")
    parser.add_argument("--rounds", type=int, default=10, help="interleaved rounds")
    parser.add_argument("--paging-repeats", type=int, default=3, help="timed paging passes")
    parser.add_argument("--workers", type=int, default=1, help="uvicorn workers per server")
    parser.add_argument("--concurrency", default="1,8", help="keep-alive connection counts")
    parser.add_argument("--keep-db", type=Path, metavar="DIR", help="keep the database under DIR")
    parser.add_argument("--partition", choices=("year", "month", "none"), default="year")
    parser.add_argument("--seed", type=int, default=20231008)
    parser.add_argument("--accept-encoding", default="gzip")
    parser.add_argument("--output-dir", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    args.levels = [int(c) for c in args.concurrency.split(",") if c.strip()]
    if args.items < 2 or args.requests < 1 or args.rounds < 1 or not args.levels:
        parser.error("--items ≥ 2, --requests ≥ 1, --rounds ≥ 1 and one --concurrency at least")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    data_dir = _prepare_dir(args)
    cluster: EmbeddedPostgres | None = None
    servers: list[Server] = []
    try:
        cluster, dsn, args.load_seconds = open_database(args, data_dir)
        args.key = store.create_key(dsn, f"bench-{os.getpid()}-{int(time.time())}", Scope.read)[
            0
        ].secret
        searches = make_searches(scene_centres(dsn, args.searches, args.seed), args.seed)
        servers = make_servers(cluster, dsn)
        for server in servers:
            server.start(args.workers, data_dir)

        async def ready() -> None:
            async with aiohttp.ClientSession() as session:
                for server in servers:
                    await server.wait_ready(session)

        asyncio.run(ready())
        bases = {s.name: s.base for s in servers}
        matched = asyncio.run(
            check_same_results(bases, searches, {"Authorization": f"Bearer {args.key}"})
        )
        print(f"All servers answer the same {matched} features for {len(searches)} searches")

        load_before = ", ".join(f"{x:.2f}" for x in os.getloadavg())
        print(f"Measuring (load average {load_before})")
        results = asyncio.run(measure(bases, args, searches))
        paging = asyncio.run(page_through(bases, args))
        speedups = ratios(results)
        report = {
            "finished": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
            "command": " ".join(["python", "benchmarks/bench_search.py", *sys.argv[1:]]),
            "parameters": {
                key: getattr(args, key.replace("-", "_"))
                for key in (
                    "items",
                    "searches",
                    "requests",
                    "warmup",
                    "rounds",
                    "paging_repeats",
                    "workers",
                    "partition",
                    "seed",
                    "accept_encoding",
                )
            }
            | {"concurrency": args.levels},
            "environment": environment(dsn),
            "load_seconds": args.load_seconds,
            "load_before": load_before,
            "load_after": ", ".join(f"{x:.2f}" for x in os.getloadavg()),
            "matched_features": matched,
            "results": results,
            "ratios": speedups,
            "paging": paging,
            "targets": targets(results, speedups, paging),
        }
        text = markdown(report)
        print("\n" + text)
        args.output_dir.mkdir(parents=True, exist_ok=True)
        stem = args.output_dir / f"search-{args.items}"
        stem.with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n")
        stem.with_suffix(".md").write_text(text)
        print(f"Wrote {stem}.md and {stem}.json")
        return 0
    finally:
        for server in servers:
            server.stop()
        if cluster is not None:
            cluster.stop()
        if args.keep_db is None:
            shutil.rmtree(data_dir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
