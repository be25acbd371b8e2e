"""Settings of the asset resolver: signing, local storage, S3, Planetary Computer
SAS tokens and conversions — one small class per concern, one env prefix each."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from astra_stac.settings import CommaList

# Longest lifetime S3 SigV4 presigned URLs allow.
MAX_TTL_SECONDS = 7 * 24 * 3600


class SigningSettings(BaseSettings):
    """How long signed URLs live and the key that signs the app's own download URLs.

    Without `ASTRA_SIGNING_KEY` a random key is generated once and kept in
    `<storage root>/.astra/signing-key`, so every worker on the machine (and
    every replica sharing that storage) signs alike. Replicas that do not share
    the storage root must all be given the same `ASTRA_SIGNING_KEY`.
    """

    model_config = SettingsConfigDict(env_prefix="ASTRA_", extra="ignore")

    signed_url_ttl: int = Field(default=3600, ge=1, le=MAX_TTL_SECONDS)
    signing_key: SecretStr | None = None

    @field_validator("signing_key")
    @classmethod
    def _long_enough(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value()) < 32:
            raise ValueError("ASTRA_SIGNING_KEY must be at least 32 characters")
        return value


class StorageSettings(BaseSettings):
    """Local storage: where served files live and where conversions are cached.

    `root` defaults to `<data dir>/storage`, where `astra-stac serve --demo`
    writes the demo band files. `file://` hrefs and plain paths are served only
    from inside it.
    """

    model_config = SettingsConfigDict(env_prefix="ASTRA_STORAGE_", extra="ignore")

    root: Path | None = None
    cache_dir: Path | None = Field(
        default=None, description="Conversion cache; default <root>/.astra/cache."
    )


class S3BucketSettings(BaseModel):
    """Per-bucket overrides of the S3 settings."""

    endpoint_url: str | None = None
    region: str | None = None
    requester_pays: bool | None = None
    access_key_id: str | None = None
    secret_access_key: SecretStr | None = None
    addressing_style: str | None = None


def _default_buckets() -> dict[str, S3BucketSettings]:
    # Earth Search items point at these requester-pays AWS open-data buckets.
    return {
        "usgs-landsat": S3BucketSettings(region="us-west-2", requester_pays=True),
        "sentinel-s2-l2a": S3BucketSettings(region="eu-central-1", requester_pays=True),
    }


class S3Settings(BaseSettings):
    """`s3://` hrefs: presigned with boto3 (credentials from the usual AWS chain
    unless given here). `ASTRA_S3_BUCKETS` is JSON, e.g.
    `{"eodata": {"endpoint_url": "https://eodata.dataspace.copernicus.eu"}}`."""

    model_config = SettingsConfigDict(env_prefix="ASTRA_S3_", extra="ignore")

    endpoint_url: str | None = None
    region: str | None = None
    requester_pays: bool = False
    access_key_id: str | None = None
    secret_access_key: SecretStr | None = None
    addressing_style: str = Field(default="auto", pattern="^(auto|path|virtual)$")
    buckets: dict[str, S3BucketSettings] = Field(default_factory=_default_buckets)

    def for_bucket(self, bucket: str) -> S3BucketSettings:
        """The effective settings of one bucket."""
        own = self.buckets.get(bucket, S3BucketSettings())
        return S3BucketSettings(
            endpoint_url=own.endpoint_url or self.endpoint_url,
            region=own.region or self.region,
            requester_pays=self.requester_pays
            if own.requester_pays is None
            else own.requester_pays,
            access_key_id=own.access_key_id or self.access_key_id,
            secret_access_key=own.secret_access_key or self.secret_access_key,
            addressing_style=own.addressing_style or self.addressing_style,
        )


class PlanetaryComputerSettings(BaseSettings):
    """Planetary Computer blob hrefs: signed with SAS tokens from the token endpoint."""

    model_config = SettingsConfigDict(env_prefix="ASTRA_PC_", extra="ignore")

    sas_token_url: str = "https://planetarycomputer.microsoft.com/api/sas/v1/token"  # noqa: S105
    sas_hosts: CommaList = Field(
        default=["blob.core.windows.net"],
        description="Host suffixes whose hrefs get a SAS token.",
    )
    subscription_key: SecretStr | None = None
    token_refresh_margin_seconds: float = Field(default=300.0, ge=0)
    request_timeout_seconds: float = Field(default=10.0, gt=0)


class ConvertSettings(BaseSettings):
    """Conversions to COG and renderings to PNG/JPEG."""

    model_config = SettingsConfigDict(env_prefix="ASTRA_CONVERT_", extra="ignore")

    cog_profile: str = Field(default="deflate", description="rio-cogeo profile of converted COGs.")
    render_max_size: int = Field(
        default=2048, ge=0, description="Longest side of PNG/JPEG renderings; 0 = full size."
    )
    rescale_percentiles: tuple[float, float] = (2.0, 98.0)
    remote_size_timeout_seconds: float = Field(default=5.0, gt=0)

    @field_validator("rescale_percentiles")
    @classmethod
    def _ordered(cls, value: tuple[float, float]) -> tuple[float, float]:
        low, high = value
        if not 0 <= low < high <= 100:
            raise ValueError("ASTRA_CONVERT_RESCALE_PERCENTILES must be 0 <= low < high <= 100")
        return value


class AssetSettings(BaseModel):
    """Everything the asset resolver and download route need, read together."""

    signing: SigningSettings = Field(default_factory=SigningSettings)
    storage: StorageSettings = Field(default_factory=StorageSettings)
    s3: S3Settings = Field(default_factory=S3Settings)
    planetary_computer: PlanetaryComputerSettings = Field(default_factory=PlanetaryComputerSettings)
    convert: ConvertSettings = Field(default_factory=ConvertSettings)

    def storage_root(self) -> Path:
        """The local storage root, made absolute."""
        root = self.storage.root
        if root is None:
            from astra_stac.cli import default_data_dir

            root = default_data_dir() / "storage"
        return root.expanduser().resolve()

    def cache_dir(self) -> Path:
        """Where conversions are kept."""
        if self.storage.cache_dir is not None:
            return self.storage.cache_dir.expanduser().resolve()
        return self.storage_root() / ".astra" / "cache"
