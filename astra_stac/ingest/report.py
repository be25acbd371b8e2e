"""What an ingest did: counts per provider and collection, failures with their
place, and the ways a person or a machine reads them."""

from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from astra_stac.ingest.store import Outcome

UNKNOWN = "?"


@dataclass
class Counts:
    """Items per outcome."""

    inserted: int = 0
    updated: int = 0
    unchanged: int = 0
    failed: int = 0

    def add(self, outcome: Outcome) -> None:
        setattr(self, outcome.value, getattr(self, outcome.value) + 1)

    def merge(self, other: Counts) -> None:
        for name in ("inserted", "updated", "unchanged", "failed"):
            setattr(self, name, getattr(self, name) + getattr(other, name))

    @property
    def total(self) -> int:
        return self.inserted + self.updated + self.unchanged + self.failed

    def as_dict(self) -> dict[str, int]:
        return {
            "inserted": self.inserted,
            "updated": self.updated,
            "unchanged": self.unchanged,
            "failed": self.failed,
        }


@dataclass
class Failure:
    """One record that was not stored, and why."""

    location: str
    reason: str
    kind: str = "item"
    id: str | None = None
    provider: str | None = None
    collection: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "location": self.location,
            "kind": self.kind,
            "id": self.id,
            "provider": self.provider,
            "collection": self.collection,
            "reason": self.reason,
        }

    def line(self) -> str:
        subject = f" {self.id}" if self.id else ""
        return f"{self.location}:{subject} {self.reason}"


@dataclass
class CollectionChange:
    """A collection the ingest created, updated or found as it was."""

    id: str
    provider: str
    outcome: Outcome
    template: bool

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "provider": self.provider,
            "outcome": self.outcome.value,
            "from_template": self.template,
        }


@dataclass
class IngestReport:
    """Everything an ingest run did."""

    dry_run: bool = False
    by_collection: dict[tuple[str, str], Counts] = field(
        default_factory=lambda: defaultdict(Counts)
    )
    collections: dict[str, CollectionChange] = field(default_factory=dict)
    failures: list[Failure] = field(default_factory=list)
    interrupted: bool = False
    started: float = field(default_factory=time.monotonic)
    finished: float | None = None

    def count(self, provider: str, collection: str, outcome: Outcome) -> None:
        self.by_collection[(provider, collection)].add(outcome)

    def fail(self, failure: Failure) -> None:
        self.failures.append(failure)
        if failure.kind == "item":
            self.count(failure.provider or UNKNOWN, failure.collection or UNKNOWN, Outcome.failed)

    @property
    def totals(self) -> Counts:
        total = Counts()
        for counts in self.by_collection.values():
            total.merge(counts)
        return total

    @property
    def ok(self) -> bool:
        return not self.failures and not self.interrupted

    @property
    def elapsed(self) -> float:
        return (self.finished or time.monotonic()) - self.started

    @property
    def items_per_second(self) -> float:
        return self.totals.total / self.elapsed if self.elapsed > 0 else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "dry_run": self.dry_run,
            "ok": self.ok,
            "interrupted": self.interrupted,
            "totals": self.totals.as_dict(),
            "by_collection": [
                {"provider": provider, "collection": collection, **counts.as_dict()}
                for (provider, collection), counts in sorted(self.by_collection.items())
            ],
            "collections": [c.as_dict() for _, c in sorted(self.collections.items())],
            "failures": [f.as_dict() for f in self.failures],
            "elapsed_seconds": round(self.elapsed, 3),
            "items_per_second": round(self.items_per_second, 1),
        }

    def table(self) -> str:
        """The summary a person reads at the end of a run."""
        header = ("PROVIDER", "COLLECTION", "INSERTED", "UPDATED", "UNCHANGED", "FAILED")
        rows = [
            (provider, collection, *map(str, counts.as_dict().values()))
            for (provider, collection), counts in sorted(self.by_collection.items())
        ]
        totals = self.totals
        rows.append(("total", "", *map(str, totals.as_dict().values())))
        widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]

        def line(row: tuple[str, ...]) -> str:
            cells = [
                cell.ljust(width) if i < 2 else cell.rjust(width)
                for i, (cell, width) in enumerate(zip(row, widths, strict=True))
            ]
            return "  ".join(cells).rstrip()

        out = [line(header), *(line(r) for r in rows[:-1])]
        out.append("-" * len(line(header)))
        out.append(line(rows[-1]))
        changed = [c for c in self.collections.values() if c.outcome is not Outcome.unchanged]
        for change in sorted(changed, key=lambda c: c.id):
            how = " from the provider template" if change.template else ""
            out.append(f"collection {change.id} ({change.provider}): {change.outcome.value}{how}")
        out.append(self.headline())
        return "\n".join(out)

    def headline(self) -> str:
        """One line: what happened, how fast."""
        totals = self.totals
        verb = "would be" if self.dry_run else "were"
        state = " (interrupted)" if self.interrupted else ""
        items = f"{totals.total} item{'' if totals.total == 1 else 's'}"
        return (
            f"{items} in {self.elapsed:.1f} s ({self.items_per_second:.0f}/s){state}: "
            f"{totals.inserted} {verb} inserted, {totals.updated} updated, "
            f"{totals.unchanged} unchanged, {totals.failed} failed"
            + (" — dry run, nothing written" if self.dry_run else "")
        )
