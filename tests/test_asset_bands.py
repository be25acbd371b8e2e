"""Band mapping on every real provider item in tests/data/real."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from astra_stac.assets.bands import (
    _bound,
    _layouts,
    _map_scene_bands,
    band_table_for,
    is_cog_media_type,
    map_bands,
)
from astra_stac.errors import UnknownBand
from astra_stac.ingest.normalize import normalize_item
from astra_stac.providers import load_registry

REAL = Path(__file__).parent / "data" / "real"
REGISTRY = load_registry()
# Fixture directory → provider prefix in the registry.
PROVIDER_OF_DIR = {
    "cdse": "sentinel-2",
    "earth-search": "earth-search",
    "planetary-computer": "planetary-computer",
    "usgs-landsatlook": "landsat",
}
SENTINEL_2 = {
    "blue": "B02",
    "green": "B03",
    "red": "B04",
    "nir": "B08",
    "nir08": "B8A",
    "swir16": "B11",
    "swir22": "B12",
}
LANDSAT_OLI = {
    "blue": "B02",
    "green": "B03",
    "red": "B04",
    "nir": "B05",
    "nir08": "B05",
    "swir16": "B06",
    "swir22": "B07",
}
LANDSAT_TM_ETM = {
    "blue": "B01",
    "green": "B02",
    "red": "B03",
    "nir": "B04",
    "nir08": "B04",
    "swir16": "B05",
    "swir22": "B07",
}


def _real_items() -> list[Path]:
    return sorted(
        p
        for p in REAL.rglob("*.json")
        if "collections" not in p.parts and "search-responses" not in p.parts
    )


def _sensor(item: dict) -> dict[str, str]:
    name, _ = band_table_for(item, REGISTRY)
    return {"sentinel-2": SENTINEL_2, "landsat-oli": LANDSAT_OLI}.get(name or "", LANDSAT_TM_ETM)


def _load(path: Path, normalized: bool) -> dict:
    item = json.loads(path.read_text())
    if normalized:
        provider = REGISTRY.providers[PROVIDER_OF_DIR[path.relative_to(REAL).parts[0]]]
        item = normalize_item(item, provider)
    return item


ITEMS = _real_items()


def test_every_real_item_is_covered():
    assert len(ITEMS) == 44
    tables = {band_table_for(json.loads(p.read_text()), REGISTRY)[0] for p in ITEMS}
    assert tables == {"sentinel-2", "landsat-oli", "landsat-etm", "landsat-tm"}


@pytest.mark.parametrize("normalized", [False, True], ids=["as-published", "ingested"])
@pytest.mark.parametrize("path", ITEMS, ids=lambda p: str(p.relative_to(REAL)))
def test_red_nir_and_every_common_name_map_to_the_sensor_band(path, normalized):
    item = _load(path, normalized)
    expected = _sensor(item)
    red, nir = map_bands(item, REGISTRY, ["red", "nir"])
    assert (red.native_name, nir.native_name) == (expected["red"], expected["nir"])
    assert red.common_name == "red"
    for common, native in expected.items():
        (band,) = map_bands(item, REGISTRY, [common])
        assert band.native_name == native, common
        # The asset really is that band, never a -jp2 twin when a COG exists.
        assert not band.asset_key.endswith("-jp2")
        assert band.href == item["assets"][band.asset_key]["href"]


@pytest.mark.parametrize("path", ITEMS, ids=lambda p: str(p.relative_to(REAL)))
def test_all_bands_are_single_band_assets_keyed_by_native_name(path):
    item = _load(path, normalized=True)
    bands = map_bands(item, REGISTRY, None)
    names = [b.native_name for b in bands]
    assert len(names) == len(set(names))
    assert set(_sensor(item).values()) <= set(names)
    for band in bands:
        asset = item["assets"][band.asset_key]
        declared = asset.get("eo:bands") or asset.get("bands") or [None]
        assert len(declared) == 1  # no `visual`/`TCI`/`preview`
        assert band.gsd is not None


def test_sentinel_2_nir08_is_b8a_and_distinct_from_nir():
    item = _load(REAL / "planetary-computer/sentinel-2-l2a" / _first("planetary-computer"), True)
    nir, nir08 = map_bands(item, REGISTRY, ["nir", "nir08"])
    assert (nir.native_name, nir08.native_name) == ("B08", "B8A")
    assert (nir.asset_key, nir08.asset_key) == ("B08", "B8A")


def _first(provider_dir: str) -> str:
    return sorted((REAL / provider_dir / "sentinel-2-l2a").glob("*.json"))[0].name


def test_cdse_takes_the_finest_resolution_of_each_band():
    path = next((REAL / "cdse" / "sentinel-2-l2a").glob("*.json"))
    item = _load(path, True)
    by_name = {b.native_name: b for b in map_bands(item, REGISTRY, None)}
    assert by_name["B01"].asset_key == "B01_20m"  # not B01_60m
    assert by_name["B04"].asset_key == "B04_10m"
    assert by_name["B8A"].asset_key == "B8A_20m"
    assert by_name["B09"].asset_key == "B09_60m"
    assert (by_name["B04"].gsd, by_name["B11"].gsd) == (10, 20)


def test_earth_search_prefers_the_cog_over_its_jp2_twin():
    item = _load(REAL / "earth-search/sentinel-2-l2a/S2B_13SDV_20200501_1_L2A.json", True)
    bands = map_bands(item, REGISTRY, None)
    assert all(is_cog_media_type(b.media_type) for b in bands)
    assert {b.asset_key for b in bands} >= {"red", "nir", "nir08", "rededge1"}
    # eo:bands there are named `red`, `rededge1`…: the band table gives native names.
    assert {b.native_name for b in bands} >= {"B04", "B05", "B06", "B07", "B8A"}


def test_landsat_7_and_5_use_their_own_band_numbers():
    tm = _load(
        REAL
        / "usgs-landsatlook/landsat-c2l2-sr"
        / "LT05_L2SP_010067_19860424_20200918_02_T2_SR.json",
        True,
    )
    etm = _load(
        REAL
        / "usgs-landsatlook/landsat-c2l2-sr"
        / "LE07_L2SP_044033_20210329_20210424_02_T1_SR.json",
        True,
    )
    for item in (tm, etm):
        assert [b.native_name for b in map_bands(item, REGISTRY, ["red", "nir", "swir22"])] == [
            "B03",
            "B04",
            "B07",
        ]


def test_legacy_indexed_eo_bands_resolve():
    path = REAL / "usgs-landsatlook/landsat-c2l2-sr/legacy-stac-1.0.0-beta.2"
    item = _load(next(path.glob("*.json")), True)
    red, nir = map_bands(item, REGISTRY, ["red", "nir"])
    assert (red.asset_key, nir.asset_key) == ("SR_B4.TIF", "SR_B5.TIF")
    assert red.center_wavelength == 0.65


def test_names_are_case_insensitive_native_or_common_and_collapse():
    item = _load(REAL / "earth-search/landsat-c2-l2/LC08_L2SP_033032_20231008_02_T1.json", True)
    bands = map_bands(item, REGISTRY, ["RED", "b04", "B4", "Nir", "B05", " swir16 ", ""])
    assert [b.native_name for b in bands] == ["B04", "B05", "B06"]


def test_a_common_name_shared_by_several_bands_returns_them_all():
    item = _load(REAL / "earth-search/sentinel-2-c1-l2a/S2A_T13TDE_20240412T175055_L2A.json", True)
    assert [b.native_name for b in map_bands(item, REGISTRY, ["rededge"])] == ["B05", "B06", "B07"]


def test_unknown_band_lists_the_scene_bands():
    item = _load(REAL / "earth-search/landsat-c2-l2/LC08_L2SP_033032_20231008_02_T1.json", True)
    with pytest.raises(UnknownBand) as raised:
        map_bands(item, REGISTRY, ["red", "B8A"])
    assert raised.value.code == "UNKNOWN_BAND"
    assert raised.value.status_code == 400
    assert "'B8A'" in raised.value.description
    assert "B04 (red)" in raised.value.description
    assert "B05 (nir08)" in raised.value.description


def test_band_table_fills_in_when_the_item_has_no_band_metadata():
    item = _load(REAL / "earth-search/sentinel-2-l2a/S2A_13TDE_20231008_0_L2A.json", True)
    stripped = copy.deepcopy(item)
    for asset in stripped["assets"].values():
        asset.pop("eo:bands", None)
        asset.pop("gsd", None)
        asset.pop("raster:bands", None)
    red, nir, swir16 = map_bands(stripped, REGISTRY, ["red", "nir", "swir16"])
    assert (red.asset_key, nir.asset_key, swir16.asset_key) == ("red", "nir", "swir16")
    assert (red.native_name, red.center_wavelength, red.gsd) == ("B04", 0.665, 10)
    assert swir16.gsd == 20


def test_stac_1_1_bands_with_eo_prefixed_fields():
    item = {
        "id": "x",
        "collection": "my-data",
        "properties": {"platform": "sentinel-2c"},
        "assets": {
            "B04_10m": {
                "href": "file:///data/B04.jp2",
                "type": "image/jp2",
                "bands": [{"name": "B04", "eo:common_name": "red", "eo:center_wavelength": 0.66}],
                "gsd": 10,
            }
        },
    }
    (red,) = map_bands(item, REGISTRY, ["red"])
    assert (red.native_name, red.common_name, red.center_wavelength) == ("B04", "red", 0.66)


def test_own_data_without_band_metadata_is_keyed_by_asset():
    item = {
        "id": "x",
        "collection": "my-data",
        "properties": {},
        "assets": {
            "elevation": {"href": "dem.tif", "type": "image/tiff", "roles": ["data"]},
            "thumbnail": {"href": "t.png", "type": "image/png", "roles": ["thumbnail"]},
        },
    }
    assert [b.native_name for b in map_bands(item, REGISTRY, None)] == ["elevation"]
    assert map_bands(item, REGISTRY, ["ELEVATION"])[0].asset_key == "elevation"


def test_titles_follow_the_spec():
    item = _load(REAL / "earth-search/sentinel-2-l2a/S2A_13TDE_20231008_0_L2A.json", True)
    red, nir = map_bands(item, REGISTRY, ["red", "nir"])
    assert (red.title, nir.title) == ("Red (B04) - 10m", "NIR (B08) - 10m")
    assert nir.eo_band() == {"name": "B08", "common_name": "nir", "center_wavelength": 0.842}


def test_a_changed_item_is_mapped_again_not_answered_from_memory():
    item = _load(REAL / "planetary-computer/sentinel-2-l2a" / _first("planetary-computer"), True)
    (red,) = map_bands(item, REGISTRY, ["red"])
    assert map_bands(copy.deepcopy(item), REGISTRY, ["red"]) == [red]  # same content
    changed = copy.deepcopy(item)
    changed["assets"]["B04"]["href"] = "https://sentinel2l2a01.blob.core.windows.net/moved.tif"
    (moved,) = map_bands(changed, REGISTRY, ["red"])
    assert moved.href.endswith("/moved.tif") and red.href != moved.href
    del changed["assets"]["B04"]
    with pytest.raises(UnknownBand):
        map_bands(changed, REGISTRY, ["B04"])


def _another_scene(item: dict) -> dict:
    """The same layout, another scene: other hrefs, sizes, projection and statistics."""
    other = copy.deepcopy(item)
    other["id"] = f"{item['id']}-other"
    for key, asset in other["assets"].items():
        asset["href"] = f"https://elsewhere.example.org/{key}.tif"
        asset["file:size"] = 12345
        asset["proj:transform"] = [20.0, 0.0, 1.0, 0.0, -20.0, 2.0]
        for band in asset.get("raster:bands") or []:
            if isinstance(band, dict):
                band["statistics"] = {"minimum": 1, "maximum": 2}
    return other


@pytest.mark.parametrize("path", ITEMS, ids=lambda p: str(p.relative_to(REAL)))
def test_scenes_of_one_layout_map_alike_each_with_its_own_assets(path):
    item = _load(path, normalized=True)
    first = map_bands(item, REGISTRY, None)
    other = _another_scene(item)
    layouts = dict(_layouts)
    remembered = map_bands(other, REGISTRY, None)
    assert dict(_layouts) == layouts  # answered from the layout mapped for `item`
    assert remembered == _bound(_map_scene_bands(other, REGISTRY), other)  # mapped afresh
    assert [b.native_name for b in remembered] == [b.native_name for b in first]
    for mine, theirs in zip(first, remembered, strict=True):
        assert mine.asset is item["assets"][mine.asset_key]
        assert theirs.asset is other["assets"][theirs.asset_key]
        assert theirs.href.startswith("https://elsewhere.example.org/")
        assert (mine.gsd, mine.names, mine.title) == (theirs.gsd, theirs.names, theirs.title)
    (red,) = map_bands(other, REGISTRY, ["red"])
    assert red.asset is other["assets"][red.asset_key]
    assert map_bands(item, REGISTRY, ["red"])[0].asset is item["assets"][red.asset_key]


def test_a_changed_layout_is_mapped_again():
    item = _load(REAL / "earth-search/sentinel-2-l2a/S2A_13TDE_20231008_0_L2A.json", True)
    (red,) = map_bands(item, REGISTRY, ["red"])
    changed = _another_scene(item)
    changed["assets"]["red"]["type"] = "image/tiff; application=geotiff"  # not a COG now
    (still_red,) = map_bands(changed, REGISTRY, ["red"])
    assert still_red.media_type == "image/tiff; application=geotiff"
    changed["assets"]["red"]["roles"] = ["overview"]  # no longer a band asset
    (other_red,) = map_bands(changed, REGISTRY, ["red"])
    assert (red.asset_key, other_red.asset_key) == ("red", "red-jp2")
