"""Response classes that skip FastAPI's re-encoding of large STAC documents."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.responses import Response


class JsonResponse(Response):
    """A JSON document, serialised once with orjson."""

    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


class GeoJSONResponse(JsonResponse):
    """A STAC item or item collection, serialised once with orjson."""

    media_type = "application/geo+json"
