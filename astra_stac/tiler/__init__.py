"""TiTiler for catalogue scenes: tiles, TileJSON, previews, bbox images, point
values, info and statistics under `/api/v1/scenes/{scene_id}/…`, reading only
the files the catalogue's item names (no route takes a `url`).

- `routes`: the titiler.core factory, configured and mounted;
- `dependencies`: the injected path/layer dependencies (scene id, band names);
- `scene`: looking scenes up and turning band names into assets/expressions;
- `reader`: the rio-tiler readers; `sources`: href → GDAL path;
- `signing`: signed, expiring tile URLs for browser maps;
- `settings`: `ASTRA_TILER_…`.
"""

from astra_stac.tiler.routes import register_tiler
from astra_stac.tiler.settings import TilerSettings
from astra_stac.tiler.signing import TileUrlSigning

__all__ = ["TileUrlSigning", "TilerSettings", "register_tiler"]
