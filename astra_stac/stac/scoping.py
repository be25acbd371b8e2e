"""Provider-scoped ids on the way in (search `ids`, CQL2 on `id`) and out (items).

Incoming scoped ids become a CQL2 clause `id IN (...) AND collection IN (the
provider's collections)`, so `earth-search:LC08_…` never matches the Planetary
Computer item with the same original id.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any
from urllib.parse import quote

from astra_stac.ids import is_scoped, parse_scene_id, scope_id
from astra_stac.providers import ProviderRegistry

ASTRA_PROVIDER = "astra:provider"
ASTRA_COLLECTION = "astra:collection"
_INFERRED_RELS = {"self", "parent", "collection", "root", "item", "items", "child"}
_MATCH_NOTHING: dict[str, Any] = {"op": "=", "args": [1, 0]}
CollectionsOf = dict[str, list[str]]


def _in(prop: str, values: list[str]) -> dict[str, Any]:
    return {"op": "in", "args": [{"property": prop}, values]}


def ids_clause(ids: list[str], collections_of: CollectionsOf) -> dict[str, Any]:
    """A CQL2-JSON clause matching these ids, scoped or plain."""
    by_provider: dict[str, list[str]] = defaultdict(list)
    plain: list[str] = []
    for value in ids:
        if is_scoped(value):
            scene = parse_scene_id(value)
            by_provider[scene.provider].append(scene.original_id)
        else:
            plain.append(value)
    clauses: list[dict[str, Any]] = []
    for provider, originals in by_provider.items():
        collections = collections_of.get(provider)
        if collections:
            clauses.append(
                {"op": "and", "args": [_in("id", originals), _in("collection", collections)]}
            )
    if plain:
        clauses.append(_in("id", plain))
    if not clauses:
        return _MATCH_NOTHING
    return clauses[0] if len(clauses) == 1 else {"op": "or", "args": clauses}


def _is_id_property(node: Any) -> bool:
    return isinstance(node, dict) and node.get("property") == "id"


def rewrite_id_filters(node: Any, collections_of: CollectionsOf) -> Any:
    """Replace comparisons of `id` with scoped ids by their scoped clause."""
    if isinstance(node, list):
        return [rewrite_id_filters(n, collections_of) for n in node]
    if not isinstance(node, dict) or "op" not in node:
        return node
    op, args = node["op"], node.get("args", [])
    if op in ("=", "<>", "!=", "in") and len(args) == 2:
        prop, value = (args[0], args[1]) if _is_id_property(args[0]) else (args[1], args[0])
        if _is_id_property(prop):
            values = value if isinstance(value, list) else [value]
            if values and all(isinstance(v, str) for v in values) and any(map(is_scoped, values)):
                clause = ids_clause(values, collections_of)
                return clause if op in ("=", "in") else {"op": "not", "args": [clause]}
    return {**node, "args": rewrite_id_filters(args, collections_of)}


def filter_mentions_scoped_id(node: Any) -> bool:
    """Whether a CQL2-JSON tree compares `id` with something holding a `:`."""
    if isinstance(node, list):
        return any(filter_mentions_scoped_id(n) for n in node)
    if not isinstance(node, dict):
        return False
    args = node.get("args", [])
    if node.get("op") and len(args) == 2 and any(_is_id_property(a) for a in args):
        values = [v for a in args for v in (a if isinstance(a, list) else [a])]
        if any(isinstance(v, str) and is_scoped(v) for v in values):
            return True
    return filter_mentions_scoped_id(args)


def scope_item(
    item: dict[str, Any],
    registry: ProviderRegistry,
    base_url: str,
    self_href: str | None = None,
    parent_href: str | None = None,
) -> dict[str, Any]:
    """Give an item its provider-scoped id, `astra:*` properties and resolvable links.

    `base_url` ends with `/`. The default self link is the item route and the
    default parent its collection; scene details passes its own.
    """
    collection = item.get("collection")
    original_id = item.get("id")
    if not collection or not original_id:
        return item
    provider = registry.provider_of_collection(collection)
    if provider is None:
        return item
    scoped = scope_id(provider.prefix, original_id)
    item["id"] = scoped
    properties = item.get("properties")
    if isinstance(properties, dict):
        properties.setdefault(ASTRA_PROVIDER, provider.organisation)
        properties[ASTRA_COLLECTION] = collection
    if "links" in item:
        collection_href = f"{base_url}collections/{quote(collection, safe='')}"
        own = [link for link in item["links"] or [] if link.get("rel") not in _INFERRED_RELS]
        item["links"] = [
            {
                "rel": "self",
                "type": "application/geo+json",
                "href": self_href or f"{collection_href}/items/{quote(scoped, safe=':')}",
            },
            {
                "rel": "parent",
                "type": "application/json",
                "href": parent_href or collection_href,
            },
            {"rel": "collection", "type": "application/json", "href": collection_href},
            {"rel": "root", "type": "application/json", "href": base_url},
            *own,
        ]
    return item
