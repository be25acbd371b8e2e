"""The ingest pipeline: records in, batches of normalised items out to pgstac.

For each item: validate it, tell its provider (`detect`), place it in the
provider's local collection, add what `normalize` adds, refuse an id the same
provider already uses in another collection, and queue it. Every `batch_size`
items (or earlier, when an id repeats inside the batch) the batch goes to
`PgstacStore.write` as one transaction. Collections arrive from the source
(collection.json, the API's collection) or come from the provider's template.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from astra_stac.errors import InvalidIdFormat
from astra_stac.ids import parse_scene_id
from astra_stac.ingest.detect import DetectionError, ProviderDetector
from astra_stac.ingest.normalize import (
    local_collection_id,
    normalize_collection,
    prepare_item,
    template_collection,
)
from astra_stac.ingest.report import CollectionChange, Failure, IngestReport
from astra_stac.ingest.sources import Record
from astra_stac.ingest.store import (
    BatchResult,
    CollectionPlan,
    Outcome,
    PgstacStore,
    PreparedItem,
)
from astra_stac.ingest.validate import (
    InvalidRecord,
    check_collection,
    check_item,
    item_time_range,
)
from astra_stac.providers import Provider, ProviderRegistry

DEFAULT_BATCH_SIZE = 2000


@dataclass
class IngestOptions:
    """How to ingest: `provider` forces one provider; `dry_run` writes nothing."""

    provider: str | None = None
    dry_run: bool = False
    batch_size: int = DEFAULT_BATCH_SIZE


class Ingest:
    """One ingest run against one database."""

    def __init__(
        self,
        store: PgstacStore,
        registry: ProviderRegistry,
        options: IngestOptions | None = None,
        progress: Callable[[Record], None] | None = None,
    ) -> None:
        self.store = store
        self.registry = registry
        self.options = options or IngestOptions()
        self.detector = ProviderDetector(registry, self.options.provider)
        self.progress = progress or (lambda record: None)
        self.report = IngestReport(dry_run=self.options.dry_run)
        self._plans: dict[str, CollectionPlan] = {}
        # Collection documents whose provider only their items can tell, by upstream id.
        self._unplaced: dict[str, tuple[dict[str, Any], str]] = {}
        # Upstream collection id → the providers whose items named it, by prefix.
        self._upstream_users: dict[str, dict[str, Provider]] = {}
        # (provider, original id) → local collection, for every item seen in this run.
        self._seen: dict[tuple[str, str], str] = {}
        self._batch: list[PreparedItem] = []
        self._batch_keys: set[tuple[str, str]] = set()

    # --- driving ---------------------------------------------------------------------

    def run(self, records: Iterable[Record]) -> IngestReport:
        """Ingest every record; Ctrl-C stops after rolling back the batch in flight."""
        # A batch holds millions of live JSON objects that are never cyclic garbage;
        # CPython's full collections would walk them again and again (3-5× slower).
        # Collection is paused for the run and done once per batch instead, over what
        # the run allocated only (what existed before is frozen).
        collecting = gc.isenabled()
        gc.disable()
        gc.freeze()
        try:
            for record in records:
                self._record(record)
                self.progress(record)
            self._flush()
            self._remaining_collections()
        except KeyboardInterrupt:
            self.report.interrupted = True
        finally:
            self.report.finished = time.monotonic()
            gc.unfreeze()
            if collecting:
                gc.enable()
        return self.report

    def _record(self, record: Record) -> None:
        if record.kind == "item":
            self._item(record)
        elif record.kind == "collection":
            self._collection(record)
        elif record.kind == "error":
            self.report.fail(Failure(record.location, record.error or "unreadable", kind="source"))

    # --- collections -----------------------------------------------------------------

    def _collection(self, record: Record) -> None:
        document = record.data
        try:
            check_collection(document)
        except InvalidRecord as exc:
            cid = document.get("id") if isinstance(document, dict) else None
            self.report.fail(Failure(record.location, str(exc), "collection", cid))
            return
        try:
            provider = self.detector.collection(document, record.origin)
        except DetectionError:
            # Its items may tell: kept until one of them names it.
            self._unplaced[document["id"]] = (document, record.location)
            return
        self._plan(normalize_collection(document, provider), provider, record.location)

    def _plan(self, document: dict[str, Any], provider: Provider, location: str) -> None:
        # A new plan object: the store compares it with what is stored at the next write.
        self._plans[document["id"]] = CollectionPlan(document, provider, location=location)

    def _collection_for(self, provider: Provider, upstream: str, local: str) -> str | None:
        """Make sure the item's collection will exist; the reason when it cannot."""
        planned = self._plans.get(local)
        if planned is not None and not planned.template:
            return None
        unplaced = self._unplaced.pop(upstream, None)
        if unplaced is not None:
            # A collection document no evidence placed: the first provider whose items name it.
            document, location = unplaced
            self._plan(normalize_collection(document, provider), provider, location)
            return None
        if planned is not None or self.store.has_collection(local):
            return None
        if self.registry.collection_spec(local) is not None:
            document = template_collection(local, provider, upstream)
            self._plans[local] = CollectionPlan(document, provider, template=True)
            return None
        return (
            f"unknown collection {upstream!r} for provider {provider.prefix}: "
            f"{local!r} is not in the database or the provider registry and the source "
            "did not include its collection JSON (ingest its collection.json too)"
        )

    def _remaining_collections(self) -> None:
        for upstream in list(self._unplaced):
            # Read after its items: theirs if they all came from one provider.
            users = self._upstream_users.get(upstream, {})
            if len(users) == 1:
                (provider,) = users.values()
                document, location = self._unplaced.pop(upstream)
                self._plan(normalize_collection(document, provider), provider, location)
        pending = {cid: plan for cid, plan in self._plans.items() if not plan.template}
        if pending:
            self._account(self.store.write_collections(pending), [])
        for upstream, (document, location) in self._unplaced.items():
            reason = (
                f"cannot tell which provider collection {upstream!r} comes from and no "
                f"ingested item names it; name one with --provider "
                f"(one of: {self.detector.known()})"
            )
            self.report.fail(Failure(location, reason, "collection", document.get("id")))

    # --- items ------------------------------------------------------------------------

    def _item(self, record: Record) -> None:
        item = record.data
        raw_id = item.get("id") if isinstance(item, dict) else None
        identifier = raw_id if isinstance(raw_id, str) else None

        def fail(reason: str, provider: str | None = None, collection: str | None = None) -> None:
            self.report.fail(
                Failure(record.location, reason, "item", identifier, provider, collection)
            )

        try:
            check_item(item)
        except InvalidRecord as exc:
            fail(str(exc))
            return
        try:
            provider = self.detector.item(item, record.origin)
        except DetectionError as exc:
            fail(str(exc))
            return
        upstream = item.get("collection") or record.parent_collection
        if not isinstance(upstream, str) or not upstream:
            fail("item names no collection (and its source implies none)", provider.prefix)
            return
        local = local_collection_id(provider, upstream)
        prepare_item(item, provider, local, self.registry)
        identifier = item["id"]
        try:
            parse_scene_id(f"{provider.prefix}:{identifier}")
        except InvalidIdFormat as exc:
            fail(f"id cannot form a scene id: {exc.description}", provider.prefix, local)
            return
        self._upstream_users.setdefault(upstream, {})[provider.prefix] = provider
        reason = self._collection_for(provider, upstream, local)
        if reason is not None:
            fail(reason, provider.prefix, local)
            return
        key = (provider.prefix, identifier)
        earlier = self._seen.get(key)
        if earlier is not None and earlier != local:
            fail(
                f"id clash: {provider.prefix}:{identifier} is already in collection {earlier!r} "
                f"in this ingest; one provider cannot hold the same id in two collections",
                provider.prefix,
                local,
            )
            return
        self._seen[key] = local
        start, end = item_time_range(item)
        if (local, identifier) in self._batch_keys:
            self._flush()  # the later copy of a repeated item wins, as in a file read in order
        self._batch.append(
            PreparedItem(identifier, local, item, provider, record.location, start, end)
        )
        self._batch_keys.add((local, identifier))
        if len(self._batch) >= self.options.batch_size:
            self._flush()

    def _flush(self) -> None:
        if not self._batch:
            return
        batch, self._batch, self._batch_keys = self._batch, [], set()
        needed = {item.collection for item in batch}
        plans = {cid: plan for cid, plan in self._plans.items() if cid in needed}
        self._account(self.store.write(batch, plans), batch)
        del batch
        gc.collect()  # cheap here: the batch, the bulk of live objects, is gone

    def _account(self, result: BatchResult, batch: list[PreparedItem]) -> None:
        for cid, (outcome, plan) in result.collections.items():
            if plan.template and outcome is Outcome.unchanged:
                continue
            self.report.collections[cid] = CollectionChange(
                cid, plan.provider.prefix, outcome, plan.template
            )
        for prepared, (outcome, reason) in zip(batch, result.outcomes, strict=True):
            prefix = prepared.provider.prefix
            if outcome is Outcome.failed:
                failure = Failure(
                    prepared.location,
                    reason or "failed",
                    "item",
                    prepared.id,
                    prefix,
                    prepared.collection,
                )
                self.report.fail(failure)
                if self._seen.get((prefix, prepared.id)) == prepared.collection:
                    del self._seen[(prefix, prepared.id)]
            else:
                self.report.count(prefix, prepared.collection, outcome)
