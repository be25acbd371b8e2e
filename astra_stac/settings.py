"""Settings, one small class per concern, each read from its own `ASTRA_` prefix."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import BeforeValidator, Field, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict


def _comma_list(value: object) -> object:
    """Accept `a,b,c` from the environment as well as a real list."""
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


CommaList = Annotated[list[str], NoDecode, BeforeValidator(_comma_list)]


class DatabaseSettings(BaseSettings):
    """Where PostgreSQL is: `ASTRA_DATABASE_URL`, else the usual `PG*` variables.

    When neither is set, `astra-stac serve` starts an embedded PostgreSQL
    under `--data-dir`.
    """

    model_config = SettingsConfigDict(env_prefix="ASTRA_DATABASE_", extra="ignore")

    url: str | None = None
    reader_url: str | None = Field(
        default=None, description="Optional read-replica DSN used for read-only queries."
    )
    pool_min_size: int = 1
    pool_max_size: int = 10
    connect_timeout: float = Field(default=5.0, gt=0, description="Seconds to open a connection.")


class ApiSettings(BaseSettings):
    """How the HTTP API behaves."""

    model_config = SettingsConfigDict(env_prefix="ASTRA_", extra="ignore")

    auth_enabled: bool = True
    transactions_enabled: bool = False
    max_page_size: int = Field(default=1000, ge=1, le=10000)
    default_page_size: int = Field(default=10, ge=1)
    api_title: str = "astra-stac"
    api_description: str = "Earth-observation scenes from every provider, one STAC API."
    cors_origins: CommaList = ["*"]
    providers_file: Path | None = None
    asset_hosts: dict[str, list[str]] = Field(
        default_factory=dict,
        description="JSON: URL prefixes added to providers' asset_hosts allow-lists, "
        'e.g. {"local": ["s3://my-bucket/"]}.',
    )
    max_body_bytes: int = Field(
        default=1_048_576, ge=1024, description="Largest request body; larger ones get 413."
    )
    key_last_used_flush_seconds: float = Field(default=30.0, gt=0)
    collection_cache_seconds: float = Field(default=5.0, ge=0)
    json_logs: bool = True
    rate_limits_enabled: bool = True
    rate_limit_per_minute: int = Field(default=6000, ge=0, description="Per key and worker.")
    failed_auth_per_minute: int = Field(default=30, ge=0, description="Per client address.")
    log_level: Literal["critical", "error", "warning", "info", "debug"] = "info"

    @model_validator(mode="after")
    def _page_sizes_fit(self) -> ApiSettings:
        if self.default_page_size > self.max_page_size:
            raise ValueError("ASTRA_DEFAULT_PAGE_SIZE cannot exceed ASTRA_MAX_PAGE_SIZE")
        return self


class ServeSettings(BaseSettings):
    """Where the server listens and keeps its embedded data."""

    model_config = SettingsConfigDict(env_prefix="ASTRA_", extra="ignore")

    host: str = "127.0.0.1"
    port: int = 8080
    workers: int = Field(default=1, ge=1)
    data_dir: Path | None = None
