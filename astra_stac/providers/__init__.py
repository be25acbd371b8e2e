"""The provider registry: data that maps a provider prefix to its organisation,
its local pgstac collections and its band tables.

The default registry ships as `default.json` beside this module; operators point
`ASTRA_PROVIDERS_FILE` at their own copy to change it. Local collection ids are
the provider's `collection_prefix` followed by the upstream collection id
(`es-sentinel-2-l2a`, `pc-sentinel-2-l2a`, `cdse-sentinel-2-l2a`), so the same
upstream collection from two providers never merges.

`asset_hosts` is also the provider's allow-list: the asset resolver, the
converter and the tiler read remote hrefs only when their scheme, host, port
and path lie under one of these URL prefixes (`s3://bucket/`,
`https://host/path/`). Files inside the storage root are always allowed;
`ASTRA_ASSET_HOSTS` adds prefixes without editing the registry.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cached_property
from importlib import resources
from pathlib import Path
from urllib.parse import unquote, urlsplit

from pydantic import BaseModel, Field, field_validator, model_validator

DEFAULT_REGISTRY = "default.json"
REMOTE_SCHEMES = frozenset({"http", "https", "s3"})
_DEFAULT_PORTS = {"http": 80, "https": 443}


@dataclass(frozen=True)
class Location:
    """Scheme, host (the bucket for `s3`), port and unquoted path of a remote URL."""

    scheme: str
    host: str
    port: int | None
    path: str

    def under(self, prefix: Location) -> bool:
        """Whether this URL lies under the allow-list entry `prefix` (path-segment aware)."""
        if (self.scheme, self.host, self.port) != (prefix.scheme, prefix.host, prefix.port):
            return False
        base = prefix.path.rstrip("/")
        return self.path == base or self.path.startswith(f"{base}/")


def remote_location(url: str) -> Location | None:
    """Where a remote URL points, or None when it is not one a server should fetch:
    another scheme, user info (`https://good@evil/`), control characters, spaces,
    backslashes or non-ASCII, a bad port, or `.`/`..` path segments (which HTTP
    clients and S3 servers collapse into another path or bucket)."""
    if not url.isascii() or any(c <= " " or c in "\\\x7f" for c in url):
        return None
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in REMOTE_SCHEMES or "@" in parts.netloc:
        return None
    try:
        port = parts.port
    except ValueError:
        return None
    host = (parts.hostname or "") if scheme != "s3" else parts.netloc.lower()
    path = unquote(parts.path) or "/"
    segments = path.split("/")
    if not host or any(s in (".", "..") for s in segments) or "\x00" in path or "\\" in path:
        return None
    return Location(scheme, host, port or _DEFAULT_PORTS.get(scheme), path)


class BandSpec(BaseModel):
    """One spectral band of a sensor: its native name and what it is called commonly."""

    name: str
    common_name: str | None = None
    aliases: list[str] = Field(default_factory=list)
    center_wavelength: float | None = None
    gsd: float | None = None


class CollectionSpec(BaseModel):
    """A local pgstac collection owned by a provider."""

    id: str
    upstream: str
    band_table: str | None = None


class Provider(BaseModel):
    """A data source, addressed by the prefix of its scene ids."""

    prefix: str = ""
    organisation: str
    title: str = ""
    collection_prefix: str = ""
    collections: list[CollectionSpec] = Field(default_factory=list)
    api_url: str | None = None
    asset_hosts: list[str] = Field(default_factory=list)
    catch_all: bool = False

    @field_validator("asset_hosts")
    @classmethod
    def _urls(cls, value: list[str]) -> list[str]:
        for prefix in value:
            if remote_location(prefix) is None:
                raise ValueError(
                    f"asset_hosts entry {prefix!r} is not an http(s):// or s3:// URL prefix"
                )
        return value

    @cached_property
    def _allowed(self) -> list[Location]:
        return [loc for loc in map(remote_location, self.asset_hosts) if loc is not None]

    def allows(self, href: str) -> bool:
        """Whether a remote href lies under one of this provider's `asset_hosts`."""
        location = remote_location(href)
        return location is not None and any(location.under(p) for p in self._allowed)

    @property
    def collection_ids(self) -> list[str]:
        """Local collection ids in precedence order."""
        return [c.id for c in self.collections]

    def local_collection_id(self, upstream_id: str) -> str:
        """The local id an upstream collection gets in this provider."""
        for spec in self.collections:
            if spec.upstream == upstream_id:
                return spec.id
        return f"{self.collection_prefix}{upstream_id}"


class ProviderRegistry(BaseModel):
    """Every provider, the band tables and which sensor uses which table."""

    providers: dict[str, Provider]
    band_tables: dict[str, list[BandSpec]] = Field(default_factory=dict)
    platform_band_tables: dict[str, str] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _consistent(self) -> ProviderRegistry:
        catch_alls = [p for p, spec in self.providers.items() if spec.catch_all]
        if len(catch_alls) > 1:
            raise ValueError(f"only one provider may be catch_all, found {catch_alls}")
        owners: dict[str, str] = {}
        for prefix, provider in self.providers.items():
            provider.prefix = prefix
            for spec in provider.collections:
                if spec.id in owners:
                    raise ValueError(
                        f"collection {spec.id!r} is claimed by {owners[spec.id]!r} and {prefix!r}"
                    )
                owners[spec.id] = prefix
                if spec.band_table and spec.band_table not in self.band_tables:
                    raise ValueError(f"{spec.id}: unknown band table {spec.band_table!r}")
        for table in self.platform_band_tables.values():
            if table not in self.band_tables:
                raise ValueError(f"platform_band_tables names unknown table {table!r}")
        return self

    @cached_property
    def _collection_owner(self) -> dict[str, Provider]:
        return {c.id: p for p in self.providers.values() for c in p.collections}

    @cached_property
    def _prefixed(self) -> list[Provider]:
        """Providers with a collection prefix, longest prefix first."""
        found = [p for p in self.providers.values() if p.collection_prefix]
        return sorted(found, key=lambda p: len(p.collection_prefix), reverse=True)

    @cached_property
    def catch_all(self) -> Provider | None:
        """The provider that owns collections no other provider claims."""
        return next((p for p in self.providers.values() if p.catch_all), None)

    def get(self, prefix: str) -> Provider | None:
        """The provider for a scene-id prefix, or None."""
        return self.providers.get(prefix)

    def provider_of_collection(self, collection_id: str) -> Provider | None:
        """Which provider owns a local collection: listed, by prefix, or the catch-all."""
        owner = self._collection_owner.get(collection_id)
        if owner is not None:
            return owner
        for provider in self._prefixed:
            if collection_id.startswith(provider.collection_prefix):
                return provider
        return self.catch_all

    def with_asset_hosts(self, extra: dict[str, list[str]]) -> ProviderRegistry:
        """A copy whose providers also allow the `extra` URL prefixes (`ASTRA_ASSET_HOSTS`)."""
        if not extra:
            return self
        unknown = sorted(set(extra) - set(self.providers))
        if unknown:
            raise ValueError(f"ASTRA_ASSET_HOSTS names unknown providers: {', '.join(unknown)}")
        data = self.model_dump()
        for prefix, hosts in extra.items():
            data["providers"][prefix]["asset_hosts"] += hosts
        return ProviderRegistry.model_validate(data)

    def collection_spec(self, collection_id: str) -> CollectionSpec | None:
        """The registry entry of a local collection, when it is listed."""
        provider = self._collection_owner.get(collection_id)
        if provider is None:
            return None
        return next(c for c in provider.collections if c.id == collection_id)


def load_registry(path: Path | None = None) -> ProviderRegistry:
    """Read the registry from `path`, or the one shipped with the package."""
    if path is None:
        text = resources.files(__package__).joinpath(DEFAULT_REGISTRY).read_text("utf-8")
    else:
        text = Path(path).read_text("utf-8")
    return ProviderRegistry.model_validate(json.loads(text))
