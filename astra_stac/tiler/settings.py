"""Settings of the scene tiler (`ASTRA_TILER_…`)."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class TilerSettings(BaseSettings):
    """How the scene tiler reads and renders.

    The GDAL options are tuned for COGs read over HTTP/S3 (few, merged range
    requests; no directory listings) and applied to every read of the tiler.
    """

    model_config = SettingsConfigDict(env_prefix="ASTRA_TILER_", extra="ignore")

    signed_url_ttl: int = Field(
        default=3600,
        ge=60,
        le=7 * 24 * 3600,
        description="Seconds the signed tile URLs of a TileJSON stay valid.",
    )
    scene_cache_seconds: float = Field(
        default=30.0,
        ge=0,
        description="How long a looked-up scene (item, bands, file paths) is reused; 0 = never.",
    )
    scene_cache_size: int = Field(default=512, ge=1)
    max_image_size: int = Field(
        default=2048,
        ge=256,
        le=16384,
        description="Largest width, height, tile size or max_size a request may ask for.",
    )
    vsi_cache_size: int = Field(
        default=5_000_000, ge=0, description="Per-file VSI cache of remote reads, bytes."
    )
    http_timeout: int = Field(default=30, ge=1, description="GDAL HTTP timeout, seconds.")
    http_max_retry: int = Field(default=3, ge=0)

    def gdal_env(self) -> dict[str, str]:
        """GDAL configuration options for every read."""
        return {
            # A COG needs no sidecar files: never list the "directory" of a URL.
            "GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR",
            "GDAL_HTTP_MERGE_CONSECUTIVE_RANGES": "YES",
            "GDAL_HTTP_MULTIPLEX": "YES",
            "GDAL_HTTP_VERSION": "2",
            "GDAL_INGESTED_BYTES_AT_OPEN": "32768",
            "GDAL_HTTP_MAX_RETRY": str(self.http_max_retry),
            "GDAL_HTTP_RETRY_DELAY": "0.5",
            "GDAL_HTTP_TIMEOUT": str(self.http_timeout),
            "VSI_CACHE": "TRUE",
            "VSI_CACHE_SIZE": str(self.vsi_cache_size),
            "CPL_VSIL_CURL_CACHE_SIZE": "200000000",
            "CPL_VSIL_CURL_USE_HEAD": "NO",
            # No network lookups for PROJ grids while rendering tiles.
            "PROJ_NETWORK": "OFF",
        }
