"""Reading scenes out of pgstac by provider-scoped id, and knowing which local
collections belong to which provider.

Single-item reads skip pgstac's `search()` (which plans a whole search and
hydrates in SQL): they read the item row by its primary key and hydrate it in
Python with the same `hydraters` that stac-fastapi-pgstac uses, against the
base item pgstac tagged it with (read through pgstac's `collection_base_item`
and cached briefly, like the collection list).
"""

from __future__ import annotations

import re
import time
from typing import Any

import orjson
from asyncpg import Pool
from hydraters import hydrate

from astra_stac.auth.keys import current_key
from astra_stac.ids import SceneId
from astra_stac.providers import Provider, ProviderRegistry

_ITEM_QUERY = """
SELECT i.collection, ST_AsGeoJSON(i.geometry, 20)::text AS geometry, i.content
FROM pgstac.items i
WHERE i.id = $1 AND i.collection = ANY($2::text[])
"""
_BASE_ITEM_QUERY = "SELECT pgstac.collection_base_item($1::text, $2::int)"
_BASE_ITEM_TAG = re.compile(r"\s*\d{1,9}\s*")


def base_item_tag(content: dict[str, Any]) -> int | None:
    """The base-item version pgstac dehydrated this item against (None: the current one)."""
    tag = content.get("pgstac:base_item")
    if tag is None or not _BASE_ITEM_TAG.fullmatch(str(tag)):
        return None
    return int(tag)


def hydrate_row(original_id: str, row: Any, base_item: dict[str, Any] | None) -> dict[str, Any]:
    """A full STAC item from a dehydrated pgstac row and its base item."""
    content = dict(row["content"])
    content.pop("pgstac:base_item", None)
    item = {
        "id": original_id,
        "geometry": orjson.loads(row["geometry"]) if row["geometry"] else None,
        "collection": row["collection"],
        "type": "Feature",
        **content,
    }
    base = {k: v for k, v in (base_item or {}).items() if v is not None}
    return dict(hydrate(base, item, strip_unmatched_markers=True))


class Catalog:
    """The provider view of what pgstac holds, as the current request's key may see it.

    The list of collection ids is read from pgstac and kept for `ttl` seconds, so
    a collection created by another replica is seen within that time.
    """

    def __init__(self, registry: ProviderRegistry, pool: Pool, ttl: float = 5.0) -> None:
        self.registry = registry
        self._pool = pool
        self._ttl = ttl
        self._collections: list[str] = []
        self._read_at = float("-inf")
        self._base_items: dict[tuple[str, int | None], tuple[float, dict[str, Any] | None]] = {}

    async def collection_ids(self) -> list[str]:
        """Every collection id in pgstac."""
        if time.monotonic() - self._read_at > self._ttl:
            rows = await self._pool.fetch("SELECT id FROM pgstac.collections ORDER BY id")
            self._collections = [row["id"] for row in rows]
            self._read_at = time.monotonic()
        return self._collections

    async def base_item(self, collection_id: str, tag: int | None) -> dict[str, Any] | None:
        """A collection's base item (a tagged version, or the current one), cached for `ttl`."""
        key = (collection_id, tag)
        cached = self._base_items.get(key)
        if cached is not None and time.monotonic() - cached[0] <= self._ttl:
            return cached[1]
        value = await self._pool.fetchval(_BASE_ITEM_QUERY, collection_id, tag)
        self._base_items[key] = (time.monotonic(), value)
        return value

    async def hydrate(self, original_id: str, row: Any) -> dict[str, Any]:
        """A full item from a dehydrated row (`collection`, GeoJSON `geometry`, `content`)."""
        base = await self.base_item(row["collection"], base_item_tag(row["content"]))
        return hydrate_row(original_id, row, base)

    def visible(self, collection_id: str) -> bool:
        """Whether the current request's key may see this collection."""
        key = current_key.get()
        if key is None or not key.restricted:
            return True
        provider = self.registry.provider_of_collection(collection_id)
        return key.allows(collection_id, provider.prefix if provider else None)

    async def visible_collection_ids(self) -> list[str]:
        """The collections the current request's key may see."""
        return [c for c in await self.collection_ids() if self.visible(c)]

    async def collections_of(self, provider: Provider) -> list[str]:
        """The provider's collections that exist and the key may see, registry order first."""
        existing = await self.visible_collection_ids()
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
        return await self.hydrate(scene_id.original_id, row)

    async def get_item(self, collection_id: str, original_id: str) -> dict[str, Any] | None:
        """The hydrated item `original_id` of one collection."""
        if not self.visible(collection_id):
            return None
        rows = await self._pool.fetch(_ITEM_QUERY, original_id, [collection_id])
        return await self.hydrate(original_id, rows[0]) if rows else None
