"""The application factory: stac-fastapi-pgstac under `/api/v1`, plus astra's routes."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg
from fastapi import FastAPI
from stac_fastapi.extensions.sort import SearchSortExtension
from stac_fastapi.extensions.sort.sort import SortConformanceClasses
from stac_fastapi.pgstac.app import instantiate_api
from stac_fastapi.pgstac.config import Settings as PgstacSettings
from stac_fastapi.pgstac.db import con_init, get_connection
from stac_fastapi.pgstac.extensions.filter import FiltersClient
from stac_fastapi.pgstac.models.extensions import Extensions

from astra_stac import __version__, memory, observability, openapi
from astra_stac.assets.extension import (
    DOWNLOAD_ROUTE,
    AssetsExtension,
    exclude_downloads_from_compression,
)
from astra_stac.assets.settings import AssetSettings
from astra_stac.auth.ratelimit import RateLimiter
from astra_stac.auth.verifier import AccessPolicy, ApiKeyMiddleware, KeyVerifier, RateLimits
from astra_stac.catalog import Catalog
from astra_stac.db.dsn import configured_dsn
from astra_stac.errors import register_error_handlers
from astra_stac.limits import RequestBodyMiddleware
from astra_stac.providers import ProviderRegistry, load_registry
from astra_stac.scenes import ScenesExtension
from astra_stac.settings import ApiSettings, DatabaseSettings
from astra_stac.stac.client import AstraCoreClient
from astra_stac.stac.search import FilterExtension, LenientCollectionsExtension, QueryExtension
from astra_stac.tiler import TilerSettings, register_tiler

PREFIX = "/api/v1"
# Routes anyone may call; everything else needs a key (unless auth is off).
PUBLIC_PATHS = frozenset(
    {
        PREFIX,
        f"{PREFIX}/",
        f"{PREFIX}/conformance",
        f"{PREFIX}/api",
        f"{PREFIX}/api.html",
        f"{PREFIX}/docs/oauth2-redirect",
        f"{PREFIX}/_mgmt/ping",
        f"{PREFIX}/_mgmt/health",
    }
)
# Operator-only routes.
ADMIN_PATHS = frozenset({f"{PREFIX}/_mgmt/metrics"})
# Signed download URLs: the signature, checked by the route, is the authorisation.
PUBLIC_PREFIXES = frozenset({f"{PREFIX}{DOWNLOAD_ROUTE}/"})
READ_ONLY_POSTS = frozenset({f"{PREFIX}/search"})
# The tiler's POSTs (statistics or an image of a GeoJSON feature) only read.
READ_ONLY_POST_PATTERNS = (rf"{PREFIX}/scenes/[^/]+/(?:statistics|feature(?:[./].*)?)",)
# pystac-client only recognises v1.0.* conformance URIs; advertise both forms.
SORT_CONFORMANCE = [
    SortConformanceClasses.ITEM_SEARCH_SORT,
    SortConformanceClasses.ITEM_SEARCH_SORTABLES,
    "https://api.stacspec.org/v1.0.0/item-search#sort",
    "https://api.stacspec.org/v1.0.0-rc.1/item-search#sort",
]


def _pgstac_settings(api: ApiSettings) -> PgstacSettings:
    return PgstacSettings(
        prefix_path=PREFIX,
        openapi_url=f"{PREFIX}/api",
        docs_url=f"{PREFIX}/api.html",
        stac_fastapi_title=api.api_title,
        stac_fastapi_description=api.api_description,
        stac_fastapi_version=__version__,
        stac_fastapi_landing_id="astra-stac",
        enable_transactions_extensions=api.transactions_enabled,
        cors_origins=api.cors_origins,
        cors_headers=["Content-Type", "Authorization"],
        use_api_hydrate=True,
    )


async def _release_connection(conn: asyncpg.Connection) -> None:
    """Ready a connection for its next user.

    asyncpg's default reset runs `RESET ALL; UNLISTEN *; CLOSE ALL` and an
    advisory-unlock on every release: two extra round trips per request. The app
    sets no session state, listens on nothing and takes no advisory locks, so
    ending an open transaction is all that is needed.
    """
    if conn.is_in_transaction():
        await conn.execute("ROLLBACK")


def _rate_limits(settings: ApiSettings) -> RateLimits | None:
    if not settings.rate_limits_enabled:
        return None
    return RateLimits(
        per_key=RateLimiter(settings.rate_limit_per_minute),
        failed_auth=RateLimiter(settings.failed_auth_per_minute),
    )


def create_app(
    api_settings: ApiSettings | None = None,
    dsn: str | None = None,
    registry: ProviderRegistry | None = None,
    asset_settings: AssetSettings | None = None,
    tiler_settings: TilerSettings | None = None,
) -> FastAPI:
    """Build the API. Nothing connects until the app starts."""
    api_settings = api_settings or ApiSettings()
    db_settings = DatabaseSettings()
    dsn = dsn if dsn is not None else configured_dsn(db_settings)
    if dsn is None:
        raise RuntimeError(
            "No database configured: set ASTRA_DATABASE_URL (or the PG* variables), "
            "or run `astra-stac serve`, which starts an embedded PostgreSQL."
        )
    registry = (registry or load_registry(api_settings.providers_file)).with_asset_hosts(
        api_settings.asset_hosts
    )
    pgstac_settings = _pgstac_settings(api_settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if api_settings.json_logs:
            observability.configure_logging(api_settings.log_level)
        server_settings = {"search_path": "pgstac,public", "application_name": "astra-stac"}
        writer = await asyncpg.create_pool(
            dsn or None,
            min_size=db_settings.pool_min_size,
            max_size=db_settings.pool_max_size,
            timeout=db_settings.connect_timeout,
            init=con_init,
            reset=_release_connection,
            server_settings=server_settings,
        )
        reader = writer
        if db_settings.reader_url:
            reader = await asyncpg.create_pool(
                db_settings.reader_url,
                min_size=db_settings.pool_min_size,
                max_size=db_settings.pool_max_size,
                timeout=db_settings.connect_timeout,
                init=con_init,
                reset=_release_connection,
                server_settings=server_settings,
            )
        app.state.writepool, app.state.readpool = writer, reader
        app.state.get_connection = get_connection
        app.state.catalog = Catalog(registry, reader, ttl=api_settings.collection_cache_seconds)
        app.state.key_verifier = KeyVerifier(writer, api_settings.key_last_used_flush_seconds)
        app.state.key_verifier.start()
        trimmer = asyncio.create_task(
            memory.trim_periodically(memory.MemorySettings().trim_seconds)
        )
        try:
            yield
        finally:
            trimmer.cancel()
            await app.state.key_verifier.stop()
            if reader is not writer:
                await reader.close()
            await writer.close()

    extensions = Extensions(
        settings=pgstac_settings,
        search_map={
            "sort": SearchSortExtension(conformance_classes=SORT_CONFORMANCE),
            "query": QueryExtension(),
            "filter": FilterExtension(client=FiltersClient()),
            "collections": LenientCollectionsExtension(),
        },
        extra_map={
            "scenes": ScenesExtension(),
            "assets": AssetsExtension(settings=asset_settings),
        },
    )
    api = instantiate_api(
        client=AstraCoreClient,
        extensions=extensions,
        lifespan=lifespan,
        settings=pgstac_settings,
    )
    app = api.app
    app.state.api_settings = api_settings
    app.state.registry = registry
    register_error_handlers(app)
    exclude_downloads_from_compression(app, PREFIX)
    tile_urls = register_tiler(app, PREFIX, tiler_settings)
    policy = AccessPolicy(
        public_paths=PUBLIC_PATHS,
        read_only_posts=READ_ONLY_POSTS,
        admin_paths=ADMIN_PATHS,
        public_prefixes=PUBLIC_PREFIXES,
        read_only_post_patterns=READ_ONLY_POST_PATTERNS,
        collections_path=f"{PREFIX}/collections",
    )
    app.add_middleware(
        ApiKeyMiddleware,
        policy=policy,
        limits=_rate_limits(api_settings),
        signed_urls=tile_urls,
    )
    app.add_middleware(RequestBodyMiddleware, max_bytes=api_settings.max_body_bytes)
    observability.install(app, PREFIX)
    openapi.install(app, is_public=lambda path: policy.required_scope("GET", path) is None)
    return app
