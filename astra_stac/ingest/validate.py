"""Checks an item or collection must pass before it is stored.

Validation is local: stac-pydantic's models plus what pgstac needs to index an
item (a geometry, a datetime or a start/end range). `stac_extensions` schemas
are never fetched.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

from pydantic import ValidationError
from stac_pydantic import Collection, Item

_PRE_1_0 = re.compile(r"^(0\.|1\.0\.0-)")
_MAX_REPORTED_ERRORS = 3


class InvalidRecord(Exception):
    """A record that cannot be stored; the message says why."""


def _describe(exc: ValidationError) -> str:
    parts = []
    for error in exc.errors()[:_MAX_REPORTED_ERRORS]:
        where = ".".join(str(p) for p in error.get("loc", ()))
        parts.append(f"{where}: {error.get('msg', 'invalid')}" if where else error["msg"])
    more = len(exc.errors()) - _MAX_REPORTED_ERRORS
    return "; ".join(parts) + (f" (and {more} more)" if more > 0 else "")


def _for_models(document: dict[str, Any]) -> dict[str, Any]:
    """Before STAC 1.0.0, `stac_extensions` held short names (`eo`) rather than
    schema URLs; stac-pydantic models 1.x, so such names are left out of its check."""
    if not _PRE_1_0.match(str(document.get("stac_version") or "")):
        return document
    extensions = document.get("stac_extensions")
    if not isinstance(extensions, list):
        return document
    urls = [e for e in extensions if isinstance(e, str) and "://" in e]
    return {**document, "stac_extensions": urls}


def _timestamp(properties: dict[str, Any], name: str) -> datetime | None:
    value = properties.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidRecord(f"{name} {value!r} is not an RFC 3339 string")
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise InvalidRecord(f"{name} {value!r} is not an RFC 3339 timestamp") from None
    if parsed.tzinfo is None:
        raise InvalidRecord(f"{name} {value!r} has no time zone (RFC 3339 needs one)")
    return parsed


def item_time_range(item: dict[str, Any]) -> tuple[str, str]:
    """The `datetime` and `end_datetime` pgstac indexes the item by (as pgstac
    reads them: start/end when both are set, else `datetime` twice)."""
    properties = item.get("properties")
    if not isinstance(properties, dict):
        raise InvalidRecord("item has no properties object")
    start = _timestamp(properties, "start_datetime")
    end = _timestamp(properties, "end_datetime")
    moment = _timestamp(properties, "datetime")
    if start is not None and end is not None:
        if start > end:
            raise InvalidRecord("start_datetime is after end_datetime")
        return properties["start_datetime"], properties["end_datetime"]
    if moment is None:
        raise InvalidRecord("item has no datetime (nor both start_datetime and end_datetime)")
    return properties["datetime"], properties["datetime"]


def check_item(item: Any) -> None:
    """Raise `InvalidRecord` unless `item` is a STAC item pgstac can store."""
    if not isinstance(item, dict) or item.get("type") != "Feature":
        kind = item.get("type") if isinstance(item, dict) else type(item).__name__
        raise InvalidRecord(f"not a STAC item (type {kind!r}, expected 'Feature')")
    if not isinstance(item.get("id"), str) or not item["id"]:
        raise InvalidRecord("item has no id")
    if not isinstance(item.get("geometry"), dict):
        raise InvalidRecord("item has no geometry (pgstac needs one to index the item)")
    item_time_range(item)
    try:
        Item.model_validate(_for_models(item))
    except ValidationError as exc:
        raise InvalidRecord(f"not a valid STAC item: {_describe(exc)}") from None


def check_collection(collection: Any) -> None:
    """Raise `InvalidRecord` unless `collection` is a valid STAC collection."""
    if not isinstance(collection, dict) or collection.get("type") != "Collection":
        raise InvalidRecord("not a STAC collection")
    if not isinstance(collection.get("id"), str) or not collection["id"]:
        raise InvalidRecord("collection has no id")
    try:
        Collection.model_validate(_for_models(collection))
    except ValidationError as exc:
        raise InvalidRecord(f"not a valid STAC collection: {_describe(exc)}") from None
