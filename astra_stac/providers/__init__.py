"""The provider registry: data that maps a provider prefix to its organisation,
its local pgstac collections and its band tables.

The default registry ships as `default.json` beside this module; operators point
`ASTRA_PROVIDERS_FILE` at their own copy to change it. Local collection ids are
the provider's `collection_prefix` followed by the upstream collection id
(`es-sentinel-2-l2a`, `pc-sentinel-2-l2a`, `cdse-sentinel-2-l2a`), so the same
upstream collection from two providers never merges.
"""

from __future__ import annotations

import json
from functools import cached_property
from importlib import resources
from pathlib import Path

from pydantic import BaseModel, Field, model_validator

DEFAULT_REGISTRY = "default.json"


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
