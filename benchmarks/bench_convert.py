#!/usr/bin/env python
"""COG conversion: astra-stac's conversion path against `rio cogeo create` on the same file.

What it does, in order:

1. writes a 5490×5490 uint16 GeoTIFF (a Sentinel-2 20 m band's size) with
   rasterio: striped, uncompressed, no overviews — not a COG — with imagery-like
   content (field parcels, a smooth large-scale gradient, sensor noise and a
   nodata wedge where the orbit swath ends);
2. converts it `--rounds` times each, alternating which goes first:
   - `astra`: `Converter.ensure` from `astra_stac.assets.convert`, the call the
     Asset Resolver makes for a non-COG source, in this process, with its cache
     directory emptied before every round (so every round converts);
   - `rio-cogeo CLI`: `rio cogeo create <src> <dst> --cog-profile <profile>` as a
     user runs it (a new process each time, so Python's start-up and imports
     are part of its time);
   - `rio-cogeo library` (for information): `rio_cogeo.cog_translate` with the
     CLI's own options, in this process (the CLI without its start-up);
3. checks that every output is a valid COG (rio-cogeo, strict) and that its full
   resolution pixels and mask equal the source's;
4. prints median seconds and astra's speed ÷ each baseline's, and writes
   `benchmarks/results/convert.md` and `.json`.

    .venv/bin/python benchmarks/bench_convert.py
    .venv/bin/python benchmarks/bench_convert.py --rounds 3
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from rasterio.transform import from_origin
from rio_cogeo.cogeo import cog_translate, cog_validate
from rio_cogeo.profiles import cog_profiles

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_items import _version, environment_section

from astra_stac.assets.convert import Converter, OutputFormat
from astra_stac.assets.settings import ConvertSettings

RESULTS = Path(__file__).resolve().parent / "results"
SIZE = 5490
RIO = Path(sys.executable).with_name("rio")


def write_source(path: Path, seed: int) -> None:
    """A non-COG uint16 band with imagery-like content."""
    rng = np.random.default_rng(seed)
    parcel = 61  # ~1.2 km fields at 20 m
    cells = SIZE // parcel + 1
    fields = rng.gamma(4.0, 600.0, size=(cells, cells)).astype("float32")
    data = np.repeat(np.repeat(fields, parcel, axis=0), parcel, axis=1)[:SIZE, :SIZE]
    y, x = np.ogrid[0:SIZE, 0:SIZE]
    data += (900 * np.sin(x / 700.0) * np.cos(y / 500.0)).astype("float32")
    data += rng.normal(0.0, 90.0, size=(SIZE, SIZE)).astype("float32")
    band = np.clip(data + 1500, 1, 20000).astype("uint16")
    band[x < (SIZE - y) // 4] = 0  # outside the swath: nodata
    profile = {
        "driver": "GTiff",
        "width": SIZE,
        "height": SIZE,
        "count": 1,
        "dtype": "uint16",
        "crs": "EPSG:32613",
        "transform": from_origin(399960, 4500000, 20, 20),
        "nodata": 0,
    }
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(band, 1)


def run_astra(source: Path, cache: Path, profile: str) -> Path:
    shutil.rmtree(cache, ignore_errors=True)
    converter = Converter(cache, ConvertSettings(cog_profile=profile))
    stat = source.stat()
    source_id = f"{source}|{stat.st_mtime_ns}:{stat.st_size}"
    return asyncio.run(converter.ensure(str(source), source_id, "B11", OutputFormat.COG))


def run_cli(source: Path, output: Path, profile: str) -> Path:
    output.unlink(missing_ok=True)
    command = [str(RIO), "cogeo", "create", str(source), str(output), "--cog-profile", profile]
    subprocess.run([*command, "--quiet"], check=True)
    return output


def run_library(source: Path, output: Path, profile: str) -> Path:
    """What `rio cogeo create` calls, with its options (see rio_cogeo/scripts/cli.py)."""
    output.unlink(missing_ok=True)
    dst_profile = cog_profiles.get(profile)
    dst_profile.update({"BIGTIFF": "IF_SAFER"})
    config = {"GDAL_NUM_THREADS": "ALL_CPUS", "GDAL_TIFF_INTERNAL_MASK": True}
    cog_translate(str(source), str(output), dst_profile, config=config, quiet=True)
    return output


def check_output(source: Path, output: Path) -> dict[str, Any]:
    """Valid COG (strict), and the same pixels and mask as the source."""
    valid, errors, warnings = cog_validate(str(output), strict=True, quiet=True)
    if not valid:
        raise RuntimeError(f"{output} is not a valid COG: {errors} {warnings}")
    with rasterio.open(source) as src, rasterio.open(output) as dst:
        if not np.array_equal(src.read(1), dst.read(1)):
            raise RuntimeError(f"{output}: pixels differ from the source")
        if not np.array_equal(src.dataset_mask(), dst.dataset_mask()):
            raise RuntimeError(f"{output}: mask differs from the source")
        return {
            "bytes": output.stat().st_size,
            "blocks": dst.block_shapes[0],
            "overviews": dst.overviews(1),
            "compression": dst.profile.get("compress"),
        }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5, help="conversions per series")
    parser.add_argument("--profile", default="deflate", help="rio-cogeo profile (both sides)")
    parser.add_argument("--seed", type=int, default=20231008)
    parser.add_argument("--output-dir", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    if args.rounds < 1:
        parser.error("--rounds ≥ 1")
    return args


def markdown(report: dict[str, Any]) -> str:
    params, rows = report["parameters"], report["results"]
    lines = [
        "# COG conversion: astra-stac vs `rio cogeo create`",
        "",
        f"Run {report['finished']} with `{report['command']}`.",
        "",
        f"Source: a {SIZE}×{SIZE} uint16 GeoTIFF (striped, uncompressed, no overviews, "
        f"nodata 0; {params['source_bytes'] / 1e6:.1f} MB) with imagery-like content. "
        f"Profile `{params['profile']}` on every side; {params['rounds']} conversions per "
        "series, alternating which runs first; every output checked: a valid COG "
        "(rio-cogeo, strict) with the source's pixels and mask. Ratio = baseline seconds ÷ "
        "astra seconds (medians), i.e. astra's speed relative to the baseline. "
        "Target: ≥ 0.9× `rio cogeo create`.",
        "",
        "| series | what | median s | min s | max s | output MB | overviews | its s ÷ astra s |",
        "|---|---|---:|---:|---:|---:|---|---:|",
    ]
    for name, row in rows.items():
        lines.append(
            f"| {name} | {row['what']} | {row['median_s']:.2f} | {row['min_s']:.2f} | "
            f"{row['max_s']:.2f} | {row['output']['bytes'] / 1e6:.1f} | "
            f"{row['output']['overviews']} | {row['astra_ratio']:.2f} |"
        )
    lines += [
        "",
        *environment_section(report),
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="astra-bench-convert-", dir="/tmp"))
    try:
        source = workdir / "B11.tif"
        write_source(source, args.seed)
        print(f"Wrote {source} ({source.stat().st_size / 1e6:.1f} MB)")
        series: dict[str, tuple[str, Callable[[], Path]]] = {
            "astra": (
                "`Converter.ensure` (astra_stac.assets.convert), cache emptied",
                lambda: run_astra(source, workdir / "cache", args.profile),
            ),
            "rio-cogeo CLI": (
                f"`rio cogeo create src dst --cog-profile {args.profile}`",
                lambda: run_cli(source, workdir / "cli.tif", args.profile),
            ),
            "rio-cogeo library": (
                "`cog_translate` with the CLI's options, in-process",
                lambda: run_library(source, workdir / "library.tif", args.profile),
            ),
        }
        names = list(series)
        seconds: dict[str, list[float]] = {name: [] for name in names}
        outputs: dict[str, dict[str, Any]] = {}
        load_before = ", ".join(f"{x:.2f}" for x in os.getloadavg())
        for round_no in range(args.rounds):
            shift = round_no % len(names)
            for name in names[shift:] + names[:shift]:
                started = time.perf_counter()
                output = series[name][1]()
                seconds[name].append(time.perf_counter() - started)
                if name not in outputs:
                    outputs[name] = check_output(source, output)
            print(
                f"  round {round_no + 1}: "
                + ", ".join(f"{n} {seconds[n][-1]:.2f} s" for n in names)
            )
        astra_median = statistics.median(seconds["astra"])
        results = {
            name: {
                "what": series[name][0],
                "seconds": seconds[name],
                "median_s": statistics.median(seconds[name]),
                "min_s": min(seconds[name]),
                "max_s": max(seconds[name]),
                "astra_ratio": statistics.median(seconds[name]) / astra_median,
                "output": outputs[name],
            }
            for name in names
        }
        for name, row in results.items():
            print(
                f"{name:<18} median {row['median_s']:.2f} s   astra speed ×{row['astra_ratio']:.2f}"
            )
        report = {
            "finished": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
            "command": " ".join(["python", "benchmarks/bench_convert.py", *sys.argv[1:]]),
            "parameters": {
                "rounds": args.rounds,
                "profile": args.profile,
                "size": SIZE,
                "source_bytes": source.stat().st_size,
            },
            "environment": {
                "machine": f"{os.uname().machine}, {os.cpu_count()} CPUs",
                "rio-cogeo": _version("rio-cogeo"),
                "rasterio": _version("rasterio"),
                "GDAL": rasterio.__gdal_version__,
            },
            "load_before": load_before,
            "load_after": ", ".join(f"{x:.2f}" for x in os.getloadavg()),
            "results": results,
        }
        args.output_dir.mkdir(parents=True, exist_ok=True)
        (args.output_dir / "convert.json").write_text(json.dumps(report, indent=2) + "\n")
        (args.output_dir / "convert.md").write_text(markdown(report))
        print(f"\nWrote {args.output_dir / 'convert.md'} and convert.json")
        return 0
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
