"""What `/search` accepts beyond stac-fastapi-pgstac's request models.

- The whole Query extension (https://github.com/stac-api-extensions/query): pgstac
  only knows its comparisons, so `startsWith`, `endsWith`, `contains` and `in`
  were refused. The search client now turns every `query` into CQL2-JSON.
- `collections` given as one string in a POST body (`"a"` or `"a,b"`), as
  stac-server accepts and stac-api-validator sends; GET already takes `a,b`.
- `filter` as CQL2 text in a POST body (`"filter-lang": "cql2-text"`); the
  search client turns it into CQL2-JSON for pgstac.
- CQL2 filters checked without cql2's schema validation for the plain shapes
  (`validate()` of cql2 0.6 compiles the CQL2 JSON schema on every call, ~60 ms).
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from typing import Annotated, Any, Literal

import attr
from cql2 import Expr
from fastapi import FastAPI
from pydantic import BaseModel, BeforeValidator, Field, model_validator
from stac_fastapi.extensions import SearchFilterExtension
from stac_fastapi.extensions.filter.request import FilterExtensionPostRequest
from stac_fastapi.pgstac.extensions import QueryExtension as PgstacQueryExtension
from stac_fastapi.types.extension import ApiExtension

from astra_stac.errors import InvalidParameter
from astra_stac.limits import check_filter


class QueryOperator(StrEnum):
    """The Query extension's operators (`ne` kept: stac-fastapi-pgstac accepted it)."""

    eq = "eq"
    neq = "neq"
    ne = "ne"
    lt = "lt"
    lte = "lte"
    gt = "gt"
    gte = "gte"
    startsWith = "startsWith"
    endsWith = "endsWith"
    contains = "contains"
    in_ = "in"


class QueryPostRequest(BaseModel):
    """The `query` member of a search, with every operator of the extension."""

    query: dict[str, dict[QueryOperator, Any]] | None = None


class QueryExtension(PgstacQueryExtension):
    """stac-fastapi-pgstac's Query extension, accepting all of its operators."""

    POST = QueryPostRequest


_COMPARISONS = {
    QueryOperator.eq: "=",
    QueryOperator.neq: "<>",
    QueryOperator.ne: "<>",
    QueryOperator.lt: "<",
    QueryOperator.lte: "<=",
    QueryOperator.gt: ">",
    QueryOperator.gte: ">=",
}
_PATTERNS = {
    QueryOperator.startsWith: "{}%",
    QueryOperator.endsWith: "%{}",
    QueryOperator.contains: "%{}%",
}
_SCALARS = (str, int, float, bool)


def _like_literal(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _clause(name: str, op: QueryOperator, value: Any) -> dict[str, Any]:
    prop = {"property": name}
    if op in _COMPARISONS:
        if not isinstance(value, _SCALARS):
            raise InvalidParameter(f"query: {name} {op.value} needs a string, number or boolean.")
        return {"op": _COMPARISONS[op], "args": [prop, value]}
    if op in _PATTERNS:
        if not isinstance(value, str):
            raise InvalidParameter(f"query: {name} {op.value} needs a string.")
        return {"op": "like", "args": [prop, _PATTERNS[op].format(_like_literal(value))]}
    if not isinstance(value, list) or not value or not all(isinstance(v, _SCALARS) for v in value):
        raise InvalidParameter(f"query: {name} in needs a non-empty array of values.")
    return {"op": "in", "args": [prop, value]}


def query_to_cql2(query: Mapping[str, Mapping[Any, Any]]) -> dict[str, Any] | None:
    """The CQL2-JSON equivalent of a `query`: every condition must hold."""
    clauses = [
        _clause(name, QueryOperator(op), value)
        for name, conditions in query.items()
        for op, value in conditions.items()
    ]
    if not clauses:
        return None
    return clauses[0] if len(clauses) == 1 else {"op": "and", "args": clauses}


def _comma_separated(value: Any) -> Any:
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


class CollectionsPostRequest(BaseModel):
    """`collections` as an array, or as one comma-separated string."""

    collections: Annotated[list[str] | None, BeforeValidator(_comma_separated)] = None


@attr.s
class LenientCollectionsExtension(ApiExtension):
    """Adds no route or conformance class: only widens the POST search model."""

    POST = CollectionsPostRequest
    conformance_classes: list[str] = attr.ib(factory=list)
    schema_href: str | None = attr.ib(default=None)

    def register(self, app: FastAPI) -> None:
        """Nothing to register."""


class FilterPostRequest(FilterExtensionPostRequest):
    """`filter` as CQL2-JSON, or as CQL2 text with `filter-lang: cql2-text`."""

    filter_expr: dict[str, Any] | str | None = Field(None, alias="filter")  # type: ignore[assignment]
    filter_lang: Literal["cql2-json", "cql2-text"] | None = Field(  # type: ignore[assignment]
        "cql2-json", alias="filter-lang"
    )

    @model_validator(mode="after")
    def _language_matches(self) -> FilterPostRequest:
        is_text = isinstance(self.filter_expr, str)
        if self.filter_expr is not None and is_text != (self.filter_lang == "cql2-text"):
            raise ValueError("filter-lang cql2-text takes a string filter, cql2-json an object")
        return self


@attr.s
class FilterExtension(SearchFilterExtension):
    """stac-fastapi-pgstac's search filter extension, also taking CQL2 text in a POST."""

    POST = FilterPostRequest


_COMPARISON_OPS = frozenset({"=", "<>", "<", "<=", ">", ">="})
_LITERALS = (str, int, float)


def _is_property(node: Any) -> bool:
    return (
        isinstance(node, dict) and node.keys() == {"property"} and isinstance(node["property"], str)
    )


def _plainly_valid(node: Any) -> bool:
    """Whether CQL2-JSON is obviously valid: properties compared with literals, and/or/not."""
    if not isinstance(node, dict) or node.keys() != {"op", "args"}:
        return False
    op, args = node["op"], node["args"]
    if not isinstance(args, list):
        return False
    if op in ("and", "or"):
        return len(args) >= 2 and all(_plainly_valid(arg) for arg in args)
    if op == "not":
        return len(args) == 1 and _plainly_valid(args[0])
    return (
        op in _COMPARISON_OPS
        and len(args) == 2
        and _is_property(args[0])
        and isinstance(args[1], _LITERALS)
        and not isinstance(args[1], bool)
    )


def filter_as_cql2_json(raw: Any) -> dict[str, Any]:
    """A `filter` (CQL2 text or JSON) as valid CQL2-JSON; InvalidParameter if it is not.

    Plain filters (the common `eo:cloud_cover < 20 AND ...`) skip the schema check.
    """
    check_filter(raw)
    try:
        expr = Expr(raw)
        as_json = dict(expr.to_json())
        if not _plainly_valid(as_json):
            expr.validate()
    except Exception as exc:  # cql2 raises bare exceptions on parse errors
        raise InvalidParameter(f"Invalid filter: {exc}") from exc
    return as_json
