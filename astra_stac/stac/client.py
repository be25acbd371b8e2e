"""stac-fastapi-pgstac's core client, taught provider-scoped ids."""

from __future__ import annotations

from typing import Any

import attr
import orjson
from asyncpg.exceptions import InvalidDatetimeFormatError
from fastapi import Request, Response
from stac_fastapi.pgstac.core import CoreCrudClient
from stac_fastapi.pgstac.models.links import ItemLinks, PagingLinks
from stac_fastapi.pgstac.types.search import PgstacSearch
from stac_fastapi.pgstac.utils import filter_fields
from stac_fastapi.types.errors import InvalidQueryParameter
from stac_fastapi.types.requests import get_base_url
from stac_fastapi.types.stac import Item, ItemCollection

from astra_stac.auth.keys import current_key
from astra_stac.catalog import Catalog
from astra_stac.errors import InvalidParameter, NotFound
from astra_stac.ids import is_scoped, parse_scene_id
from astra_stac.limits import check_finite, search_arguments
from astra_stac.responses import GeoJSONResponse
from astra_stac.stac.scoping import (
    CollectionsOf,
    filter_mentions_scoped_id,
    ids_clause,
    rewrite_id_filters,
    scope_item,
)
from astra_stac.stac.search import filter_as_cql2_json, query_to_cql2

GEOJSON = "application/geo+json"
_SEARCH_PAGE = "SELECT astra.search_page($1::text::jsonb)"
# A collection id no collection can have: searching it matches nothing.
NO_COLLECTION = "astra:none"
# The Fields extension's default set: what a valid STAC Item needs.
DEFAULT_FIELDS = frozenset(
    {
        "type",
        "stac_version",
        "id",
        "geometry",
        "bbox",
        "links",
        "assets",
        "properties.datetime",
        "properties.start_datetime",
        "properties.end_datetime",
    }
)
# Kept whatever `fields` asks: scoping needs id and collection, a feature needs its type.
KEPT_FIELDS = frozenset({"id", "collection", "type"})


async def _collections_by_provider(catalog: Catalog) -> CollectionsOf:
    return {
        prefix: await catalog.collections_of(provider)
        for prefix, provider in catalog.registry.providers.items()
    }


def _as_cql2_json(search: PgstacSearch) -> dict[str, Any] | None:
    raw = getattr(search, "filter_expr", None)
    return None if raw is None else filter_as_cql2_json(raw)


def _fields(search: PgstacSearch, request: Request) -> Any:
    """`fields` with the Fields extension's include/exclude semantics, or None if not asked.

    stac-fastapi-pgstac reads an empty `include` as "everything". The extension
    means the default set when `include` is null or empty (`?fields=` or
    `?fields=-geometry` included), and everything only when `include` is missing
    from the body and something is excluded.
    """
    if "fields" not in search.model_fields_set and "fields" not in request.query_params:
        return None
    fields = getattr(search, "fields", None)
    if fields is None:
        raise InvalidParameter("fields must be an object with `include` and/or `exclude` arrays.")
    include = set(fields.include or ())
    exclude = set(fields.exclude or ())
    include_missing = "include" not in fields.model_fields_set
    if not include and not (include_missing and exclude):
        include = set(DEFAULT_FIELDS)
    if include:
        include |= KEPT_FIELDS
    return fields.model_copy(update={"include": include, "exclude": exclude - KEPT_FIELDS})


def _as_geojson(result: Any) -> Any:
    """Answer with GeoJSON serialised once.

    stac-fastapi-pgstac answers `fields` searches as application/json, and a
    plain dict would be walked again by FastAPI's encoder before serialising.
    """
    if isinstance(result, Response):
        result.headers["content-type"] = GEOJSON
        return result
    return GeoJSONResponse(result)


async def _search_page(search: PgstacSearch, request: Request, catalog: Catalog) -> ItemCollection:
    """One page of a search: rows from `astra.search_page`, hydrated here, then scoped.

    The same page, order and tokens as pgstac's `search()`; the rows come back
    dehydrated and are hydrated against the catalog's cached base items, so the
    base item is neither rebuilt in SQL nor sent once per row.
    """
    try:
        async with request.app.state.get_connection(request, "r") as conn:
            page = await conn.fetchval(
                _SEARCH_PAGE, search.model_dump_json(exclude_none=True, by_alias=True)
            )
    except InvalidDatetimeFormatError as exc:
        raise InvalidQueryParameter(f"Datetime parameter {search.datetime} is invalid.") from exc
    fields = getattr(search, "fields", None)
    include: set[str] = set(fields.include or ()) if fields else set()
    exclude: set[str] = set(fields.exclude or ()) if fields else set()
    base_url = get_base_url(request)
    features = []
    for collection, item_id, geometry, content in page["rows"]:
        row = {"collection": collection, "geometry": geometry, "content": content}
        item = filter_fields(await catalog.hydrate(item_id, row), include, exclude)
        if not exclude or "links" not in exclude:  # as stac-fastapi-pgstac adds them
            item["links"] = await ItemLinks(
                collection_id=collection, item_id=item_id, request=request
            ).get_links(extra_links=item.get("links"))
        features.append(scope_item(dict(item), catalog.registry, base_url))
    result: dict[str, Any] = {"type": "FeatureCollection", "features": features}
    result["links"] = await PagingLinks(
        request=request, next=page.get("next"), prev=page.get("prev")
    ).get_links()
    result["numberReturned"] = page["numberReturned"]
    if "numberMatched" in page:
        result["numberMatched"] = page["numberMatched"]
    return result  # type: ignore[return-value]


@attr.s
class AstraCoreClient(CoreCrudClient):
    """Search, item-collection and item routes with provider-scoped ids.

    Every search path of stac-fastapi-pgstac runs through `_search_base`; ids are
    translated there on the way in, the page read by `_search_page` and its items
    scoped on the way out. The item
    route is answered by a primary-key read instead of a search.
    """

    async def _search_base(self, search_request: PgstacSearch, request: Request) -> ItemCollection:
        catalog: Catalog = request.app.state.catalog
        settings = request.app.state.api_settings
        update: dict[str, Any] = {"conf": None}
        limit = search_request.limit or settings.default_page_size
        update["limit"] = min(limit, settings.max_page_size)
        check_finite("bbox", search_request.bbox)
        if search_request.intersects is not None:
            check_finite("intersects", search_request.intersects.model_dump())

        clauses = [] if (cql := _as_cql2_json(search_request)) is None else [cql]
        # CQL2 text (a POST may send it) goes to pgstac as CQL2-JSON
        rewritten_filter = isinstance(getattr(search_request, "filter_expr", None), str)
        if (query := getattr(search_request, "query", None)) is not None:
            # pgstac knows only the comparisons: every query is searched as CQL2
            update["query"] = None
            if (from_query := query_to_cql2(query)) is not None:
                clauses.append(from_query)
                rewritten_filter = True
        ids = search_request.ids
        if ids or filter_mentions_scoped_id(clauses):
            collections_of = await _collections_by_provider(catalog)
            clauses = [rewrite_id_filters(clause, collections_of) for clause in clauses]
            if ids:
                clauses.append(ids_clause(list(ids), collections_of))
                update["ids"] = None
            rewritten_filter = True
        if rewritten_filter:
            update["filter_expr"] = (
                clauses[0] if len(clauses) == 1 else {"op": "and", "args": clauses}
            )
            update["filter_lang"] = "cql2-json"

        key = current_key.get()
        if key is not None and key.restricted:
            visible = await catalog.visible_collection_ids()
            wanted = search_request.collections or visible
            update["collections"] = [c for c in wanted if c in visible] or [NO_COLLECTION]

        if (fields := _fields(search_request, request)) is not None:
            update["fields"] = fields
        rewritten = search_request.model_copy(update=update)

        return await _search_page(rewritten, request, catalog)

    async def get_collection(self, collection_id: str, request: Request, **kwargs: Any) -> Any:
        """A collection, unless the key may not see it."""
        if not request.app.state.catalog.visible(collection_id):
            raise NotFound(f"Collection {collection_id} does not exist.")
        return await super().get_collection(collection_id, request, **kwargs)

    async def all_collections(self, request: Request, **kwargs: Any) -> Any:
        """Collections, without those the key may not see."""
        result = await super().all_collections(request, **kwargs)
        key = current_key.get()
        if key is None or not key.restricted:
            return result
        body = orjson.loads(result.body) if isinstance(result, Response) else result
        catalog: Catalog = request.app.state.catalog
        body["collections"] = [c for c in body["collections"] if catalog.visible(c["id"])]
        body["numberReturned"] = len(body["collections"])
        body.pop("numberMatched", None)
        return body

    async def get_search(self, request: Request, **kwargs: Any) -> ItemCollection:
        kwargs = search_arguments(kwargs)  # before stac-fastapi parses them
        return _as_geojson(await super().get_search(request, **kwargs))

    async def post_search(
        self, search_request: PgstacSearch, request: Request, **kwargs: Any
    ) -> ItemCollection:
        return _as_geojson(await super().post_search(search_request, request, **kwargs))

    async def item_collection(
        self, collection_id: str, request: Request, **kwargs: Any
    ) -> ItemCollection:
        kwargs = search_arguments(kwargs)
        return _as_geojson(await super().item_collection(collection_id, request, **kwargs))

    async def get_item(
        self, item_id: str, collection_id: str, request: Request, **kwargs: Any
    ) -> Item:
        """`GET /collections/{c}/items/{id}`: the id may be scoped or original."""
        catalog: Catalog = request.app.state.catalog
        provider = catalog.registry.provider_of_collection(collection_id)
        original_id = item_id
        if is_scoped(item_id):
            scene = parse_scene_id(item_id)
            if provider is None or scene.provider != provider.prefix:
                raise NotFound(f"Item {item_id} in collection {collection_id} does not exist.")
            original_id = scene.original_id
        item = await catalog.get_item(collection_id, original_id)
        if item is None:
            if collection_id not in await catalog.visible_collection_ids():
                raise NotFound(f"Collection {collection_id} does not exist.")
            raise NotFound(f"Item {item_id} in collection {collection_id} does not exist.")
        item.setdefault("links", [])
        scope_item(item, catalog.registry, get_base_url(request))
        return GeoJSONResponse(item)  # type: ignore[return-value]
