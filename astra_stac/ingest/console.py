"""`astra-stac ingest` for people and machines: progress bar on a terminal, a
summary table at the end, `--json` for scripts, one line when piped."""

from __future__ import annotations

import json
import sys
from typing import IO

import psycopg

from astra_stac.errors import IngestError
from astra_stac.ingest.pipeline import Ingest, IngestOptions
from astra_stac.ingest.report import IngestReport
from astra_stac.ingest.sources import Record, SourceError, SourceOptions, SourceReader, count_hint
from astra_stac.ingest.store import PgstacStore
from astra_stac.providers import ProviderRegistry

EXIT_OK = 0
EXIT_FAILURES = 1
EXIT_INTERRUPTED = 130
SHOWN_FAILURES = 20


class _Progress:
    """A tqdm bar fed by the records the pipeline has handled."""

    def __init__(self, total: int | None, stream: IO[str]) -> None:
        from tqdm import tqdm

        self.bar = tqdm(
            total=total, unit=" items", dynamic_ncols=True, file=stream, smoothing=0.1, leave=False
        )
        self.failed = 0

    def __call__(self, record: Record) -> None:
        if record.kind == "total":
            if self.bar.total is None:
                self.bar.total = record.count
                self.bar.refresh()
            return
        if record.kind in ("item", "error"):
            self.bar.update(1)
        if record.kind == "error":
            self.failed += 1

    def close(self) -> None:
        self.bar.close()


def _print_failures(report: IngestReport, stream: IO[str]) -> None:
    for failure in report.failures[:SHOWN_FAILURES]:
        print(f"failed: {failure.line()}", file=stream)
    hidden = len(report.failures) - SHOWN_FAILURES
    if hidden > 0:
        print(f"… and {hidden} more failures (--json lists them all)", file=stream)


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def run_ingest(
    dsn: str,
    registry: ProviderRegistry,
    sources: list[str],
    options: IngestOptions,
    source_options: SourceOptions,
    as_json: bool = False,
    stdout: IO[str] | None = None,
    stderr: IO[str] | None = None,
) -> int:
    """Ingest `sources` into the database at `dsn`; the process exit status."""
    stdout = stdout or sys.stdout
    stderr = stderr or sys.stderr
    interactive = stdout.isatty() and not as_json
    progress = _Progress(count_hint(sources), stderr) if interactive else None
    try:
        with (
            PgstacStore(dsn, registry, dry_run=options.dry_run) as store,
            SourceReader(source_options) as reader,
        ):
            ingest = Ingest(store, registry, options, progress)
            report = ingest.run(reader.read(sources))
    except SourceError as exc:
        raise IngestError(str(exc)) from None
    except psycopg.OperationalError as exc:
        raise IngestError(f"database unavailable: {_first_line(exc)}") from None
    except psycopg.errors.UndefinedTable:
        raise IngestError(
            "the database has no pgstac schema yet; run `astra-stac db migrate` first"
        ) from None
    except psycopg.Error as exc:
        raise IngestError(f"database error: {_first_line(exc)}") from None
    finally:
        if progress is not None:
            progress.close()
    if as_json:
        print(json.dumps(report.as_dict(), indent=2), file=stdout)
    else:
        print(report.table() if interactive else report.headline(), file=stdout)
        _print_failures(report, stderr)
    if report.interrupted:
        print(
            "Interrupted: committed batches are stored; the batch in flight was rolled back.",
            file=stderr,
        )
        return EXIT_INTERRUPTED
    return EXIT_OK if report.ok else EXIT_FAILURES
