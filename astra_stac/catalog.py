"""Reading scenes out of pgstac by provider-scoped id, and knowing which local
collections belong to which provider.

Single-item reads skip pgstac's `search()` (which plans a whole search and
hydrates in SQL): they read the item row by its primary key and hydrate it in
Python with the same `hydraters` that stac-fastapi-pgstac uses, against the
base item pgstac tagged it with.
"""

from __future__ import annotations

import time
from typing import Any

import orjson
from asyncpg import Pool
from hydraters import hydrate

from astra_stac.ids import SceneId
from astra_stac.providers import Provider, ProviderRegistry

_ITEM_QUERY = """
SELECT i.collection,
       ST_AsGeoJSON(i.geometry, 20)::text AS geometry,
       i.content,
       pgstac.collection_base_item(
           i.collection,
           CASE WHEN i.content->>'pgstac:base_item' ~ '^\\s*\\d{1,9}\\s*$'
                THEN (i.content->>'pgstac:base_item')::int END
       ) AS base_item
FROM pgstac.items i
WHERE i.id = $1 AND i.collection = ANY($2::text[])
"""


def hydrate_row(original_id: str, row: Any) -> dict[str, Any]:
    """A full STAC item from a dehydrated pgstac row."""
    content = dict(row["content"])
    content.pop("pgstac:base_item", None)
    item = {
        "id": original_id,
        "geometry": orjson.loads(row["geometry"]) if row["geometry"] else None,
        "collection": row["collection"],
        "type": "Feature",
        **content,
    }
    base_item = {k: v for k, v in (row["base_item"] or {}).items() if v is not None}
    return dict(hydrate(base_item, item, strip_unmatched_markers=True))


class Catalog:
    """The provider view of what pgstac holds.

    The list of collection ids is read from pgstac and kept for `ttl` seconds, so
    a collection created by another replica is seen within that time.
    """

    def __init__(self, registry: ProviderRegistry, pool: Pool, ttl: float = 5.0) -> None:
        self.registry = registry
        self._pool = pool
        self._ttl = ttl
        self._collections: list[str] = []
        self._read_at = float("-inf")

    async def collection_ids(self) -> list[str]:
        """Every collection id in pgstac."""
        if time.monotonic() - self._read_at > self._ttl:
            rows = await self._pool.fetch("SELECT id FROM pgstac.collections ORDER BY id")
            self._collections = [row["id"] for row in rows]
            self._read_at = time.monotonic()
        return self._collections

    async def collections_of(self, provider: Provider) -> list[str]:
        """The provider's collections that exist, registry order first."""
        existing = await self.collection_ids()
        owned = {c for c in existing if self.registry.provider_of_collection(c) is provider}
        listed = [c for c in provider.collection_ids if c in owned]
        return listed + sorted(owned.difference(listed))

    async def find_scene(self, scene_id: SceneId) -> dict[str, Any] | None:
        """The hydrated item behind a scene id.

        When one provider holds the same original id in several collections, the
        collection listed first in the registry wins (then alphabetical order).
        """
        provider = self.registry.get(scene_id.provider)
        if provider is None:
            return None
        collections = await self.collections_of(provider)
        if not collections:
            return None
        rows = await self._pool.fetch(_ITEM_QUERY, scene_id.original_id, collections)
        if not rows:
            return None
        rank = {c: i for i, c in enumerate(collections)}
        row = min(rows, key=lambda r: rank[r["collection"]])
        return hydrate_row(scene_id.original_id, row)

    async def get_item(self, collection_id: str, original_id: str) -> dict[str, Any] | None:
        """The hydrated item `original_id` of one collection."""
        rows = await self._pool.fetch(_ITEM_QUERY, original_id, [collection_id])
        return hydrate_row(original_id, rows[0]) if rows else None
