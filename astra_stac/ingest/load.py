"""Upserting collections and items into pgstac with pypgstac's loader."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from pypgstac.db import PgstacDB
from pypgstac.load import Loader, Methods


def upsert(
    dsn: str, collections: Iterable[dict[str, Any]], items: Iterable[dict[str, Any]]
) -> None:
    """Upsert collections, then items, each in pypgstac's own transactions."""
    with PgstacDB(dsn=dsn) as db:
        loader = Loader(db=db)
        collections = list(collections)
        if collections:
            loader.load_collections(iter(collections), insert_mode=Methods.upsert)
        items = list(items)
        if items:
            loader.load_items(iter(items), insert_mode=Methods.upsert)
