"""Provider-scoped scene ids: `provider:original_id`.

pgstac keeps items under their original upstream ids; the API adds the provider
prefix on the way out and parses it on the way in.
"""

from __future__ import annotations

import re
from typing import NamedTuple

from astra_stac.errors import InvalidIdFormat

MAX_SCENE_ID_LENGTH = 256
_PROVIDER = r"[a-z0-9](?:[a-z0-9-]*[a-z0-9])?"
# Upstream ids seen in the wild use letters, digits, `_`, `-` and `.`.
_ORIGINAL = r"[A-Za-z0-9_.\-]+"
_SCENE_ID = re.compile(rf"(?P<provider>{_PROVIDER}):(?P<original>{_ORIGINAL})")


class SceneId(NamedTuple):
    """A parsed provider-scoped id."""

    provider: str
    original_id: str

    def __str__(self) -> str:
        return f"{self.provider}:{self.original_id}"


def parse_scene_id(value: str) -> SceneId:
    """Split `provider:original_id`, or raise `InvalidIdFormat` saying why not."""
    if len(value) > MAX_SCENE_ID_LENGTH:
        raise InvalidIdFormat(
            f"Scene id is {len(value)} characters long; the maximum is {MAX_SCENE_ID_LENGTH}."
        )
    match = _SCENE_ID.fullmatch(value)
    if match is None:
        raise InvalidIdFormat(
            f"Scene id {value!r} does not match provider:original_id "
            "(a lower-case provider, one colon, then letters, digits, '_', '-' or '.')."
        )
    return SceneId(match["provider"], match["original"])


def is_scoped(value: str) -> bool:
    """Whether a string looks like a provider-scoped id (contains the separator)."""
    return ":" in value


def scope_id(provider: str, original_id: str) -> str:
    """The provider-scoped form of an upstream id."""
    return f"{provider}:{original_id}"
