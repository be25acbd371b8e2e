"""A scene as the tiler reads it: the catalogue's item, its bands, and the GDAL
path of each band file — looked up by provider-scoped id, never given by the client.

`SceneLookup` is what the tiler's `path_dependency` calls. It keeps what it
looked up for a few seconds (`ASTRA_TILER_SCENE_CACHE_SECONDS`), keyed by the
scene and by what the current key may see, so a burst of tile requests for one
map view costs one catalogue query.
"""

from __future__ import annotations

import ast
import re
import time
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pystac
from rio_tiler.errors import InvalidExpression
from rio_tiler.expression import validate_expression

from astra_stac.assets.bands import ResolvedBand, map_bands, scene_bands
from astra_stac.assets.settings import S3Settings
from astra_stac.assets.signing import HrefSigner
from astra_stac.auth.keys import current_key
from astra_stac.catalog import Catalog
from astra_stac.errors import AssetUnavailable, InvalidParameter, SceneNotFound
from astra_stac.ids import parse_scene_id
from astra_stac.providers import ProviderRegistry
from astra_stac.tiler.sources import GdalSource, gdal_source

TRUE_COLOUR = ("red", "green", "blue")
MAX_MEMOS = 256
# A name in an expression: not preceded by a word character or a dot (`1e5`, `x.y`).
_NAME = re.compile(r"(?<![\w.])[A-Za-z_]\w*")


@dataclass(frozen=True)
class Layer:
    """Which assets to read, in order, and the expression over them (`b1`, `b2`, …)."""

    assets: list[str]
    expression: str | None = None


@dataclass(frozen=True)
class Scene:
    """One scene, ready for rio-tiler.

    `stac_item` holds only the band assets; `sources` is the GDAL path of each,
    derived from the catalogue's hrefs. Bands whose file cannot be read here
    are listed in `unavailable` with the reason, and fail only when asked for.
    """

    scene_id: str
    item: dict[str, Any]
    stac_item: pystac.Item
    registry: ProviderRegistry
    bands: tuple[ResolvedBand, ...]
    sources: Mapping[str, GdalSource]
    unavailable: Mapping[str, AssetUnavailable]
    max_image_size: int
    # Memos filled by requests for this scene (it is shared while cached).
    layers: dict[tuple[tuple[str, ...], str | None], Layer] = field(default_factory=dict)
    reader_state: dict[tuple[Any, ...], dict[str, Any]] = field(default_factory=dict)

    @property
    def asset_keys(self) -> list[str]:
        return [band.asset_key for band in self.bands]

    def assets_for(self, names: Sequence[str] | None) -> list[str]:
        """Asset keys of the named bands (native or common names); all bands for None."""
        if not names:
            return self.asset_keys
        bands = map_bands(self.item, self.registry, list(names))
        return list(dict.fromkeys(band.asset_key for band in bands))

    def default_layer(self) -> Layer:
        """True colour when the scene has red, green and blue; else its first band."""
        have = {band.common_name for band in self.bands}
        if all(name in have for name in TRUE_COLOUR):
            return Layer(self.assets_for(list(TRUE_COLOUR)))
        if not self.bands:
            raise InvalidParameter(f"Scene {self.scene_id} has no band the tiler can read.")
        return Layer([self.bands[0].asset_key])

    def layer(self, bands: Sequence[str] | None, expression: str | None) -> Layer:
        """The assets and rio-tiler expression for a request's `bands`/`expression`."""
        key = (tuple(bands or ()), expression)
        found = self.layers.get(key)
        if found is None:
            found = self._layer(bands, expression)
            if len(self.layers) < MAX_MEMOS:
                self.layers[key] = found
        return found

    def _layer(self, bands: Sequence[str] | None, expression: str | None) -> Layer:
        if expression is not None and not expression.strip():
            expression = None
        if expression is not None:
            if bands:
                raise InvalidParameter("Pass either bands or expression, not both.")
            return self._expression_layer(expression)
        if bands:
            return Layer(self.assets_for(bands))
        return self.default_layer()

    def _expression_layer(self, expression: str) -> Layer:
        validate_expression(expression)
        names: list[str] = []
        for block in expression.split(";"):
            if not block.strip():
                continue
            tree = ast.parse(block.strip(), mode="eval")
            called = {id(node.func) for node in ast.walk(tree) if isinstance(node, ast.Call)}
            for node in ast.walk(tree):
                if isinstance(node, ast.Name) and id(node) not in called:
                    names.append(node.id)
        if not names:
            raise InvalidExpression(f"Expression {expression!r} names no band.")
        assets: list[str] = []
        variables: dict[str, str] = {}
        for name in dict.fromkeys(names):
            found = map_bands(self.item, self.registry, [name])
            keys = list(dict.fromkeys(band.asset_key for band in found))
            if len(keys) != 1:
                natives = ", ".join(band.native_name for band in found)
                raise InvalidParameter(
                    f"{name!r} names several bands of this scene ({natives}); "
                    "use a native band name in expressions."
                )
            if keys[0] not in assets:
                assets.append(keys[0])
            variables[name] = f"b{assets.index(keys[0]) + 1}"
        translated = _NAME.sub(lambda m: variables.get(m.group(), m.group()), expression)
        return Layer(assets, translated)


def split_names(values: Sequence[str] | None) -> list[str] | None:
    """`["red,green", "blue"]` → `["red", "green", "blue"]`; nothing → None."""
    if not values:
        return None
    names = [part.strip() for value in values for part in value.split(",") if part.strip()]
    return names or None


class SceneLookup:
    """Finds scenes in the catalogue and prepares them for reading, with a short cache."""

    def __init__(
        self,
        storage_root: Path,
        s3: S3Settings,
        signers: list[HrefSigner],
        ttl: float,
        size: int,
        max_image_size: int,
    ) -> None:
        self.storage_root = storage_root
        self.s3 = s3
        self.signers = signers
        self.ttl = ttl
        self.size = size
        self.max_image_size = max_image_size
        self._cache: OrderedDict[tuple[Any, ...], tuple[float, Scene]] = OrderedDict()

    @staticmethod
    def _cache_key(scene_id: str) -> tuple[Any, ...]:
        key = current_key.get()
        if key is None or not key.restricted:
            return (scene_id,)
        return (scene_id, key.providers, key.collections)

    async def scene(self, catalog: Catalog, scene_id: str) -> Scene:
        """The scene behind `scene_id`, or `InvalidIdFormat` / `SceneNotFound`."""
        parsed = parse_scene_id(scene_id)
        cache_key = self._cache_key(str(parsed))
        now = time.monotonic()
        cached = self._cache.get(cache_key)
        if cached is not None and cached[0] > now:
            self._cache.move_to_end(cache_key)
            return cached[1]
        item = await catalog.find_scene(parsed)
        if item is None:
            raise SceneNotFound(f"No scene with id {scene_id!r} exists.")
        scene = await self._prepare(str(parsed), item, catalog.registry)
        if self.ttl > 0:
            self._cache[cache_key] = (now + self.ttl, scene)
            while len(self._cache) > self.size:
                self._cache.popitem(last=False)
        return scene

    async def _prepare(
        self, scene_id: str, item: dict[str, Any], registry: ProviderRegistry
    ) -> Scene:
        bands = tuple(scene_bands(item, registry))
        sources: dict[str, GdalSource] = {}
        unavailable: dict[str, AssetUnavailable] = {}
        provider = registry.provider_of_collection(str(item.get("collection", "")))
        for band in bands:
            try:
                sources[band.asset_key] = await gdal_source(
                    band.href, self.storage_root, self.s3, self.signers, provider
                )
            except AssetUnavailable as exc:
                unavailable[band.asset_key] = exc.with_traceback(None)
        keys = {band.asset_key for band in bands}
        # Only the band assets, without links: rio-tiler resolves nothing else.
        reader_item = {
            **item,
            "links": [],
            "assets": {k: v for k, v in (item.get("assets") or {}).items() if k in keys},
        }
        return Scene(
            scene_id=scene_id,
            item=item,
            stac_item=pystac.Item.from_dict(reader_item),
            registry=registry,
            bands=bands,
            sources=sources,
            unavailable=unavailable,
            max_image_size=self.max_image_size,
        )
