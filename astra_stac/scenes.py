"""Scene Details: `GET /api/v1/scenes/{provider:original_id}` returns the full STAC item."""

from __future__ import annotations

from typing import Annotated, Any

import attr
from fastapi import APIRouter, FastAPI, Path, Request
from stac_fastapi.types.extension import ApiExtension
from stac_fastapi.types.requests import get_base_url

from astra_stac.catalog import Catalog
from astra_stac.errors import SceneNotFound
from astra_stac.ids import parse_scene_id
from astra_stac.responses import GeoJSONResponse
from astra_stac.stac.scoping import scope_item

RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "The scene's STAC item.",
        "content": {
            "application/geo+json": {
                "schema": {"type": "object", "description": "A STAC Item (GeoJSON Feature)."}
            }
        },
    },
    400: {"description": "INVALID_ID_FORMAT: the id is not provider:original_id."},
    401: {"description": "UNAUTHORIZED: missing or invalid API key."},
    404: {"description": "SCENE_NOT_FOUND: no scene has this id."},
}


async def scene_details(
    request: Request,
    scene_id: Annotated[
        str,
        Path(description="Provider-scoped scene id, e.g. sentinel-2:S2B_MSIL2A_20250115T184929"),
    ],
) -> GeoJSONResponse:
    """Complete STAC metadata of one scene."""
    scene = parse_scene_id(scene_id)
    catalog: Catalog = request.app.state.catalog
    item = await catalog.find_scene(scene)
    if item is None:
        raise SceneNotFound(f"No scene with id {scene_id!r} exists.")
    base_url = get_base_url(request)
    item.setdefault("links", [])
    scope_item(
        item,
        catalog.registry,
        base_url,
        self_href=f"{base_url}scenes/{scene}",
        parent_href=f"{base_url}search",
    )
    return GeoJSONResponse(item)


@attr.s
class ScenesExtension(ApiExtension):
    """Declares the scene-details route; the lookup lives in `astra_stac.catalog`."""

    conformance_classes: list[str] = attr.ib(factory=list)
    schema_href: str | None = attr.ib(default=None)

    def register(self, app: FastAPI) -> None:
        router = APIRouter(prefix=app.state.router_prefix, tags=["Scenes"])
        router.add_api_route(
            "/scenes/{scene_id}",
            scene_details,
            methods=["GET"],
            name="Scene details",
            response_class=GeoJSONResponse,
            responses=RESPONSES,
        )
        app.include_router(router)
