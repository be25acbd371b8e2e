"""The dependencies injected into titiler's `MultiBaseTilerFactory`.

- `scene_path` is the factory's `path_dependency`: the scene id from the path,
  looked up in the catalogue. There is no `url` parameter anywhere.
- `SceneLayerParams` (`layer_dependency`) turns `bands` (native or common
  names) or `expression` (over band names) into the asset keys and the
  `b1`, `b2`… expression rio-tiler expects.
- `SceneAssetsParams` (`assets_dependency`, for `/info` and
  `/asset_statistics`) does the same for a plain band list.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, cast

from fastapi import Depends, Path, Query, Request
from titiler.core.dependencies import DefaultDependency, HistogramParams

from astra_stac.errors import InvalidParameter
from astra_stac.tiler.scene import Scene, SceneLookup, split_names

SCENE_ID_DESCRIPTION = "Provider-scoped scene id, e.g. earth-search:S2A_13TDE_20231008_0_L2A"
BANDS_DESCRIPTION = (
    "Bands to read, by native (B04) or common (red) name, comma-separated or repeated. "
    "Default: red,green,blue when the scene has them."
)
EXPRESSION_DESCRIPTION = (
    "Band math over band names, e.g. (nir-red)/(nir+red); blocks separated by ';'. "
    "Use either bands or expression."
)


async def scene_path(
    request: Request,
    scene_id: Annotated[str, Path(description=SCENE_ID_DESCRIPTION)],
) -> Scene:
    """The scene named in the path, as the catalogue resolves it for this request's key."""
    lookup: SceneLookup = request.app.state.scene_lookup
    return await lookup.scene(request.app.state.catalog, scene_id)


BandsQuery = Annotated[
    list[str] | None,
    Query(
        description=BANDS_DESCRIPTION,
        openapi_examples={
            "true colour": {"value": ["red,green,blue"]},
            "native": {"value": ["B08,B04,B03"]},
        },
    ),
]
ExpressionQuery = Annotated[
    str | None,
    Query(
        description=EXPRESSION_DESCRIPTION,
        openapi_examples={"NDVI": {"value": "(nir-red)/(nir+red)"}},
    ),
]


@dataclass
class LayerParams(DefaultDependency):
    """What rio-tiler's MultiBaseReader methods take: asset keys and an expression."""

    assets: list[str]
    expression: str | None = None


# The two below are async functions, not DefaultDependency classes: FastAPI runs
# class (sync) dependencies in its thread pool, a hop per dependency per request.
async def scene_layer(
    scene: Annotated[Scene, Depends(scene_path)],
    bands: BandsQuery = None,
    expression: ExpressionQuery = None,
) -> LayerParams:
    """`bands` or `expression`, as rio-tiler's `assets` and `expression`."""
    layer = scene.layer(split_names(bands), expression)
    return LayerParams(layer.assets, layer.expression)


async def scene_assets(
    scene: Annotated[Scene, Depends(scene_path)],
    bands: Annotated[
        list[str] | None,
        Query(description="Bands, by native or common name; default every band."),
    ] = None,
) -> LayerParams:
    """`bands` as rio-tiler's `assets` (every band when absent)."""
    return LayerParams(scene.assets_for(split_names(bands)))


# The factory types these as DefaultDependency classes; any callable returning one works.
SceneLayerParams = cast("type[DefaultDependency]", scene_layer)
SceneAssetsParams = cast("type[DefaultDependency]", scene_assets)


MAX_HISTOGRAM_BINS = 1024


class BoundedHistogramParams(HistogramParams):
    """titiler's histogram options, with at most `MAX_HISTOGRAM_BINS` bins."""

    def __post_init__(self) -> None:
        super().__post_init__()
        bins: object = self.bins
        count = bins if isinstance(bins, int) else len(bins) if isinstance(bins, list) else 0
        if count > MAX_HISTOGRAM_BINS:
            raise InvalidParameter(f"histogram_bins allows at most {MAX_HISTOGRAM_BINS} bins.")


async def signed_url_params(
    expires: Annotated[
        str | None,
        Query(description="Signed URLs (from the TileJSON): expiry, Unix seconds."),
    ] = None,
    sig: Annotated[
        str | None,
        Query(description="Signed URLs: the signature. Replaces the API key."),
    ] = None,
) -> None:
    """Documents the signature parameters; `ApiKeyMiddleware` checks them."""
