"""Writing batches of items (and their collections) into pgstac, one transaction each.

Per batch, inside one transaction:

1. the batch's collections are created (from the source's collection JSON or the
   provider's template) or updated when the source's copy differs;
2. items are dehydrated in Python against their collection's current base item
   (exactly as pypgstac's loader does, with the `hydraters` used at read time) and
   COPYed into a session temp table;
3. ids another collection of the same provider already holds are refused;
4. each row is classified against what is stored: new, changed or the same
   (the same when the stored row is identical, or hydrates to the same item —
   an item stored against an older base item is not rewritten for that alone);
5. partitions are checked with pgstac's `check_partition`, changed rows deleted
   and new and changed rows inserted into `pgstac.items`.

The commit makes the whole batch visible at once; an error, Ctrl-C or a crash
before it leaves none of it. A batch the database refuses for a data error is
split in halves until the offending item is found, so one bad item costs only
itself. `dry_run` runs steps 1–4 in a READ ONLY transaction and writes nothing.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import orjson
import psycopg
from hydraters import dehydrate, hydrate
from psycopg.types.json import set_json_loads

from astra_stac.providers import Provider, ProviderRegistry

_TEMP_TABLE = """
CREATE TEMP TABLE IF NOT EXISTS astra_ingest_batch (
    ord int NOT NULL,
    id text NOT NULL,
    collection text NOT NULL,
    datetime timestamptz NOT NULL,
    end_datetime timestamptz NOT NULL,
    geojson text NOT NULL,
    content jsonb NOT NULL,
    private jsonb
) ON COMMIT DELETE ROWS
"""
_COPY = (
    "COPY astra_ingest_batch (ord, id, collection, datetime, end_datetime, geojson, content, "
    "private) FROM STDIN"
)
_CLASSIFY = """
SELECT t.ord,
       i.id IS NOT NULL AS existed,
       coalesce(i.content = t.content AND i.private IS NOT DISTINCT FROM t.private, false)
           AS same_content,
       coalesce(i.datetime = t.datetime AND i.end_datetime = t.end_datetime
                AND i.geometry = ST_GeomFromGeoJSON(t.geojson)
                AND i.private IS NOT DISTINCT FROM t.private, false) AS same_row_fields,
       CASE WHEN i.content <> t.content THEN i.content END AS stored
FROM astra_ingest_batch t
LEFT JOIN pgstac.items i
       ON i.id = t.id AND i.collection = t.collection AND i.collection = ANY(%(collections)s)
"""
_CLASHES = """
SELECT t.ord, i.collection
FROM astra_ingest_batch t
JOIN pgstac.items i ON i.id = t.id
WHERE i.collection = ANY(%(siblings)s) AND i.collection <> t.collection
"""
_CHECK_PARTITIONS = """
SELECT pgstac.check_partition(
    collection,
    tstzrange(min(datetime), max(datetime), '[]'),
    tstzrange(min(end_datetime), max(end_datetime), '[]')
)
FROM (
    SELECT t.collection, t.datetime, t.end_datetime,
           coalesce(date_trunc(c.partition_trunc, t.datetime), '-infinity') AS part
    FROM astra_ingest_batch t JOIN pgstac.collections c ON c.id = t.collection
    WHERE t.ord = ANY(%(ords)s)
) rows
GROUP BY collection, part
ORDER BY collection, part
"""
# Row locks in a fixed order, as pgstac's own upsert takes them, so concurrent
# ingests over overlapping ids cannot deadlock.
_DELETE_CHANGED = """
WITH locked AS (
    SELECT o.collection, o.id
    FROM astra_ingest_batch t
    JOIN pgstac.items o ON o.id = t.id AND o.collection = t.collection
    WHERE t.ord = ANY(%(ords)s) AND o.collection = ANY(%(collections)s)
    ORDER BY o.collection, o.id
    FOR UPDATE OF o
)
DELETE FROM pgstac.items i USING locked l WHERE i.collection = l.collection AND i.id = l.id
"""
_INSERT = """
INSERT INTO pgstac.items (id, geometry, collection, datetime, end_datetime, content, private)
SELECT id, ST_GeomFromGeoJSON(geojson), collection, datetime, end_datetime, content, private
FROM astra_ingest_batch
WHERE ord = ANY(%(ords)s)
ON CONFLICT DO NOTHING
RETURNING id, collection
"""


_TAG = "pgstac:base_item"


class Outcome(StrEnum):
    """What happened to one item or collection."""

    inserted = "inserted"
    updated = "updated"
    unchanged = "unchanged"
    failed = "failed"


@dataclass(slots=True)
class PreparedItem:
    """A normalised, validated item ready to be written (`item` is consumed by the write)."""

    id: str
    collection: str
    item: dict[str, Any]
    provider: Provider
    location: str
    datetime: str
    end_datetime: str
    # Set by the first write attempt (see `PgstacStore._dehydrated`).
    geojson: str = ""
    content: dict[str, Any] | None = None
    base: dict[str, Any] | None = None
    private: Any = None


@dataclass
class CollectionPlan:
    """The collection a batch needs: the source's copy, or the provider's template."""

    document: dict[str, Any]
    provider: Provider
    template: bool = False
    location: str | None = None


@dataclass
class BatchResult:
    """Per-item outcomes (in batch order) and what happened to collections."""

    outcomes: list[tuple[Outcome, str | None]]
    collections: dict[str, tuple[Outcome, CollectionPlan]] = field(default_factory=dict)


class PgstacStore:
    """One database session writing ingest batches; see the module docstring."""

    def __init__(self, dsn: str, registry: ProviderRegistry, dry_run: bool = False) -> None:
        self.registry = registry
        self.dry_run = dry_run
        self._conn = psycopg.connect(
            dsn, autocommit=True, options="-c search_path=pgstac,public -c timezone=UTC"
        )
        set_json_loads(orjson.loads, self._conn)
        self._conn.execute(_TEMP_TABLE)
        self._conn.autocommit = False
        rows = self._conn.execute("SELECT id, content FROM pgstac.collections").fetchall()
        self._conn.commit()
        # What the database holds (in a dry run: would hold), by collection id.
        self._collections: dict[str, dict[str, Any]] = {cid: content for cid, content in rows}
        # The plan each collection was last brought in line with (a new plan object
        # for a collection, from a later copy of its document, is compared again).
        self._settled: dict[str, CollectionPlan] = {}
        # In a dry run: collections that would be created or changed.
        self._virtual: set[str] = set()
        # In a dry run: a digest of each row it would have written, by (collection, id).
        self._would_write: dict[tuple[str, str], int] = {}
        self._bases: dict[str, tuple[int | None, dict[str, Any]]] = {}
        self._tagged_bases: dict[tuple[str, int], dict[str, Any] | None] = {}

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> PgstacStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def has_collection(self, collection_id: str) -> bool:
        return collection_id in self._collections

    # --- collections ---------------------------------------------------------------------

    def _settle(
        self, cur: psycopg.Cursor[Any], plans: dict[str, CollectionPlan]
    ) -> dict[str, tuple[Outcome, CollectionPlan]]:
        """Create or update the planned collections; the outcome of each one touched."""
        outcomes: dict[str, tuple[Outcome, CollectionPlan]] = {}
        for cid in sorted(plans):
            plan = plans[cid]
            if self._settled.get(cid) is plan:
                continue
            stored = self._collections.get(cid)
            document = orjson.loads(orjson.dumps(plan.document))
            if stored is None:
                if not self.dry_run:
                    cur.execute(
                        "SELECT pgstac.create_collection(%s::jsonb)", [orjson_text(plan.document)]
                    )
                outcomes[cid] = (Outcome.inserted, plan)
            elif plan.template or stored == document:
                outcomes[cid] = (Outcome.unchanged, plan)
                continue
            else:
                if not self.dry_run:
                    cur.execute(
                        "SELECT pgstac.update_collection(%s::jsonb)", [orjson_text(plan.document)]
                    )
                outcomes[cid] = (Outcome.updated, plan)
            self._bases.pop(cid, None)
            if self.dry_run:
                # Later batches of the dry run see the collection as it would be.
                self._collections[cid] = document
                self._virtual.add(cid)
        return outcomes

    def _commit_collections(self, outcomes: dict[str, tuple[Outcome, CollectionPlan]]) -> None:
        for cid, (outcome, plan) in outcomes.items():
            self._settled[cid] = plan
            if outcome is not Outcome.unchanged:
                self._collections[cid] = orjson.loads(orjson.dumps(plan.document))

    def _base(self, cur: psycopg.Cursor[Any], cid: str) -> tuple[int | None, dict[str, Any]]:
        """The base item new rows of `cid` are dehydrated against, and its tag."""
        cached = self._bases.get(cid)
        if cached is not None:
            return cached
        if cid in self._virtual:
            # A dry run's collection that is not in the database as planned: the
            # base item pgstac would build from it, untagged.
            row = cur.execute(
                "SELECT NULL::int, pgstac.collection_base_item(%s::jsonb)",
                [orjson_text(self._collections[cid])],
            ).fetchone()
        else:
            row = cur.execute(
                "SELECT base_item_id, base_item FROM pgstac.current_base_item(%s)", [cid]
            ).fetchone()
        if row is None or row[1] is None:
            raise psycopg.errors.ForeignKeyViolation(f"collection {cid} does not exist")
        self._bases[cid] = (row[0], row[1])
        return self._bases[cid]

    def _tagged_base(self, cur: psycopg.Cursor[Any], cid: str, tag: Any) -> dict[str, Any] | None:
        """The base item a stored row was dehydrated against."""
        try:
            number = int(tag) if tag is not None else None
        except (TypeError, ValueError):
            number = None
        key = (cid, number if number is not None else -1)
        if key not in self._tagged_bases:
            row = cur.execute(
                "SELECT pgstac.collection_base_item(%s::text, %s::int)", [cid, number]
            ).fetchone()
            self._tagged_bases[key] = row[0] if row else None
        return self._tagged_bases[key]

    # --- items -----------------------------------------------------------------------------

    def write(self, items: list[PreparedItem], plans: dict[str, CollectionPlan]) -> BatchResult:
        """Write one batch (plus the collections it needs) in one transaction."""
        try:
            return self._write_once(items, plans)
        except (psycopg.OperationalError, psycopg.InterfaceError):
            raise
        except psycopg.DatabaseError as exc:
            if len(items) == 1:
                message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                return BatchResult([(Outcome.failed, f"refused by the database: {message}")])
            half = len(items) // 2
            first = self.write(items[:half], plans)
            second = self.write(items[half:], plans)
            return BatchResult(
                first.outcomes + second.outcomes, {**first.collections, **second.collections}
            )

    def write_collections(self, plans: dict[str, CollectionPlan]) -> BatchResult:
        """Bring collections no item referenced in line with their plans."""
        return self._write_once([], plans)

    def _write_once(
        self, items: list[PreparedItem], plans: dict[str, CollectionPlan]
    ) -> BatchResult:
        needed = {item.collection for item in items}
        wanted = {cid: plan for cid, plan in plans.items() if cid in needed or not items}
        try:
            with self._conn.transaction(), self._conn.cursor() as cur:
                if self.dry_run:
                    cur.execute("SET TRANSACTION READ ONLY")
                collection_outcomes = self._settle(cur, wanted)
                outcomes = self._items(cur, items) if items else []
        except BaseException:
            # Rolled back: cached base items may describe collections that were not written.
            self._bases.clear()
            raise
        self._commit_collections(collection_outcomes)
        return BatchResult(outcomes, collection_outcomes)

    def _rows(self, cur: psycopg.Cursor[Any], items: list[PreparedItem]) -> list[dict[str, Any]]:
        """Dehydrate and COPY the batch; the dehydrated content of each row."""
        contents: list[dict[str, Any]] = []
        # Read before the COPY starts: the connection can run nothing else during it.
        bases = {cid: self._base(cur, cid) for cid in {item.collection for item in items}}
        with cur.copy(_COPY) as copy_:
            for ord_, prepared in enumerate(items):
                content, private = self._dehydrated(prepared, *bases[prepared.collection])
                copy_.write_row(
                    (
                        ord_,
                        prepared.id,
                        prepared.collection,
                        prepared.datetime,
                        prepared.end_datetime,
                        prepared.geojson,
                        orjson_text(content),
                        orjson_text(private) if private is not None else None,
                    )
                )
                contents.append(content)
        return contents

    @staticmethod
    def _dehydrated(
        prepared: PreparedItem, tag: int | None, base: dict[str, Any]
    ) -> tuple[dict[str, Any], Any]:
        """The row content of an item dehydrated against `base` (tagged `tag`), and
        its `private` part. The item is dehydrated in place the first time — copying
        every item would cost more than the rest of the write — and the result kept,
        so a batch retried after a database error reuses it."""
        if prepared.content is None:
            item = prepared.item
            prepared.geojson = orjson_text(item.get("geometry"))
            content = dehydrate(base, item)
            for key in ("id", "collection", "geometry", "pgstac:base_item"):
                content.pop(key, None)
            prepared.private = content.pop("private", None)
        elif prepared.base != base:
            # The collection changed between attempts: back to the item, then down again.
            whole = hydrate(
                copy.deepcopy(prepared.base or {}),
                {k: v for k, v in copy.deepcopy(prepared.content).items() if k != _TAG},
                strip_unmatched_markers=True,
            )
            content = dehydrate(base, whole)
        else:
            content = prepared.content
        content.pop(_TAG, None)
        if tag is not None:
            content[_TAG] = tag
        prepared.content, prepared.base = content, base
        return content, prepared.private

    def _clashes(self, cur: psycopg.Cursor[Any], items: list[PreparedItem]) -> dict[int, str]:
        """Batch rows whose id another collection of the same provider holds."""
        providers = {id(item.provider): item.provider for item in items}
        in_batch = {item.collection for item in items}
        siblings: set[str] = set()
        for provider in providers.values():
            owned = {
                c
                for c in set(self._collections) | in_batch
                if self.registry.provider_of_collection(c) is provider
            }
            if len(owned) > 1:
                siblings.update(owned)
        if not siblings:
            return {}
        found: dict[int, str] = {}
        for ord_, other in cur.execute(_CLASHES, {"siblings": sorted(siblings)}):
            if self.registry.provider_of_collection(other) is items[ord_].provider:
                found.setdefault(ord_, other)
        return found

    def _same_item(
        self,
        cur: psycopg.Cursor[Any],
        prepared: PreparedItem,
        stored: dict[str, Any],
        new: dict[str, Any],
    ) -> bool:
        """Whether a stored row and a new one hydrate to the same item."""
        cid = prepared.collection
        old_base = self._tagged_base(cur, cid, stored.get("pgstac:base_item"))
        _, new_base = self._base(cur, cid)
        old = {k: v for k, v in stored.items() if k != "pgstac:base_item"}
        fresh = {k: v for k, v in copy.deepcopy(new).items() if k != "pgstac:base_item"}
        left = hydrate(copy.deepcopy(old_base or {}), old, strip_unmatched_markers=True)
        right = hydrate(copy.deepcopy(new_base), fresh, strip_unmatched_markers=True)
        return bool(left == right)

    def _items(
        self, cur: psycopg.Cursor[Any], items: list[PreparedItem]
    ) -> list[tuple[Outcome, str | None]]:
        contents = self._rows(cur, items)
        outcomes: list[tuple[Outcome, str | None]] = [(Outcome.inserted, None)] * len(items)
        for ord_, other in self._clashes(cur, items).items():
            prepared = items[ord_]
            outcomes[ord_] = (
                Outcome.failed,
                f"id clash: {prepared.provider.prefix}:{prepared.id} already names the item in "
                f"collection {other!r}; one provider cannot hold the same id in two collections "
                f"(refused for {prepared.collection!r})",
            )
        collections = sorted({item.collection for item in items})
        rows = cur.execute(_CLASSIFY, {"collections": collections}).fetchall()
        for ord_, existed, same_content, same_fields, stored in rows:
            if outcomes[ord_][0] is Outcome.failed or not existed:
                continue
            if same_fields and (
                same_content or self._same_item(cur, items[ord_], stored, contents[ord_])
            ):
                outcomes[ord_] = (Outcome.unchanged, None)
            else:
                outcomes[ord_] = (Outcome.updated, None)
        if self.dry_run:
            return self._as_if_written(items, contents, outcomes)
        to_write = [
            i for i, (o, _) in enumerate(outcomes) if o in (Outcome.inserted, Outcome.updated)
        ]
        if not to_write:
            return outcomes
        changed = [i for i, (o, _) in enumerate(outcomes) if o is Outcome.updated]
        cur.execute(_CHECK_PARTITIONS, {"ords": to_write}).fetchall()
        if changed:
            cur.execute(_DELETE_CHANGED, {"ords": changed, "collections": collections})
        written = set(cur.execute(_INSERT, {"ords": to_write}).fetchall())
        for ord_ in to_write:
            if (items[ord_].id, items[ord_].collection) not in written:
                outcomes[ord_] = (
                    Outcome.failed,
                    "another process wrote this item at the same time; run the ingest again",
                )
        return outcomes

    def _as_if_written(
        self,
        items: list[PreparedItem],
        contents: list[dict[str, Any]],
        outcomes: list[tuple[Outcome, str | None]],
    ) -> list[tuple[Outcome, str | None]]:
        """A dry run writes nothing, so an item repeated later in the run is compared
        with the copy it would have written rather than with the database."""
        for ord_, (outcome, _) in enumerate(outcomes):
            if outcome is Outcome.failed:
                continue
            prepared = items[ord_]
            digest = hash(
                orjson.dumps(
                    [contents[ord_], prepared.geojson, prepared.datetime, prepared.end_datetime],
                    option=orjson.OPT_SORT_KEYS,
                )
            )
            key = (prepared.collection, prepared.id)
            earlier = self._would_write.get(key)
            if earlier is not None:
                outcomes[ord_] = (Outcome.unchanged if earlier == digest else Outcome.updated, None)
            if outcomes[ord_][0] is not Outcome.unchanged or earlier is not None:
                self._would_write[key] = digest
        return outcomes


def orjson_text(value: Any) -> str:
    return orjson.dumps(value).decode()
