"""The stac-fastapi extension that declares the asset routes; the logic lives in
`astra_stac.assets.resolver` and `astra_stac.assets.download`."""

from __future__ import annotations

import re
from typing import Annotated, Any

import attr
from brotli_asgi import BrotliMiddleware
from fastapi import APIRouter, FastAPI, Path, Query, Request
from stac_fastapi.types.extension import ApiExtension
from stac_fastapi.types.requests import get_base_url
from starlette.middleware import Middleware
from starlette.responses import FileResponse

from astra_stac.assets.download import signed_file_response
from astra_stac.assets.resolver import AssetResolver
from astra_stac.assets.settings import AssetSettings
from astra_stac.responses import JsonResponse

DOWNLOAD_ROUTE = "/download"

_NULLABLE_STRING = {"type": ["string", "null"]}
RESOLVED_ASSET_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["href", "type", "title", "file:size", "eo:bands", "expires_at"],
    "properties": {
        "href": {"type": "string", "description": "Downloads with no further auth."},
        "type": {"type": "string"},
        "title": {"type": "string"},
        "file:size": {"type": ["integer", "null"], "description": "Bytes the href returns."},
        "eo:bands": {"type": "array", "items": {"type": "object"}},
        "expires_at": {"type": "string", "format": "date-time"},
        "gsd": {"type": "number"},
        "roles": {"type": "array", "items": {"type": "string"}},
        "astra:routing": {"enum": ["direct", "converted"]},
        "astra:signed": {"type": "boolean"},
    },
}
RESOLVE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["scene_id", "format", "assets", "metadata"],
    "properties": {
        "scene_id": {"type": "string"},
        "format": {"enum": ["cog", "geotiff", "png", "jpeg"]},
        "assets": {
            "type": "object",
            "description": "Keyed by native band name.",
            "additionalProperties": RESOLVED_ASSET_SCHEMA,
        },
        "metadata": {
            "type": "object",
            "required": ["crs", "resolution", "source_provider", "routing"],
            "properties": {
                "crs": _NULLABLE_STRING,
                "resolution": {"type": ["number", "null"]},
                "source_provider": _NULLABLE_STRING,
                "routing": {"enum": ["direct", "converted"]},
            },
        },
    },
}
RESOLVE_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "Signed hrefs of the scene's bands.",
        "content": {"application/json": {"schema": RESOLVE_SCHEMA}},
    },
    400: {
        "description": "INVALID_PARAMETER (scene_id missing), INVALID_ID_FORMAT, "
        "UNKNOWN_BAND or UNKNOWN_FORMAT."
    },
    401: {"description": "UNAUTHORIZED: missing or invalid API key."},
    404: {"description": "SCENE_NOT_FOUND: no scene has this id."},
    422: {
        "description": "ASSET_NOT_ALLOWED: the scene's file is somewhere the server does not "
        "read (a host off its provider's asset_hosts, outside the storage root, a VRT)."
    },
    502: {"description": "ASSET_UNAVAILABLE: the file could not be read, signed or converted."},
    507: {"description": "INSUFFICIENT_STORAGE: the conversion cache is out of space."},
}
RESOLVE_PARAMETERS = [
    {
        "name": name,
        "in": "query",
        "required": False,
        "description": description,
        "schema": {"type": "string", "title": name.replace("_", " ").title()},
    }
    for name, description in (
        (
            "scene_id",
            "Provider-scoped scene id, e.g. sentinel-2:S2B_MSIL2A_20250115T184929 "
            "(required; without it the answer is 400 INVALID_PARAMETER).",
        ),
        (
            "bands",
            "Comma-separated native (B04,B08) or common (red,nir) band names; omit for every band.",
        ),
        ("format", "cog (default), geotiff, png or jpeg."),
    )
]
DOWNLOAD_ERRORS: dict[int | str, dict[str, Any]] = {
    206: {"description": "The requested byte range."},
    403: {"description": "INVALID_SIGNATURE or SIGNATURE_EXPIRED."},
    404: {"description": "NOT_FOUND: the file is gone."},
    416: {"description": "RANGE_NOT_SATISFIABLE."},
}


def exclude_downloads_from_compression(app: FastAPI, prefix: str) -> None:
    """Never compress signed downloads: their bytes must be exactly what `file:size`
    and `Content-Range` promise (stac-fastapi adds Brotli/gzip for every route)."""
    pattern = f"^{re.escape(prefix + DOWNLOAD_ROUTE)}/"
    for index, middleware in enumerate(app.user_middleware):
        if middleware.cls is BrotliMiddleware:
            kwargs: dict[str, Any] = dict(middleware.kwargs)
            kwargs["excluded_handlers"] = [*(kwargs.get("excluded_handlers") or []), pattern]
            app.user_middleware[index] = Middleware(BrotliMiddleware, **kwargs)


def _resolver(request: Request) -> AssetResolver:
    resolver: AssetResolver = request.app.state.asset_resolver
    return resolver


async def resolve_assets(request: Request) -> JsonResponse:
    """Signed download URLs for a scene's bands in the requested format."""
    # The parameters are read here, not declared to FastAPI: its per-request
    # parameter machinery cost ~0.3 ms of a ~2 ms answer. `RESOLVE_PARAMETERS`
    # documents them; the resolver checks every one.
    query = request.query_params
    body = await _resolver(request).resolve(
        request.app.state.catalog,
        request.app.state.registry,
        query.get("scene_id"),
        query.get("bands"),
        query.get("format"),
        get_base_url(request),
    )
    return JsonResponse(body, headers={"Cache-Control": "no-store"})


async def download(
    request: Request,
    path: Annotated[str, Path(description="What the resolver signed.")],
    expires: Annotated[str | None, Query(description="Expiry, Unix seconds.")] = None,
    sig: Annotated[str | None, Query(description="HMAC-SHA256 signature.")] = None,
) -> FileResponse:
    """A file the resolver signed a URL for. No API key: the signature is the authorisation."""
    resolver = _resolver(request)
    return signed_file_response(
        resolver.url_signer,
        resolver.local,
        path,
        expires,
        sig,
        request.headers.get("range"),
    )


@attr.s
class AssetsExtension(ApiExtension):
    """Declares `GET /assets` (the Asset Resolver) and the signed download route."""

    settings: AssetSettings | None = attr.ib(default=None)
    conformance_classes: list[str] = attr.ib(factory=list)
    schema_href: str | None = attr.ib(default=None)

    def register(self, app: FastAPI) -> None:
        app.state.asset_resolver = AssetResolver(self.settings or AssetSettings())
        router = APIRouter(prefix=app.state.router_prefix, tags=["Assets"])
        router.add_api_route(
            "/assets",
            resolve_assets,
            methods=["GET"],
            name="Asset resolver",
            response_class=JsonResponse,
            responses=RESOLVE_RESPONSES,
            openapi_extra={"parameters": RESOLVE_PARAMETERS},
        )
        for method in ("GET", "HEAD"):
            router.add_api_route(
                f"{DOWNLOAD_ROUTE}/{{path:path}}",
                download,
                methods=[method],
                name="Signed download",
                operation_id=f"signed_download_{method.lower()}",
                response_class=FileResponse,
                responses=DOWNLOAD_ERRORS,
                include_in_schema=method == "GET",
            )
        app.include_router(router)
