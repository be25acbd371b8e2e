"""Request limits.

- Bodies over `ASTRA_MAX_BODY_BYTES` get 413 in the error shape: a declared
  `Content-Length` over the limit is refused before any of the body is read; a
  chunked body is counted as it arrives and refused once it passes the limit.
- Bodies are JSON objects: another media type is 415, a body that does not
  start with `{` is 400, and one sent without a `Content-Type` is read as JSON.
- CQL2 filters nest at most `MAX_FILTER_DEPTH` levels and hold at most
  `MAX_FILTER_OPERATORS` operators (400 otherwise): cql2's parser recurses in
  native code, and a few thousand nested parentheses crash the process.
"""

from __future__ import annotations

import math
import re
from typing import Any

from fastapi.exceptions import HTTPException
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from astra_stac.errors import InvalidParameter, error_response

PAYLOAD_TOO_LARGE = "PAYLOAD_TOO_LARGE"
BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
_WHITESPACE = b" \t\r\n"
MAX_FILTER_DEPTH = 32
MAX_FILTER_OPERATORS = 500
_TEXT_OPERATORS = re.compile(r"\b(?:and|or|not)\b", re.IGNORECASE)


def _text_shape(text: str) -> tuple[int, int]:
    """Deepest parenthesis nesting (outside string literals) and boolean operator count."""
    depth = deepest = 0
    quoted = False
    for char in text:
        if char == "'":
            quoted = not quoted
        elif not quoted and char == "(":
            depth += 1
            deepest = max(deepest, depth)
        elif not quoted and char == ")":
            depth -= 1
    return deepest, len(_TEXT_OPERATORS.findall(text))


def _json_shape(node: Any) -> tuple[int, int]:
    """Deepest nesting of containers and the number of `op` nodes, without recursion."""
    deepest = operators = 0
    stack = [(node, 1)]
    while stack:
        value, depth = stack.pop()
        deepest = max(deepest, depth)
        if isinstance(value, dict):
            operators += "op" in value
            stack.extend((child, depth + 1) for child in value.values())
        elif isinstance(value, list):
            stack.extend((child, depth + 1) for child in value)
    return deepest, operators


def check_filter(raw: Any) -> None:
    """Refuse a CQL2 filter (text or JSON) too deep or too long to parse safely."""
    if raw is None:
        return
    if isinstance(raw, str):
        depth, operators = _text_shape(raw)
    else:
        depth, operators = _json_shape(raw)
        depth //= 3  # {"op", "args": [{…}]}: three containers per level
    if depth > MAX_FILTER_DEPTH or operators > MAX_FILTER_OPERATORS:
        raise InvalidParameter(
            f"Invalid filter: at most {MAX_FILTER_DEPTH} levels of nesting and "
            f"{MAX_FILTER_OPERATORS} operators are allowed."
        )


def search_arguments(kwargs: dict[str, Any]) -> dict[str, Any]:
    """GET search arguments made safe for stac-fastapi-pgstac: the filter checked
    (`check_filter`), empty `fields` entries dropped (it reads their first character)."""
    check_filter(kwargs.get("filter_expr"))
    if kwargs.get("fields"):
        kwargs = {**kwargs, "fields": [f for f in kwargs["fields"] if f]}
    return kwargs


def check_finite(name: str, value: Any) -> None:
    """Every number in `value` (a bbox, a geometry as a dict) is finite: NaN and
    infinity pass JSON parsing and pydantic, and PostGIS then answers nonsense."""
    stack = [value]
    while stack:
        node = stack.pop()
        if isinstance(node, float) and not math.isfinite(node):
            raise InvalidParameter(f"{name} holds a number that is not finite ({node}).")
        if isinstance(node, dict):
            stack.extend(node.values())
        elif isinstance(node, list | tuple):
            stack.extend(node)


def _is_json(content_type: str) -> bool:
    media = content_type.split(";", 1)[0].strip().lower()
    return media == "application/json" or (
        media.startswith("application/") and media.endswith("+json")
    )


class RequestBodyMiddleware:
    """Pure ASGI middleware: request bodies are JSON objects of at most `max_bytes`."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in BODY_METHODS:
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        declared = headers.get("content-length")
        refusal: tuple[int, str, str] | None = None
        if declared is not None and not declared.isdigit():
            refusal = (400, "INVALID_PARAMETER", "Content-Length is not a number.")
        elif declared is not None and int(declared) > self.max_bytes:
            refusal = (413, PAYLOAD_TOO_LARGE, self._too_large().detail)
        elif (
            declared != "0" and "content-type" in headers and not _is_json(headers["content-type"])
        ):
            refusal = (
                415,
                "UNSUPPORTED_MEDIA_TYPE",
                f"Request bodies must be application/json, not {headers['content-type']} "
                "(with curl -d, add -H 'Content-Type: application/json').",
            )
        if refusal is not None:
            response = error_response(*refusal, headers={"Connection": "close"})
            await response(scope, receive, send)
            return
        if "content-type" not in headers:
            scope = {
                **scope,
                "headers": [*scope["headers"], (b"content-type", b"application/json")],
            }
        seen = 0
        first: int | None = None

        async def checking_receive() -> Message:
            nonlocal seen, first
            message = await receive()
            if message["type"] == "http.request":
                body = message.get("body", b"")
                seen += len(body)
                if seen > self.max_bytes:
                    raise self._too_large()
                if first is None and body.strip(_WHITESPACE):
                    first = body.lstrip(_WHITESPACE)[0]
                    if first != ord("{"):
                        raise HTTPException(400, "The request body must be a JSON object.")
            return message

        await self.app(scope, checking_receive, send)

    def _too_large(self) -> HTTPException:
        return HTTPException(413, f"The request body is larger than {self.max_bytes} bytes.")
