"""The stac-fastapi extension that declares the asset routes; the logic lives in
`astra_stac.assets.resolver` and `astra_stac.assets.download`."""

from __future__ import annotations

import re
from typing import Annotated, Any

import attr
from brotli_asgi import BrotliMiddleware
from fastapi import APIRouter, FastAPI, Path, Query, Request
from fastapi.responses import JSONResponse
from stac_fastapi.types.extension import ApiExtension
from stac_fastapi.types.requests import get_base_url
from starlette.middleware import Middleware
from starlette.responses import FileResponse

from astra_stac.assets.download import signed_file_response
from astra_stac.assets.resolver import AssetResolver
from astra_stac.assets.settings import AssetSettings

DOWNLOAD_ROUTE = "/download"

RESOLVE_ERRORS: dict[int | str, dict[str, Any]] = {
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


async def resolve_assets(
    request: Request,
    scene_id: Annotated[
        str | None,
        Query(description="Provider-scoped scene id, e.g. sentinel-2:S2B_MSIL2A_20250115T184929"),
    ] = None,
    bands: Annotated[
        str | None,
        Query(
            description="Comma-separated native (B04,B08) or common (red,nir) band names; "
            "omit for every band."
        ),
    ] = None,
    format: Annotated[
        str | None,
        Query(description="cog (default), geotiff, png or jpeg."),
    ] = None,
) -> JSONResponse:
    """Signed download URLs for a scene's bands in the requested format."""
    body = await _resolver(request).resolve(
        request.app.state.catalog,
        request.app.state.registry,
        scene_id,
        bands,
        format,
        get_base_url(request),
    )
    return JSONResponse(body, headers={"Cache-Control": "no-store"})


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
            responses=RESOLVE_ERRORS,
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
