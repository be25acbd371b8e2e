"""Band mapping: which asset of a scene holds which spectral band.

`map_bands` reads the item's own band metadata first — STAC 1.0 `eo:bands`
(objects, or the legacy indices into `properties["eo:bands"]`), STAC 1.1
`bands` with `eo:common_name` — and uses the provider band table of the
registry (by platform, else by the collection's `band_table`) to give every
band its canonical native name (`OLI_B4`, `B4`, `SR_B4` and Earth Search's
`red` all become Landsat/Sentinel-2 `B04`) and to fill what the item leaves out.

Requested names are native (`B04`, `b4`) or common (`red`, `nir`), matched
case-insensitively. A native-name match wins over a common-name match; a
common name shared by several bands (`rededge`) returns all of them. When one
band sits in several assets (CDSE `B01_20m`/`B01_60m`, Earth Search `red` and
`red-jp2`) a COG is preferred, then the finest resolution.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from functools import lru_cache
from typing import Any

import orjson

from astra_stac.errors import UnknownBand
from astra_stac.providers import BandSpec, ProviderRegistry

COG_MEDIA_TYPE = "image/tiff; application=geotiff; profile=cloud-optimized"
_RASTER_MEDIA = ("image/tiff", "image/jp2", "image/vnd.stac.geotiff", "application/x-hdf")
_NOT_BAND_ROLES = {"thumbnail", "overview", "visual", "metadata"}
_NATIVE = re.compile(r"^B(?:AND)?0*(\d+)([A-Z]?)$")
# Nearest-wavelength matching only among table bands this close (micrometres).
_WAVELENGTH_TOLERANCE = 0.03
# Acronyms kept upper-case in generated titles.
_ACRONYM_PREFIXES = ("nir", "swir", "lwir", "pan")


@dataclass(frozen=True)
class ResolvedBand:
    """One spectral band of a scene and the asset that holds it.

    `native_name` is the sensor's band name as the provider band table spells
    it (`B04`), falling back to the item's own name when no table applies.
    `names` holds every lower-case name the band answers to.
    """

    native_name: str
    common_name: str | None
    asset_key: str
    asset: dict[str, Any]
    center_wavelength: float | None
    gsd: float | None
    names: frozenset[str] = field(default_factory=frozenset)
    table_index: int | None = None

    @property
    def href(self) -> str:
        return str(self.asset.get("href", ""))

    @property
    def media_type(self) -> str | None:
        value = self.asset.get("type")
        return str(value) if value else None

    @property
    def title(self) -> str:
        """`Red (B04) - 10m`, the way the spec titles a band."""
        label = self.native_name
        if self.common_name:
            common = self.common_name
            pretty = (
                common.upper()
                if common.lower().startswith(_ACRONYM_PREFIXES)
                else common[:1].upper() + common[1:]
            )
            label = f"{pretty} ({self.native_name})"
        if self.gsd:
            return f"{label} - {self.gsd:g}m"
        return label

    def eo_band(self) -> dict[str, Any]:
        """The band as an `eo:bands` entry."""
        band: dict[str, Any] = {"name": self.native_name}
        if self.common_name:
            band["common_name"] = self.common_name
        if self.center_wavelength is not None:
            band["center_wavelength"] = self.center_wavelength
        return band


@lru_cache(maxsize=256)
def is_cog_media_type(media_type: str | None) -> bool:
    """Whether a media type declares a Cloud-Optimized GeoTIFF."""
    if not media_type:
        return False
    parts = {p.strip().lower().replace(" ", "") for p in media_type.split(";")}
    return bool(parts & {"profile=cloud-optimized", "cloud-optimized=true"})


@lru_cache(maxsize=4096)  # called for every asset and table band on every resolve
def normalize_native(name: str) -> str:
    """A band name in comparable form: `OLI_B4`, `SR_B4`, `b4`, `Band4` → `B04`."""
    upper = name.strip().upper()
    tail = upper.rsplit("_", 1)[-1] if "_" in upper else upper
    match = _NATIVE.match(tail)
    if match is None:
        return upper
    number, suffix = match.groups()
    return f"B{int(number):02d}{suffix}" if not suffix else f"B{int(number)}{suffix}"


def _platform_key(value: object) -> str | None:
    if not isinstance(value, str) or not value.strip():
        return None
    return re.sub(r"[\s_]+", "-", value.strip().lower())


def band_table_for(
    item: dict[str, Any], registry: ProviderRegistry
) -> tuple[str | None, list[BandSpec]]:
    """The registry band table that describes this item's sensor, if any.

    The platform decides first (a Landsat collection holds TM, ETM+ and OLI
    scenes); the collection's `band_table` is the fallback.
    """
    props = item.get("properties") or {}
    for raw in (props.get("platform"), props.get("eo:platform")):
        platform = _platform_key(raw)
        if platform and platform in registry.platform_band_tables:
            name = registry.platform_band_tables[platform]
            return name, registry.band_tables[name]
    for collection in (item.get("collection"), props.get("astra:collection")):
        if not isinstance(collection, str):
            continue
        spec = registry.collection_spec(collection)
        if spec is not None and spec.band_table:
            return spec.band_table, registry.band_tables[spec.band_table]
    return None, []


@dataclass
class _RawBand:
    name: str | None
    common_name: str | None
    center_wavelength: float | None
    gsd: float | None


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def _raw_band(entry: dict[str, Any]) -> _RawBand:
    common = entry.get("common_name") or entry.get("eo:common_name")
    wavelength = entry.get("center_wavelength", entry.get("eo:center_wavelength"))
    return _RawBand(
        name=str(entry["name"]) if entry.get("name") else None,
        common_name=str(common) if common else None,
        center_wavelength=_number(wavelength),
        gsd=_number(entry.get("gsd")),
    )


def _asset_bands(item: dict[str, Any], asset: dict[str, Any]) -> list[_RawBand] | None:
    """The bands an asset declares, or None when it declares none."""
    declared = asset.get("bands")
    if not isinstance(declared, list) or not declared:
        declared = asset.get("eo:bands")
    if not isinstance(declared, list) or not declared:
        return None
    item_bands = (item.get("properties") or {}).get("eo:bands")
    if not isinstance(item_bands, list):
        item_bands = []
    bands = []
    for entry in declared:
        # STAC 0.9/1.0-beta: indices into the item's eo:bands.
        if isinstance(entry, int) and not isinstance(entry, bool):
            if 0 <= entry < len(item_bands) and isinstance(item_bands[entry], dict):
                bands.append(_raw_band(item_bands[entry]))
            else:
                bands.append(_RawBand(None, None, None, None))
        elif isinstance(entry, dict):
            bands.append(_raw_band(entry))
        else:
            bands.append(_RawBand(None, None, None, None))
    return bands


def _is_raster(asset: dict[str, Any]) -> bool:
    media = str(asset.get("type") or "").lower()
    if media and not media.startswith(_RASTER_MEDIA):
        return False
    roles = asset.get("roles")
    return not (isinstance(roles, list) and _NOT_BAND_ROLES.intersection(roles))


@lru_cache(maxsize=4096)
def _key_stem(asset_key: str) -> str:
    """An asset key without file extension or resolution suffix: `B04_10m` → `B04`."""
    stem = re.sub(r"\.(tif|tiff|jp2)$", "", asset_key, flags=re.IGNORECASE)
    stem = re.sub(r"-jp2$", "", stem, flags=re.IGNORECASE)
    return re.sub(r"_\d+m$", "", stem)


_NAME_INDEXES: dict[int, tuple[Sequence[BandSpec], dict[str, tuple[int, BandSpec]]]] = {}


def _names_of(table: Sequence[BandSpec]) -> dict[str, tuple[int, BandSpec]]:
    """A band table by normalised name (the first band of each name), built once per
    registry table."""
    cached = _NAME_INDEXES.get(id(table))
    if cached is None or cached[0] is not table:
        index: dict[str, tuple[int, BandSpec]] = {}
        for position, spec in enumerate(table):
            index.setdefault(normalize_native(spec.name), (position, spec))
        if len(_NAME_INDEXES) >= 64:
            _NAME_INDEXES.clear()
        cached = _NAME_INDEXES[id(table)] = (table, index)
    return cached[1]


_TableEntryKey = tuple[int, str | None, str | None, float | None, str]
_TABLE_ENTRIES: dict[_TableEntryKey, tuple[Sequence[BandSpec], tuple[int, BandSpec] | None]] = {}


def _table_entry(
    raw: _RawBand, asset_key: str, table: Sequence[BandSpec]
) -> tuple[int, BandSpec] | None:
    """The table band a declared band is, by name, then common name, then wavelength.

    Remembered per table and declaration: a provider's items repeat the same few
    asset layouts, and the wavelength search is most of a scene's mapping time.
    """
    key = (id(table), raw.name, raw.common_name, raw.center_wavelength, asset_key)
    cached = _TABLE_ENTRIES.get(key)
    if cached is not None and cached[0] is table:
        return cached[1]
    found = _find_table_entry(raw, asset_key, table)
    if len(_TABLE_ENTRIES) >= 8192:
        _TABLE_ENTRIES.clear()
    _TABLE_ENTRIES[key] = (table, found)
    return found


def _find_table_entry(
    raw: _RawBand, asset_key: str, table: Sequence[BandSpec]
) -> tuple[int, BandSpec] | None:
    names = [raw.name] if raw.name else []
    names.append(_key_stem(asset_key))
    by_name = _names_of(table)
    for name in names:
        found = by_name.get(normalize_native(name))
        if found is not None:
            return found
    candidates = list(enumerate(table))
    if raw.common_name:
        common = raw.common_name.lower()
        candidates = [(i, s) for i, s in candidates if (s.common_name or "").lower() == common]
        if not candidates:
            candidates = [(i, s) for i, s in enumerate(table) if common in _lower(s.aliases)]
        if len(candidates) == 1:
            return candidates[0]
        if not candidates:
            candidates = list(enumerate(table))
    measured = raw.center_wavelength
    if measured is None:
        return None
    distances = [
        (abs(s.center_wavelength - measured), i, s)
        for i, s in candidates
        if s.center_wavelength is not None
    ]
    if distances:
        distance, index, spec = min(distances, key=lambda entry: (entry[0], entry[1]))
        if distance <= _WAVELENGTH_TOLERANCE:
            return index, spec
    return None


def _lower(values: Iterable[str | None]) -> set[str]:
    return {v.lower() for v in values if v}


def _asset_gsd(asset: dict[str, Any]) -> float | None:
    gsd = _number(asset.get("gsd"))
    if gsd is not None:
        return gsd
    raster = asset.get("raster:bands")
    if isinstance(raster, list) and raster and isinstance(raster[0], dict):
        return _number(raster[0].get("spatial_resolution"))
    return None


def _resolve(
    item: dict[str, Any],
    asset_key: str,
    asset: dict[str, Any],
    raw: _RawBand,
    table: Sequence[BandSpec],
) -> ResolvedBand | None:
    found = _table_entry(raw, asset_key, table) if table else None
    index, spec = found if found else (None, None)
    if spec is not None:
        native = spec.name
    elif raw.name:
        native = raw.name
    else:
        return None
    props = item.get("properties") or {}
    gsd = (
        _asset_gsd(asset)
        or raw.gsd
        or (spec.gsd if spec else None)
        or _number(props.get("gsd"))
        or _number(props.get("eo:gsd"))
    )
    common = raw.common_name or (spec.common_name if spec else None)
    return ResolvedBand(
        native_name=native,
        common_name=common,
        asset_key=asset_key,
        asset=asset,
        center_wavelength=raw.center_wavelength
        if raw.center_wavelength is not None
        else (spec.center_wavelength if spec else None),
        gsd=gsd,
        names=_band_names(native, raw, spec),
        table_index=index,
    )


_BandNamesKey = tuple[str, str | None, str | None, int]
_BAND_NAMES: dict[_BandNamesKey, tuple[BandSpec | None, frozenset[str]]] = {}


def _band_names(native: str, raw: _RawBand, spec: BandSpec | None) -> frozenset[str]:
    """Every lower-case name a band answers to (remembered, like table entries)."""
    key = (native, raw.name, raw.common_name, id(spec))
    cached = _BAND_NAMES.get(key)
    if cached is not None and cached[0] is spec:
        return cached[1]
    names = _lower([native, raw.name, raw.common_name])
    names.add(normalize_native(native).lower())
    if spec is not None:
        names |= _lower([spec.name, spec.common_name, *spec.aliases])
    if len(_BAND_NAMES) >= 8192:
        _BAND_NAMES.clear()
    _BAND_NAMES[key] = (spec, frozenset(names))
    return _BAND_NAMES[key][1]


def _candidates(item: dict[str, Any], table: Sequence[BandSpec]) -> list[ResolvedBand]:
    """Every single-band raster asset of the item, resolved to a band."""
    found: list[ResolvedBand] = []
    assets = item.get("assets") or {}
    for key, asset in assets.items():
        if not isinstance(asset, dict) or not asset.get("href") or not _is_raster(asset):
            continue
        declared = _asset_bands(item, asset)
        if declared is None:
            # No band metadata: an asset keyed by a table band (`B04`, `red`) still is one.
            if not table:
                continue
            by_name = _RawBand(None, None, None, None)
            by_common = _RawBand(None, _key_stem(key), None, None)
            if _table_entry(by_name, key, table) is not None:
                declared = [by_name]
            elif _table_entry(by_common, key, table) is not None:
                declared = [by_common]
            else:
                continue
        if len(declared) != 1:
            continue
        band = _resolve(item, key, asset, declared[0], table)
        if band is not None:
            found.append(band)
    if not found and not table:
        # Own data without band metadata: each raster data asset is a band named by its key.
        for key, asset in assets.items():
            roles = asset.get("roles") if isinstance(asset, dict) else None
            if (
                isinstance(asset, dict)
                and asset.get("href")
                and asset.get("type")
                and _is_raster(asset)
                and (not isinstance(roles, list) or "data" in roles)
            ):
                band = _resolve(item, key, asset, _RawBand(key, None, None, None), table)
                if band is not None:
                    found.append(band)
    return found


def _preference(band: ResolvedBand, order: int) -> tuple[bool, float, bool, int]:
    return (
        not is_cog_media_type(band.media_type),
        band.gsd if band.gsd is not None else math.inf,
        band.asset_key.lower().endswith("-jp2"),
        order,
    )


# Band mapping reads only these parts of an item, its *layout*; keep them in step with
# the functions above. A provider's scenes share a few layouts (the same asset keys,
# media types and band metadata; hrefs, sizes, projections and statistics differ), so
# bands are mapped once per layout and each scene gets them bound to its own assets.
_LAYOUT_PROPERTIES = ("platform", "eo:platform", "astra:collection", "gsd", "eo:gsd")
_LAYOUT_BAND_FIELDS = (
    "name",
    "common_name",
    "eo:common_name",
    "center_wavelength",
    "eo:center_wavelength",
    "gsd",
)
_LAYOUTS_SIZE = 1024
_layouts: OrderedDict[bytes, tuple[ProviderRegistry, list[ResolvedBand]]] = OrderedDict()


def _bands_layout(entries: object) -> object:
    if not isinstance(entries, list):
        return None
    return [
        [entry.get(f) for f in _LAYOUT_BAND_FIELDS] if isinstance(entry, dict) else entry
        for entry in entries
    ]


def _asset_layout(asset: object) -> object:
    if not isinstance(asset, dict):
        return None
    raster = asset.get("raster:bands")
    first = raster[0] if isinstance(raster, list) and raster else None
    return (
        bool(asset.get("href")),
        asset.get("type"),
        asset.get("roles"),
        _bands_layout(asset.get("bands")),
        _bands_layout(asset.get("eo:bands")),
        asset.get("gsd"),
        first.get("spatial_resolution") if isinstance(first, dict) else None,
    )


def _layout_key(item: dict[str, Any]) -> bytes | None:
    """A digest of what band mapping reads from the item (None: not digestible)."""
    props = item.get("properties")
    props = props if isinstance(props, dict) else {}
    assets = item.get("assets")
    layout: list[Any] = [
        item.get("collection"),
        [props.get(name) for name in _LAYOUT_PROPERTIES],
        _bands_layout(props.get("eo:bands")),
    ]
    if isinstance(assets, dict):
        layout.extend((key, _asset_layout(asset)) for key, asset in assets.items())
    try:
        return hashlib.blake2b(orjson.dumps(layout), digest_size=16).digest()
    except orjson.JSONEncodeError:  # e.g. an integer past 64 bits
        return None


def _unbound_bands(item: dict[str, Any], registry: ProviderRegistry) -> list[ResolvedBand]:
    """The scene's bands, their `asset` not necessarily this item's: bind before use.

    Bands of a remembered layout carry an empty `asset`, never another scene's.
    """
    key = _layout_key(item)
    if key is None:
        return _map_scene_bands(item, registry)
    cached = _layouts.get(key)
    if cached is not None and cached[0] is registry:
        _layouts.move_to_end(key)
        return cached[1]
    bands = _map_scene_bands(item, registry)
    _layouts[key] = (registry, [replace(band, asset={}) for band in bands])
    if len(_layouts) > _LAYOUTS_SIZE:
        _layouts.popitem(last=False)
    return bands


def _bound(bands: Iterable[ResolvedBand], item: dict[str, Any]) -> list[ResolvedBand]:
    assets = item["assets"]
    return [replace(band, asset=assets[band.asset_key]) for band in bands]


def scene_bands(item: dict[str, Any], registry: ProviderRegistry) -> list[ResolvedBand]:
    """Each band of the scene once, in band-table order, from its best asset."""
    return _bound(_unbound_bands(item, registry), item)


def _map_scene_bands(item: dict[str, Any], registry: ProviderRegistry) -> list[ResolvedBand]:
    _, table = band_table_for(item, registry)
    best: dict[str, tuple[tuple[bool, float, bool, int], ResolvedBand]] = {}
    for order, band in enumerate(_candidates(item, table)):
        key = normalize_native(band.native_name)
        rank = _preference(band, order)
        if key not in best or rank < best[key][0]:
            best[key] = (rank, band)
    bands = [band for _, band in best.values()]
    position = {id(b): i for i, b in enumerate(bands)}
    return sorted(
        bands,
        key=lambda b: (
            b.table_index if b.table_index is not None else len(table),
            position[id(b)],
        ),
    )


def _describe(bands: Sequence[ResolvedBand]) -> str:
    if not bands:
        return "none"
    return ", ".join(
        f"{b.native_name} ({b.common_name})" if b.common_name else b.native_name for b in bands
    )


def map_bands(
    item: dict[str, Any], registry: ProviderRegistry, requested: list[str] | None
) -> list[ResolvedBand]:
    """The scene's bands named in `requested` (native or common names), in request order.

    `None` (or an empty list) means every band asset of the scene. Names are
    case-insensitive and a band asked for twice (`red,B04`) appears once. An
    unknown name raises `UnknownBand` listing the bands the scene has.
    """
    bands = _unbound_bands(item, registry)
    tokens = [t.strip() for t in (requested or []) if t and t.strip()]
    if not tokens:
        return _bound(bands, item)
    chosen: dict[str, ResolvedBand] = {}
    for token in tokens:
        wanted = token.lower()
        native = normalize_native(token)
        matches = [b for b in bands if normalize_native(b.native_name) == native]
        if not matches:
            matches = [b for b in bands if wanted in b.names]
        if not matches:
            scene = item.get("id", "this scene")
            raise UnknownBand(
                f"Band {token!r} is not in scene {scene}. Its bands are: {_describe(bands)}."
            )
        for band in matches:
            chosen.setdefault(band.native_name, band)
    return _bound(chosen.values(), item)
