"""Which provider an item or collection comes from, read off the registry.

Evidence is tried strongest first; the first kind of evidence that names exactly
one provider (or one provider more often than any other) decides:

1. the collection id is a local collection the registry lists (`es-sentinel-2-l2a`:
   an item read back from another astra-stac), or the id carries a known
   scene-id prefix (`earth-search:…`);
2. `self`/`root`/`parent`/`collection` links under a provider's `api_url` — the
   API that served it;
3. asset hrefs under a provider's `asset_hosts`;
4. any other href (alternate asset hrefs, `via`/`derived_from` links, and for
   collections every URL in the document) under an `api_url` or `asset_hosts`;
5. the source it was read from (a STAC API or catalog URL under an `api_url`);
6. an upstream collection id exactly one provider lists.

Nothing here names a provider: adding one to the registry teaches detection.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator
from typing import Any

from astra_stac.providers import Provider, ProviderRegistry

_SERVED_BY = frozenset({"self", "root", "parent", "collection"})


class DetectionError(Exception):
    """No evidence, or evidence that points at several providers equally."""


def _prefix(url: str) -> str:
    return url.strip().lower().rstrip("/")


def _under(href: str, prefix: str) -> bool:
    """Whether the lower-cased `href` lies under the URL `prefix` (path-segment aware)."""
    if not href.startswith(prefix):
        return False
    rest = href[len(prefix) : len(prefix) + 1]
    return rest in ("", "/", "?", "#")


def _urls(node: Any) -> Iterator[str]:
    """Every string in a JSON document that looks like a URL."""
    if isinstance(node, str):
        if "://" in node:
            yield node
    elif isinstance(node, dict):
        for value in node.values():
            yield from _urls(value)
    elif isinstance(node, list):
        for value in node:
            yield from _urls(value)


class ProviderDetector:
    """Detects providers from registry data; `forced` (from `--provider`) wins outright."""

    def __init__(self, registry: ProviderRegistry, forced: str | None = None) -> None:
        self.registry = registry
        self.forced = registry.providers[forced] if forced else None
        providers = list(registry.providers.values())
        self._api = [(_prefix(p.api_url), p) for p in providers if p.api_url]
        self._hosts = [(_prefix(h), p) for p in providers for h in p.asset_hosts]
        self._everything = self._api + self._hosts
        upstream: dict[str, set[str]] = {}
        for provider in providers:
            for spec in provider.collections:
                upstream.setdefault(spec.upstream, set()).add(provider.prefix)
        self._unique_upstream = {
            cid: registry.providers[next(iter(owners))]
            for cid, owners in upstream.items()
            if len(owners) == 1
        }

    def known(self) -> str:
        """The providers a user may name, for messages."""
        return ", ".join(self.registry.providers)

    @staticmethod
    def _match(hrefs: Iterable[Any], prefixes: list[tuple[str, Provider]]) -> Counter[str]:
        counts: Counter[str] = Counter()
        for href in hrefs:
            if not isinstance(href, str):
                continue
            lowered = href.lower()
            for prefix, provider in prefixes:
                if _under(lowered, prefix):
                    counts[provider.prefix] += 1
                    break
        return counts

    def _decide(self, counts: Counter[str]) -> Provider | None:
        ranked = counts.most_common(2)
        if not ranked:
            return None
        if len(ranked) == 2 and ranked[0][1] == ranked[1][1]:
            return None
        return self.registry.providers[ranked[0][0]]

    def _by_ids(self, object_id: Any, collection: Any) -> Provider | None:
        if isinstance(collection, str) and self.registry.collection_spec(collection):
            return self.registry.provider_of_collection(collection)
        if isinstance(object_id, str) and ":" in object_id:
            return self.registry.get(object_id.split(":", 1)[0])
        return None

    def _by_source(self, origin: str | None) -> Provider | None:
        if not origin:
            return None
        return self._decide(self._match([origin], self._api))

    def _fail(self, what: str, tried: str) -> DetectionError:
        return DetectionError(
            f"cannot tell which provider {what} comes from ({tried}); "
            f"name one with --provider (one of: {self.known()})"
        )

    def item(self, item: dict[str, Any], origin: str | None = None) -> Provider:
        """The provider of an item, or `DetectionError`."""
        if self.forced is not None:
            return self.forced
        found = self._by_ids(item.get("id"), item.get("collection"))
        if found is not None:
            return found
        links = [link for link in item.get("links") or () if isinstance(link, dict)]
        served = [link.get("href") for link in links if link.get("rel") in _SERVED_BY]
        assets = [a for a in (item.get("assets") or {}).values() if isinstance(a, dict)]
        other = [link.get("href") for link in links if link.get("rel") not in _SERVED_BY]
        for asset in assets:
            alternates = asset.get("alternate")
            if isinstance(alternates, dict):
                other.extend(a.get("href") for a in alternates.values() if isinstance(a, dict))
        steps: list[Any] = [
            lambda: self._decide(self._match(served, self._api)),
            lambda: self._decide(self._match((a.get("href") for a in assets), self._hosts)),
            lambda: self._decide(self._match(other, self._everything)),
            lambda: self._by_source(origin),
            lambda: self._unique_upstream.get(item.get("collection")),  # type: ignore[arg-type]
        ]
        for step in steps:
            found = step()
            if found is not None:
                return found
        raise self._fail(
            f"item {item.get('id')!r}",
            "no link, asset href or collection id matches the provider registry",
        )

    def collection(self, collection: dict[str, Any], origin: str | None = None) -> Provider:
        """The provider of a collection document, or `DetectionError`."""
        if self.forced is not None:
            return self.forced
        found = self._by_ids(None, collection.get("id"))
        if found is not None:
            return found
        links = [link for link in collection.get("links") or () if isinstance(link, dict)]
        served = [link.get("href") for link in links if link.get("rel") in _SERVED_BY]
        steps: list[Any] = [
            lambda: self._decide(self._match(served, self._api)),
            lambda: self._decide(self._match(_urls(collection), self._everything)),
            lambda: self._by_source(origin),
            lambda: self._unique_upstream.get(collection.get("id")),  # type: ignore[arg-type]
        ]
        for step in steps:
            found = step()
            if found is not None:
                return found
        raise self._fail(
            f"collection {collection.get('id')!r}",
            "no link or URL in it matches the provider registry",
        )
