"""Reading STAC records from what `astra-stac ingest` is given.

A source is an item JSON file, an ItemCollection/FeatureCollection, a JSON
array, NDJSON (one item or collection per line), a directory of these (walked
recursively), a static catalog (`catalog.json`/`collection.json`, followed
through its `child` and `item` links), or the URL of a STAC API (searched with
pystac-client, every page followed) or of a static catalog.

Sources yield `Record`s: an item, a collection, or an error with the place it
happened (`file.ndjson:12`, `file.json#features[3]`, `<api> page 2 item 5`), so
one bad record never stops the rest.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import quote, urljoin, urlparse

import httpx
import orjson

NDJSON_SUFFIXES = (".ndjson", ".jsonl", ".geojsonl", ".geojsons")
JSON_SUFFIXES = (".json", ".geojson", *NDJSON_SUFFIXES)
_FOLLOWED_RELS = ("child", "item")
_ITEM_SEARCH = "/item-search"
RecordKind = Literal["item", "collection", "error", "total"]


@dataclass(slots=True)
class Record:
    """One thing read from a source."""

    kind: RecordKind
    location: str
    data: Any = None
    error: str | None = None
    # The API or catalog URL it was read from: evidence of its provider.
    origin: str | None = None
    # The upstream collection its place in a static catalog implies.
    parent_collection: str | None = None
    count: int = 0


@dataclass
class ApiQuery:
    """What to ask a STAC API for (the `--collections`, `--bbox`, … options)."""

    collections: list[str] | None = None
    bbox: list[float] | None = None
    datetime: str | None = None
    filter: str | dict[str, Any] | None = None  # CQL2 text, or CQL2-JSON (text or object)
    max_items: int | None = None
    page_size: int = 100

    def filter_json(self) -> dict[str, Any] | None:
        """The filter as CQL2-JSON, which every STAC API takes in a POST search."""
        if self.filter is None or isinstance(self.filter, dict):
            return self.filter
        text = self.filter.strip()
        try:
            if text.startswith("{"):
                parsed = orjson.loads(text)
                if not isinstance(parsed, dict):
                    raise ValueError("not a JSON object")
                return parsed
            from cql2 import Expr

            return dict(Expr(text).to_json())
        except Exception as exc:  # cql2 raises plain Exceptions for syntax errors
            raise SourceError(f"--filter is not valid CQL2: {str(exc).strip()}") from None

    @property
    def given(self) -> bool:
        return any(
            v is not None
            for v in (self.collections, self.bbox, self.datetime, self.filter, self.max_items)
        )


@dataclass
class SourceOptions:
    """How sources are read."""

    query: ApiQuery = field(default_factory=ApiQuery)
    headers: dict[str, str] = field(default_factory=dict)
    timeout: float = 60.0


class SourceError(Exception):
    """A source that cannot be read at all."""


def _is_url(value: str) -> bool:
    return urlparse(value).scheme in ("http", "https")


def _json_error(exc: Exception) -> str:
    return f"invalid JSON: {exc}"


class SourceReader:
    """Turns source arguments into a stream of records."""

    def __init__(self, options: SourceOptions | None = None) -> None:
        self.options = options or SourceOptions()
        self._visited: set[str] = set()
        self._http: httpx.Client | None = None

    def close(self) -> None:
        if self._http is not None:
            self._http.close()

    def __enter__(self) -> SourceReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def http(self) -> httpx.Client:
        if self._http is None:
            self._http = httpx.Client(
                headers=self.options.headers,
                timeout=self.options.timeout,
                follow_redirects=True,
            )
        return self._http

    def read(self, sources: list[str]) -> Iterator[Record]:
        """Every record of every source, in order."""
        if self.options.query.given:
            for source in sources:
                if not _is_url(source):
                    raise SourceError(
                        "--collections, --bbox, --datetime, --filter and --max-items apply to "
                        f"STAC API URLs only, not to {source}"
                    )
            self.options.query.filter_json()  # a bad filter is a usage error: before anything
        for source in sources:
            if _is_url(source):
                yield from self._url(source)
            else:
                yield from self._path(Path(source))

    # --- local files -----------------------------------------------------------------

    def _path(self, path: Path) -> Iterator[Record]:
        if path.is_dir():
            yield from self._directory(path)
        elif path.is_file():
            yield from self._file(path)
        else:
            yield Record("error", str(path), error="no such file or directory")

    def _directory(self, directory: Path) -> Iterator[Record]:
        try:
            entries = sorted(os.scandir(directory), key=lambda e: e.name)
        except OSError as exc:
            yield Record("error", str(directory), error=f"cannot list directory: {exc}")
            return
        files = [e for e in entries if e.is_file() and not e.name.startswith(".")]
        folders = [e for e in entries if e.is_dir() and not e.name.startswith(".")]
        # Files first: a catalog.json claims the items it links before the walk reaches them.
        for entry in files:
            if entry.name.lower().endswith(JSON_SUFFIXES):
                yield from self._file(Path(entry.path))
        for entry in folders:
            yield from self._directory(Path(entry.path))

    def _claim(self, key: str) -> bool:
        """Mark a file or URL as read; False when it already was."""
        if key in self._visited:
            return False
        self._visited.add(key)
        return True

    def _file(self, path: Path, parent_collection: str | None = None) -> Iterator[Record]:
        if not self._claim(str(path.resolve())):
            return
        location = str(path)
        if path.name.lower().endswith(NDJSON_SUFFIXES):
            yield from self._ndjson(path)
            return
        try:
            raw = path.read_bytes()
        except OSError as exc:
            yield Record("error", location, error=f"cannot read file: {exc}")
            return
        try:
            document = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            if _looks_like_ndjson(raw):
                yield from self._ndjson(path)
            else:
                yield Record("error", location, error=_json_error(exc))
            return
        yield from self._document(document, location, path, parent_collection, None)

    def _ndjson(self, path: Path) -> Iterator[Record]:
        try:
            handle = path.open("rb")
        except OSError as exc:
            yield Record("error", str(path), error=f"cannot read file: {exc}")
            return
        with handle:
            for number, line in enumerate(handle, 1):
                if line.isspace():
                    continue
                location = f"{path}:{number}"
                try:
                    document = orjson.loads(line)
                except orjson.JSONDecodeError as exc:
                    yield Record("error", location, error=_json_error(exc))
                    continue
                yield from self._document(document, location, path, None, None)

    # --- documents -------------------------------------------------------------------

    def _document(
        self,
        document: Any,
        location: str,
        base: Path | str,
        parent_collection: str | None,
        origin: str | None,
    ) -> Iterator[Record]:
        """Records of one parsed JSON document, following static-catalog links."""
        if isinstance(document, list):
            for index, entry in enumerate(document):
                yield from self._document(
                    entry, f"{location}[{index}]", base, parent_collection, origin
                )
            return
        kind = document.get("type") if isinstance(document, dict) else None
        if kind == "Feature":
            yield Record("item", location, document, None, origin, parent_collection)
        elif kind == "FeatureCollection":
            features = document.get("features")
            if not isinstance(features, list):
                yield Record("error", location, error="FeatureCollection without a features list")
                return
            for index, feature in enumerate(features):
                where = f"{location}#features[{index}]"
                if isinstance(feature, dict) and feature.get("type") == "Feature":
                    yield Record("item", where, feature, None, origin, parent_collection)
                else:
                    yield Record("error", where, error="not a STAC item (type is not 'Feature')")
        elif kind in ("Collection", "Catalog"):
            if kind == "Collection":
                yield Record("collection", location, document, None, origin)
                if isinstance(document.get("id"), str):
                    parent_collection = document["id"]
            yield from self._follow(document, location, base, parent_collection, origin)
        else:
            what = f"type {kind!r}" if kind else "no STAC type"
            yield Record("error", location, error=f"not a STAC object ({what})")

    def _follow(
        self,
        document: dict[str, Any],
        location: str,
        base: Path | str,
        parent_collection: str | None,
        origin: str | None,
    ) -> Iterator[Record]:
        for link in document.get("links") or ():
            if not isinstance(link, dict) or link.get("rel") not in _FOLLOWED_RELS:
                continue
            href = link.get("href")
            if not isinstance(href, str) or not href:
                yield Record("error", location, error=f"{link.get('rel')} link without href")
                continue
            if isinstance(base, str):
                target = urljoin(base, href)
                yield from self._remote_document(target, parent_collection, origin)
            elif _is_url(href):
                yield from self._remote_document(href, parent_collection, origin)
            else:
                local = href[len("file://") :] if href.startswith("file://") else href
                target_path = (base.parent / local).resolve()
                if target_path.is_file():
                    yield from self._file(target_path, parent_collection)
                else:
                    yield Record("error", location, error=f"linked file {href} does not exist")

    # --- URLs --------------------------------------------------------------------------

    def _get_json(self, url: str) -> Any:
        try:
            response = self.http.get(url)
        except httpx.HTTPError as exc:
            raise SourceError(f"cannot fetch {url}: {exc}") from None
        if response.status_code != 200:
            raise SourceError(f"{url} answered HTTP {response.status_code}")
        try:
            return orjson.loads(response.content)
        except orjson.JSONDecodeError as exc:
            raise SourceError(f"{url}: {_json_error(exc)}") from None

    def _remote_document(
        self, url: str, parent_collection: str | None, origin: str | None
    ) -> Iterator[Record]:
        if not self._claim(url):
            return
        try:
            document = self._get_json(url)
        except SourceError as exc:
            yield Record("error", url, error=str(exc))
            return
        yield from self._document(document, url, url, parent_collection, origin or url)

    def _url(self, url: str) -> Iterator[Record]:
        try:
            landing = self._get_json(url)
        except SourceError as exc:
            yield Record("error", url, error=str(exc))
            return
        if _is_api(landing):
            yield from self._api(url)
            return
        if self.options.query.given:
            yield Record("error", url, error="not a STAC API (its landing page offers no search)")
            return
        self._claim(url)
        yield from self._document(landing, url, url, None, url)

    def _api(self, url: str) -> Iterator[Record]:
        """Items matching the query, page by page, each collection before its first item."""
        from pystac_client import Client
        from pystac_client.exceptions import APIError

        query = self.options.query
        root = url.rstrip("/")
        fetched: set[str] = set()

        def collection(collection_id: str) -> Iterator[Record]:
            fetched.add(collection_id)
            where = f"{root}/collections/{quote(collection_id, safe='')}"
            try:
                document = self._get_json(where)
            except SourceError as exc:
                yield Record("error", where, error=f"collection {collection_id!r}: {exc}")
                return
            yield Record("collection", where, document, None, url)

        search_filter = query.filter_json()
        try:
            client = Client.open(url, headers=self.options.headers, timeout=self.options.timeout)
            search = client.search(
                collections=query.collections,
                bbox=query.bbox,
                datetime=query.datetime,
                filter=search_filter,
                filter_lang="cql2-json" if search_filter is not None else None,
                max_items=query.max_items,
                limit=query.page_size,
            )
        except (APIError, httpx.HTTPError, OSError, ValueError, NotImplementedError) as exc:
            yield Record("error", url, error=f"cannot search: {exc}")
            return
        for collection_id in query.collections or ():
            yield from collection(collection_id)
        # Items that leave out `collection` belong to the one collection asked for.
        implied = (
            query.collections[0] if query.collections and len(query.collections) == 1 else None
        )
        page_number = 0
        pages = search.pages_as_dicts()
        while True:
            page_number += 1
            try:
                page = next(pages)
            except StopIteration:
                return
            except Exception as exc:  # pystac-client raises APIError and transport errors
                status = getattr(exc, "status_code", None)
                reason = f"HTTP {status}: {exc}" if status else f"{type(exc).__name__}: {exc}"
                yield Record("error", f"{url} search page {page_number}", error=reason)
                return
            if page_number == 1:
                matched = page.get("numberMatched") or (page.get("context") or {}).get("matched")
                if isinstance(matched, int):
                    limit = query.max_items or matched
                    yield Record("total", url, count=min(matched, limit))
            for index, feature in enumerate(page.get("features") or ()):
                where = f"{url} search page {page_number} item {index}"
                if not isinstance(feature, dict):
                    yield Record("error", where, error="not a STAC item")
                    continue
                named = feature.get("collection")
                if isinstance(named, str) and named not in fetched:
                    yield from collection(named)
                yield Record("item", where, feature, None, url, implied)


def _is_api(document: Any) -> bool:
    """A landing page that offers item search."""
    if not isinstance(document, dict) or document.get("type") not in ("Catalog", "Collection"):
        return False
    conforms = document.get("conformsTo") or ()
    if any(isinstance(c, str) and c.rstrip("/").endswith(_ITEM_SEARCH) for c in conforms):
        return True
    return any(
        isinstance(link, dict) and link.get("rel") == "search"
        for link in document.get("links") or ()
    )


def _looks_like_ndjson(raw: bytes) -> bool:
    """JSON that failed as a whole but whose first line is a complete object."""
    lines = [line for line in raw.splitlines() if line.strip()]
    if len(lines) < 2:
        return False
    try:
        return isinstance(orjson.loads(lines[0]), dict)
    except orjson.JSONDecodeError:
        return False


def count_hint(sources: list[str]) -> int | None:
    """How many records local sources hold, when that is cheap to know (NDJSON lines,
    single-item files); None when it is not."""
    total = 0
    for source in sources:
        if _is_url(source):
            return None
        path = Path(source)
        if not path.is_file():
            return None
        if path.name.lower().endswith(NDJSON_SUFFIXES):
            with path.open("rb") as handle:
                total += sum(1 for line in handle if line.strip())
        else:
            return None
    return total
