"""One error hierarchy, one status map, one JSON shape: `{"code", "description"}`.

Registered once on the app, so STAC, scene, asset and tiler routes all answer
bad input the same way and never leak a stack trace.
"""

from __future__ import annotations

import errno
import json
import logging
import socket
from typing import Any

from asyncpg import exceptions as pg_errors
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from morecantile.errors import InvalidZoomError, MorecantileError
from rasterio.errors import RasterioError, RasterioIOError
from rio_tiler import errors as tiler_errors
from stac_fastapi.types import errors as stac_errors
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import JSONResponse
from titiler.core.errors import BadRequestError, TileNotFoundError

logger = logging.getLogger(__name__)


class AstraError(Exception):
    """Base of every error the API reports on purpose."""

    status_code = 500
    code = "INTERNAL_ERROR"
    headers: dict[str, str] | None = None

    def __init__(self, description: str) -> None:
        super().__init__(description)
        self.description = description


class InvalidIdFormat(AstraError):
    """A scene id that is not `provider:original_id`."""

    status_code = 400
    code = "INVALID_ID_FORMAT"


class InvalidParameter(AstraError):
    """A query parameter or body field the API cannot use."""

    status_code = 400
    code = "INVALID_PARAMETER"


class SceneNotFound(AstraError):
    """A well-formed scene id with no scene behind it."""

    status_code = 404
    code = "SCENE_NOT_FOUND"


class NotFound(AstraError):
    """Any other resource that does not exist."""

    status_code = 404
    code = "NOT_FOUND"


class Unauthorized(AstraError):
    """No API key, or one that is unknown or revoked."""

    status_code = 401
    code = "UNAUTHORIZED"
    headers = {"WWW-Authenticate": "Bearer"}


class Forbidden(AstraError):
    """A valid key without the scope the route needs."""

    status_code = 403
    code = "FORBIDDEN"


class UnknownBand(InvalidParameter):
    """A requested band the scene does not have."""

    code = "UNKNOWN_BAND"


class UnknownFormat(InvalidParameter):
    """An output format the asset resolver does not produce."""

    code = "UNKNOWN_FORMAT"


class InvalidSignature(AstraError):
    """A signed download URL that was altered or signed with another key."""

    status_code = 403
    code = "INVALID_SIGNATURE"


class SignatureExpired(AstraError):
    """A signed download URL past its expiry."""

    status_code = 403
    code = "SIGNATURE_EXPIRED"


class RangeNotSatisfiable(AstraError):
    """A `Range` header outside the file."""

    status_code = 416
    code = "RANGE_NOT_SATISFIABLE"

    def __init__(self, description: str, size: int) -> None:
        super().__init__(description)
        self.headers = {"Content-Range": f"bytes */{size}"}


class AssetUnavailable(AstraError):
    """The file behind a scene's asset cannot be read, signed or converted right now."""

    status_code = 502
    code = "ASSET_UNAVAILABLE"


class AssetNotAllowed(AssetUnavailable):
    """A catalogue href the server will not read: a scheme or host the item's provider
    does not allow (`asset_hosts`), a local file outside the storage root, a `/vsi…`
    path or a VRT. Never fetched; the catalogue entry, not the request, is at fault."""

    status_code = 422
    code = "ASSET_NOT_ALLOWED"


class CacheFull(AstraError):
    """The conversion cache has no space left; nothing partial is kept."""

    status_code = 507
    code = "INSUFFICIENT_STORAGE"


class Conflict(AstraError):
    """The request clashes with what is stored."""

    status_code = 409
    code = "CONFLICT"


class IngestError(AstraError):
    """An ingest that cannot run at all (unreadable source, unreachable database)."""

    status_code = 400
    code = "INGEST_ERROR"


class ServiceUnavailable(AstraError):
    """A dependency (the database) cannot be reached right now."""

    status_code = 503
    code = "SERVICE_UNAVAILABLE"


_STATUS_CODES = {
    400: "INVALID_PARAMETER",
    401: "UNAUTHORIZED",
    403: "FORBIDDEN",
    404: "NOT_FOUND",
    405: "METHOD_NOT_ALLOWED",
    406: "NOT_ACCEPTABLE",
    409: "CONFLICT",
    413: "PAYLOAD_TOO_LARGE",
    415: "UNSUPPORTED_MEDIA_TYPE",
    416: "RANGE_NOT_SATISFIABLE",
    422: "INVALID_PARAMETER",
    424: "DATABASE_ERROR",
    429: "TOO_MANY_REQUESTS",
    503: "SERVICE_UNAVAILABLE",
}

# stac-fastapi's own exceptions and the database driver's, mapped once.
_FOREIGN_ERRORS: dict[type[Exception], tuple[int, str]] = {
    stac_errors.NotFoundError: (404, "NOT_FOUND"),
    stac_errors.ConflictError: (409, "CONFLICT"),
    stac_errors.ForeignKeyError: (400, "INVALID_PARAMETER"),
    stac_errors.DatabaseError: (400, "INVALID_PARAMETER"),
    stac_errors.InvalidQueryParameter: (400, "INVALID_PARAMETER"),
    json.JSONDecodeError: (400, "INVALID_PARAMETER"),
    pg_errors.DataError: (400, "INVALID_PARAMETER"),
    pg_errors.SyntaxOrAccessError: (400, "INVALID_PARAMETER"),
    pg_errors.RaiseError: (400, "INVALID_PARAMETER"),
}
# The database is away (stopped, restarting, unreachable, out of connections).
DATABASE_UNAVAILABLE: tuple[type[Exception], ...] = (
    OSError,
    TimeoutError,
    pg_errors.PostgresConnectionError,
    pg_errors.OperatorInterventionError,
    pg_errors.TooManyConnectionsError,
    pg_errors.InterfaceError,
)
_FOREIGN_ERRORS.update(
    {exc: (503, "SERVICE_UNAVAILABLE") for exc in DATABASE_UNAVAILABLE if exc is not OSError}
)
DATABASE_UNAVAILABLE_MESSAGE = "The catalogue database is unavailable; try again shortly."
# Of the other OSErrors reaching a route, these mean a connection failed (asyncpg's,
# in practice; asyncio's "Multiple exceptions" for a host of several addresses has no
# errno). The rest are the server's own (a file it cannot read): 500, not "database".
_CONNECTION_ERRNOS = frozenset(
    {
        errno.ECONNREFUSED,
        errno.ECONNRESET,
        errno.ECONNABORTED,
        errno.EHOSTUNREACH,
        errno.EHOSTDOWN,
        errno.ENETUNREACH,
        errno.ENETDOWN,
        errno.ETIMEDOUT,
        errno.EPIPE,
    }
)


def is_connection_failure(exc: OSError) -> bool:
    """Whether an OSError is a failed network connection rather than a file error."""
    return (
        isinstance(exc, ConnectionError | socket.gaierror)
        or exc.errno is None
        or exc.errno in _CONNECTION_ERRNOS
    )


# rio-tiler's and titiler's errors on the tiler routes. Most come from request
# parameters (400); a band file that cannot be read is the upstream's fault (502).
# RasterioIOError is also an OSError: listed here, it is not taken for the database.
_TILER_ERRORS: dict[type[Exception], tuple[int, str]] = {
    tiler_errors.RioTilerError: (400, "INVALID_PARAMETER"),
    tiler_errors.TileOutsideBounds: (404, "TILE_OUTSIDE_BOUNDS"),
    TileNotFoundError: (404, "TILE_OUTSIDE_BOUNDS"),
    tiler_errors.PointOutsideBounds: (404, "POINT_OUTSIDE_BOUNDS"),
    tiler_errors.InvalidExpression: (400, "INVALID_EXPRESSION"),
    tiler_errors.InvalidAssetName: (400, "UNKNOWN_BAND"),
    tiler_errors.InvalidBandName: (400, "UNKNOWN_BAND"),
    tiler_errors.InvalidFormat: (400, "UNKNOWN_FORMAT"),
    tiler_errors.MaxArraySizeError: (400, "IMAGE_TOO_LARGE"),
    BadRequestError: (400, "INVALID_PARAMETER"),
    MorecantileError: (400, "INVALID_PARAMETER"),
    InvalidZoomError: (404, "TILE_OUTSIDE_BOUNDS"),
    RasterioIOError: (502, "ASSET_UNAVAILABLE"),
    RasterioError: (502, "ASSET_UNAVAILABLE"),
}
ASSET_UNAVAILABLE_MESSAGE = "A file of this scene could not be read; try again later."


def error_response(
    status_code: int, code: str, description: str, headers: dict[str, str] | None = None
) -> JSONResponse:
    """The API's one error shape."""
    return JSONResponse(
        {"code": code, "description": description}, status_code=status_code, headers=headers
    )


def _describe_validation(exc: RequestValidationError) -> str:
    parts = []
    for error in exc.errors():
        location = ".".join(str(p) for p in error.get("loc", ()) if p != "body")
        parts.append(f"{location}: {error.get('msg', 'invalid')}" if location else error["msg"])
    return "; ".join(parts) or "Invalid request."


async def _astra_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, AstraError)
    return error_response(exc.status_code, exc.code, exc.description, exc.headers)


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    return error_response(400, "INVALID_PARAMETER", _describe_validation(exc))


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    code = _STATUS_CODES.get(exc.status_code, "ERROR")
    if exc.status_code >= 500:
        logger.error("HTTP %s on %s: %s", exc.status_code, request.url.path, exc.detail)
        description = "The server could not complete the request."
    else:
        description = str(exc.detail)
    return error_response(exc.status_code, code, description, getattr(exc, "headers", None))


def _foreign_error_handler(
    status_code: int, code: str, server_message: str = DATABASE_UNAVAILABLE_MESSAGE
) -> Any:
    async def handler(request: Request, exc: Exception) -> JSONResponse:
        if status_code >= 500:
            logger.warning("%s on %s: %s", type(exc).__name__, request.url.path, exc)
            description = server_message
        else:
            description = str(exc) or type(exc).__name__
            # pgstac prefixes its own messages; keep them short and free of SQL context.
            description = description.splitlines()[0]
        return error_response(status_code, code, description)

    return handler


async def _unexpected_error(request: Request, exc: Exception) -> JSONResponse:
    logger.exception("unhandled error on %s %s", request.method, request.url.path)
    return error_response(500, "INTERNAL_ERROR", "The server could not complete the request.")


_database_unavailable = _foreign_error_handler(503, "SERVICE_UNAVAILABLE")


async def _os_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, OSError)
    if is_connection_failure(exc):
        response: JSONResponse = await _database_unavailable(request, exc)
        return response
    return await _unexpected_error(request, exc)


def register_error_handlers(app: FastAPI) -> None:
    """Install the one error shape for every route of `app`."""
    app.add_exception_handler(AstraError, _astra_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    for exc_type, (status_code, code) in _FOREIGN_ERRORS.items():
        app.add_exception_handler(exc_type, _foreign_error_handler(status_code, code))
    for exc_type, (status_code, code) in _TILER_ERRORS.items():
        app.add_exception_handler(
            exc_type, _foreign_error_handler(status_code, code, ASSET_UNAVAILABLE_MESSAGE)
        )
    app.add_exception_handler(OSError, _os_error)
    app.add_exception_handler(Exception, _unexpected_error)
