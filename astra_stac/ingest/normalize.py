"""What ingest adds to an upstream item before it is stored.

The item keeps everything it came with; it gains `astra:provider` and
`astra:collection`, its `collection` becomes the provider's local collection id
(see `astra_stac.providers`), and every band asset gets its band's `name` and
common name when the item did not say them — in the item's own convention:
`eo:bands` (`common_name`) for STAC 1.0 items, `bands` (`eo:common_name`) for
STAC 1.1 ones. Fields the item already has are never changed.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Sequence
from typing import Any

from astra_stac.providers import BandSpec, Provider, ProviderRegistry
from astra_stac.stac.scoping import ASTRA_COLLECTION, ASTRA_PROVIDER

STAC_DEFAULT_LICENSE = "proprietary"
# `B4`, `B04`, `B8A`, `OLI_B4`, `SR_B4.TIF`, `B04_10m`, `TIRS_B10` → the band number.
_NATIVE = re.compile(r"(?:^|[_\-.])B0*(\d{1,2})(A?)(?=$|[_\-.])", re.IGNORECASE)
_RASTER_TYPES = ("image/tiff", "image/jp2", "image/vnd.stac.geotiff")
_RASTER_SUFFIXES = (".tif", ".tiff", ".jp2")
_NOT_BAND_ROLES = frozenset({"thumbnail", "overview", "visual", "metadata", "browse"})


def local_collection_id(provider: Provider, collection_id: str) -> str:
    """The local id for a collection id an item names: upstream ids get the
    provider's prefix; ids that already are the provider's local ids (items
    read back from another astra-stac) stay as they are."""
    if collection_id in provider.collection_ids:
        return collection_id
    return provider.local_collection_id(collection_id)


def normalize_item(item: dict[str, Any], provider: Provider) -> dict[str, Any]:
    """A copy of `item` placed in the provider's local collection, with `astra:*` fields."""
    result = copy.deepcopy(item)
    upstream = item.get("collection") or "items"
    local = provider.local_collection_id(upstream)
    result["collection"] = local
    properties = result.setdefault("properties", {})
    properties[ASTRA_PROVIDER] = provider.organisation
    properties[ASTRA_COLLECTION] = local
    return result


def normalize_collection(collection: dict[str, Any], provider: Provider) -> dict[str, Any]:
    """A copy of an upstream collection under the provider's local id."""
    result = copy.deepcopy(collection)
    result["id"] = local_collection_id(provider, collection["id"])
    result.setdefault("links", [])
    return result


def template_collection(local_id: str, provider: Provider, upstream_id: str) -> dict[str, Any]:
    """A minimal valid collection for items whose upstream collection was not supplied."""
    return {
        "type": "Collection",
        "stac_version": "1.0.0",
        "id": local_id,
        "title": f"{upstream_id} ({provider.title or provider.prefix})",
        "description": f"{upstream_id} scenes from {provider.title or provider.prefix}.",
        "license": STAC_DEFAULT_LICENSE,
        "extent": {
            "spatial": {"bbox": [[-180.0, -90.0, 180.0, 90.0]]},
            "temporal": {"interval": [[None, None]]},
        },
        "links": [],
        "providers": [{"name": provider.organisation, "roles": ["producer"]}],
    }


# --- ingest: in-place normalisation of a freshly parsed item -----------------------------


def prepare_item(
    item: dict[str, Any],
    provider: Provider,
    local_collection: str,
    registry: ProviderRegistry,
) -> dict[str, Any]:
    """Normalise a freshly parsed item in place (ingest owns it, so no copy).

    The id loses the provider's scene-id prefix when it has one (items read from
    another astra-stac); the collection becomes `local_collection`; `astra:*`
    properties and missing band names are added.
    """
    scoped = f"{provider.prefix}:"
    if isinstance(item.get("id"), str) and item["id"].startswith(scoped):
        item["id"] = item["id"][len(scoped) :]
    item["collection"] = local_collection
    properties = item.setdefault("properties", {})
    properties[ASTRA_PROVIDER] = provider.organisation
    properties[ASTRA_COLLECTION] = local_collection
    table = band_table(item, registry, local_collection)
    if table:
        add_band_names(item, table)
    return item


def _platform_key(value: object) -> str | None:
    if not isinstance(value, str) or not value.strip():
        return None
    return re.sub(r"[\s_]+", "-", value.strip().lower())


def band_table(
    item: dict[str, Any], registry: ProviderRegistry, collection_id: str | None = None
) -> list[BandSpec] | None:
    """The band table of the item's sensor: by platform first (a Landsat
    collection mixes TM, ETM+ and OLI), else the collection's `band_table`."""
    properties = item.get("properties") or {}
    for raw in (properties.get("platform"), properties.get("eo:platform")):
        key = _platform_key(raw)
        if key and key in registry.platform_band_tables:
            return registry.band_tables[registry.platform_band_tables[key]]
    spec = registry.collection_spec(collection_id or item.get("collection") or "")
    if spec is not None and spec.band_table:
        return registry.band_tables[spec.band_table]
    return None


def native_band_name(name: str) -> str | None:
    """`OLI_B4`, `SR_B4.TIF`, `B04_10m`, `b4` → `B04`; `B8A` stays `B8A`; else None."""
    match = _NATIVE.search(name)
    if match is None:
        return None
    number, suffix = match.groups()
    return f"B{int(number)}{suffix.upper()}" if suffix else f"B{int(number):02d}"


class _BandLookup:
    """A band table indexed by native name and by unambiguous common name or alias."""

    def __init__(self, table: Sequence[BandSpec]) -> None:
        self.by_native = {spec.name.upper(): spec for spec in table}
        counts: dict[str, int] = {}
        for spec in table:
            for name in {spec.common_name, *spec.aliases} - {None}:
                assert name is not None
                counts[name.lower()] = counts.get(name.lower(), 0) + 1
        self._keys: dict[str, BandSpec | None] = {}
        self.by_common: dict[str, BandSpec] = {}
        for spec in table:
            for name in {spec.common_name, *spec.aliases} - {None}:
                assert name is not None
                if counts[name.lower()] == 1:
                    self.by_common[name.lower()] = spec

    def for_key(self, key: str) -> BandSpec | None:
        """The band an asset key names (`B04`, `SR_B4.TIF`, `red`), remembered per key."""
        if key not in self._keys:
            self._keys[key] = self.find(key)
        return self._keys[key]

    def find(self, *names: object) -> BandSpec | None:
        """The band any of `names` denotes: a native name first, then a common name."""
        for name in names:
            if isinstance(name, str):
                native = native_band_name(name)
                if native and native in self.by_native:
                    return self.by_native[native]
        for name in names:
            if isinstance(name, str) and name.lower() in self.by_common:
                return self.by_common[name.lower()]
        return None


_LOOKUPS: dict[int, tuple[Sequence[BandSpec], _BandLookup]] = {}


def _lookup(table: Sequence[BandSpec]) -> _BandLookup:
    """The lookup of a registry band table, built once per table."""
    cached = _LOOKUPS.get(id(table))
    if cached is None or cached[0] is not table:
        cached = _LOOKUPS[id(table)] = (table, _BandLookup(table))
    return cached[1]


def _uses_bands_array(item: dict[str, Any]) -> bool:
    """STAC 1.1 and later describe bands in `bands`; earlier versions in `eo:bands`."""
    match = re.match(r"(\d+)\.(\d+)", str(item.get("stac_version") or ""))
    return match is not None and (int(match[1]), int(match[2])) >= (1, 1)


def _is_band_file(asset: dict[str, Any]) -> bool:
    roles = asset.get("roles")
    if isinstance(roles, list) and (_NOT_BAND_ROLES.intersection(roles) or "data" not in roles):
        return False
    media = str(asset.get("type") or "").lower()
    if media:
        return media.startswith(_RASTER_TYPES)
    href = str(asset.get("href") or "").lower().split("?", 1)[0]
    return href.endswith(_RASTER_SUFFIXES)


def _fill(band: dict[str, Any], spec: BandSpec | None, common_key: str) -> None:
    if spec is None:
        return
    if not band.get("name"):
        band["name"] = spec.name
    has_common = band.get("common_name") or band.get("eo:common_name")
    if not has_common and spec.common_name:
        band[common_key] = spec.common_name


def add_band_names(item: dict[str, Any], table: Sequence[BandSpec]) -> None:
    """Give every band asset its band's name and common name, in place.

    Bands the item declares (`eo:bands`, `bands`, or 1.0-beta indices into the
    item's `eo:bands`) get what they lack from the table; a data raster with no
    band metadata whose key names one band (`B04`, `SR_B4.TIF`, `red`) gets a
    one-band list in the item's convention. Nothing that exists is changed.
    """
    lookup = _lookup(table)
    array = _uses_bands_array(item)
    properties = item.get("properties") or {}
    for band in properties.get("eo:bands") or ():
        if isinstance(band, dict) and not (band.get("name") and band.get("common_name")):
            _fill(band, lookup.find(band.get("name"), band.get("common_name")), "common_name")
    assets = item.get("assets")
    if not isinstance(assets, dict):
        return
    for key, asset in assets.items():
        if not isinstance(asset, dict):
            continue
        declared = False
        for field, common_key in (("eo:bands", "common_name"), ("bands", "eo:common_name")):
            bands = asset.get(field)
            if not isinstance(bands, list) or not bands:
                continue
            declared = True
            single = len(bands) == 1
            for band in bands:
                if not isinstance(band, dict):
                    continue  # 1.0-beta index into properties["eo:bands"], filled above
                common = band.get("common_name") or band.get("eo:common_name")
                if common and band.get("name"):
                    continue  # nothing to add
                spec = lookup.find(band.get("name"), common)
                if spec is None and single and not band.get("name"):
                    spec = lookup.for_key(key)
                _fill(band, spec, common_key)
        if declared:
            continue
        spec = lookup.for_key(key)
        if spec is None or not _is_band_file(asset):
            continue
        if array:
            entry = {"name": spec.name, "eo:common_name": spec.common_name}
            asset["bands"] = [{k: v for k, v in entry.items() if v}]
        else:
            entry = {"name": spec.name, "common_name": spec.common_name}
            asset["eo:bands"] = [{k: v for k, v in entry.items() if v}]
