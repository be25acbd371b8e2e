"""What ingest adds to an upstream item before it is stored.

The item keeps everything it came with; it gains `astra:provider` and
`astra:collection`, and its `collection` becomes the provider's local
collection id (see `astra_stac.providers`).
"""

from __future__ import annotations

import copy
from typing import Any

from astra_stac.providers import Provider
from astra_stac.stac.scoping import ASTRA_COLLECTION, ASTRA_PROVIDER

STAC_DEFAULT_LICENSE = "proprietary"


def normalize_item(item: dict[str, Any], provider: Provider) -> dict[str, Any]:
    """A copy of `item` placed in the provider's local collection, with `astra:*` fields."""
    result = copy.deepcopy(item)
    upstream = item.get("collection") or "items"
    local = provider.local_collection_id(upstream)
    result["collection"] = local
    properties = result.setdefault("properties", {})
    properties[ASTRA_PROVIDER] = provider.organisation
    properties[ASTRA_COLLECTION] = local
    return result


def normalize_collection(collection: dict[str, Any], provider: Provider) -> dict[str, Any]:
    """A copy of an upstream collection under the provider's local id."""
    result = copy.deepcopy(collection)
    result["id"] = provider.local_collection_id(collection["id"])
    result.setdefault("links", [])
    return result


def template_collection(local_id: str, provider: Provider, upstream_id: str) -> dict[str, Any]:
    """A minimal valid collection for items whose upstream collection was not supplied."""
    return {
        "type": "Collection",
        "stac_version": "1.0.0",
        "id": local_id,
        "title": f"{upstream_id} ({provider.title or provider.prefix})",
        "description": f"{upstream_id} scenes from {provider.title or provider.prefix}.",
        "license": STAC_DEFAULT_LICENSE,
        "extent": {
            "spatial": {"bbox": [[-180.0, -90.0, 180.0, 90.0]]},
            "temporal": {"interval": [[None, None]]},
        },
        "links": [],
        "providers": [{"name": provider.organisation, "roles": ["producer"]}],
    }
