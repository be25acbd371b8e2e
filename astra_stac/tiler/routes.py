"""TiTiler mounted under `/api/v1/scenes/{scene_id}`: titiler.core's
`MultiBaseTilerFactory` as it is, with the data source swapped by injection —
the scene from the catalogue (`scene_path`), band names for assets
(`SceneLayerParams`), and `SceneReader` reading only that scene's band files.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Coroutine
from typing import Any, cast

import orjson
from brotli_asgi import BrotliMiddleware
from fastapi import APIRouter, Depends, FastAPI, Request, Response
from fastapi.routing import APIRoute
from rasterio._err import CPLE_BaseError
from rasterio.errors import RasterioIOError
from starlette.middleware import Middleware
from starlette.responses import JSONResponse
from titiler.core.factory import MultiBaseTilerFactory
from titiler.core.routing import EndpointScope

from astra_stac.errors import InvalidParameter
from astra_stac.tiler.dependencies import (
    BoundedHistogramParams,
    SceneAssetsParams,
    SceneLayerParams,
    scene_path,
    signed_url_params,
)
from astra_stac.tiler.reader import SceneReader
from astra_stac.tiler.scene import SceneLookup
from astra_stac.tiler.settings import TilerSettings
from astra_stac.tiler.signing import TileUrlSigning, url_signer

logger = logging.getLogger(__name__)
TAG = "Scene tiles"
# Routes a signed URL may open (relative to the scene); they document expires/sig.
SIGNED_ROUTES = [
    "/tiles",
    "/tiles/{tileMatrixSetId}",
    "/tiles/{tileMatrixSetId}/{z}/{x}/{y}",
    "/tiles/{tileMatrixSetId}/{z}/{x}/{y}.{format}",
    "/preview",
    "/preview.{format}",
    "/preview/{width}x{height}.{format}",
    "/bbox/{minx},{miny},{maxx},{maxy}.{format}",
    "/bbox/{minx},{miny},{maxx},{maxy}/{width}x{height}.{format}",
]


Handler = Callable[[Request], Coroutine[Any, Any, Response]]
# What numpy, rio-tiler and GDAL raise deep inside a read when the parameters make
# no sense for the data (a nodata value the dtype cannot hold, a degenerate bbox,
# a longitude outside a projection's domain, …).
PARAMETER_ERRORS: tuple[type[Exception], ...] = (
    ValueError,
    TypeError,
    ArithmeticError,
    IndexError,
    CPLE_BaseError,
)


def _failed_to_project(exc: BaseException) -> bool:
    """Whether a failed read failed in PROJ (an area outside the CRS's domain),
    not in reading the file."""
    cause = exc.__cause__
    while cause is not None:
        if isinstance(cause, CPLE_BaseError) and str(cause).startswith("PROJ"):
            return True
        cause = cause.__cause__
    return False


def _sign_tilejson(handler: Handler) -> Handler:
    async def signed_tilejson(request: Request) -> Response:
        response = await handler(request)
        if response.status_code != 200:
            return response
        signing: TileUrlSigning = request.app.state.tile_signing
        signer = url_signer(request.app)
        scene_id = request.path_params["scene_id"]
        expires = signing.expiry()
        body = orjson.loads(bytes(response.body))
        body["tiles"] = [
            signing.sign_url(signer, url, scene_id, expires) for url in body.get("tiles", [])
        ]
        return JSONResponse(body, headers={"Cache-Control": "private, no-store"})

    return signed_tilejson


class SceneTilerRoute(APIRoute):
    """The tiler's routes: errors of nonsensical parameters become 400s, and the
    TileJSON's tile URLs are signed."""

    def get_route_handler(self) -> Handler:
        handler = super().get_route_handler()
        if self.name == "tilejson":
            handler = _sign_tilejson(handler)

        async def translate_errors(request: Request) -> Response:
            try:
                return await handler(request)
            except RasterioIOError as exc:
                if not _failed_to_project(exc):
                    raise
                raise InvalidParameter(
                    "This part of the scene cannot be reprojected to the requested grid or CRS."
                ) from exc
            except PARAMETER_ERRORS as exc:
                logger.info("tiler parameters failed on %s", request.url.path, exc_info=True)
                # GDAL messages may name files or signed URLs: keep them out of responses.
                detail = "" if isinstance(exc, CPLE_BaseError) else f" ({str(exc)[:200]})"
                raise InvalidParameter(
                    f"This scene cannot be read or rendered with these parameters{detail}."
                ) from exc

        return translate_errors


def _exclude_images_from_compression(app: FastAPI, scenes_prefix: str) -> None:
    """PNG/JPEG/WebP/TIFF tiles are compressed already: do not spend CPU on Brotli."""
    pattern = rf"^{re.escape(scenes_prefix)}[^/]+/(?:tiles/[^/]+/[^/]+/[^/]+/|preview|bbox/)"
    for index, middleware in enumerate(app.user_middleware):
        if middleware.cls is BrotliMiddleware:
            kwargs: dict[str, Any] = dict(middleware.kwargs)
            kwargs["excluded_handlers"] = [*(kwargs.get("excluded_handlers") or []), pattern]
            app.user_middleware[index] = Middleware(BrotliMiddleware, **kwargs)


def register_tiler(
    app: FastAPI, api_prefix: str, settings: TilerSettings | None = None
) -> TileUrlSigning:
    """Mount the scene tiler on `app` (after the asset resolver is registered).

    Returns the tile URL signing, for `ApiKeyMiddleware` to accept signed URLs.
    """
    settings = settings or TilerSettings()
    # titiler logs "opening data with reader …" at INFO on every request: noise.
    logging.getLogger("titiler.core.factory").setLevel(logging.WARNING)
    resolver = app.state.asset_resolver
    app.state.tiler_settings = settings
    app.state.scene_lookup = SceneLookup(
        storage_root=resolver.local.root,
        s3=resolver.settings.s3,
        signers=resolver.signers,
        ttl=settings.scene_cache_seconds,
        size=settings.scene_cache_size,
        max_image_size=settings.max_image_size,
    )
    signing = TileUrlSigning(api_prefix, settings.signed_url_ttl)
    app.state.tile_signing = signing
    gdal_env = settings.gdal_env()

    async def environment() -> dict[str, str]:
        return gdal_env

    prefix = f"{api_prefix}/scenes/{{scene_id}}"
    factory = MultiBaseTilerFactory(
        reader=SceneReader,
        path_dependency=scene_path,
        layer_dependency=SceneLayerParams,
        assets_dependency=SceneAssetsParams,
        histogram_dependency=BoundedHistogramParams,
        environment_dependency=cast("Callable[..., dict]", environment),
        router=APIRouter(route_class=SceneTilerRoute),
        router_prefix=prefix,
        name="scene",
        add_viewer=False,
        add_ogc_maps=False,
        route_dependencies=[
            (
                [EndpointScope(path=path, method="GET") for path in SIGNED_ROUTES],
                [Depends(signed_url_params)],
            )
        ],
    )
    app.include_router(factory.router, prefix=prefix, tags=[TAG])
    _exclude_images_from_compression(app, f"{api_prefix}/scenes/")
    return signing
