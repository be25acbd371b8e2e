"""Serving signed download URLs: signature check, then the file with HTTP Range support.

GDAL `/vsicurl/`, browsers and `curl -r` read byte ranges (206 Partial Content,
`Accept-Ranges: bytes`), so a client reads a COG's header and the tiles it needs
without fetching the whole file.
"""

from __future__ import annotations

import mimetypes
import time
from pathlib import Path

from starlette.responses import FileResponse, MalformedRangeHeader
from starlette.responses import RangeNotSatisfiable as StarletteRangeNotSatisfiable

from astra_stac.assets.signing import UrlSigner
from astra_stac.assets.storage import LocalStorage
from astra_stac.errors import InvalidParameter, RangeNotSatisfiable

GEOTIFF_MEDIA_TYPE = "image/tiff; application=geotiff"


def _media_type(path: Path) -> str:
    if path.suffix.lower() in (".tif", ".tiff"):
        return GEOTIFF_MEDIA_TYPE
    return mimetypes.guess_type(path.name)[0] or "application/octet-stream"


def check_range(header: str | None, size: int) -> None:
    """Refuse a bad `Range` header in the API's error shape before the file is sent.

    The parsing is Starlette's own, so what passes here is what `FileResponse`
    then serves.
    """
    if header is None:
        return
    try:
        FileResponse._parse_range_header(header, size)
    except MalformedRangeHeader as exc:
        raise InvalidParameter(f"Malformed Range header: {exc.content}") from exc
    except StarletteRangeNotSatisfiable as exc:
        raise RangeNotSatisfiable(
            f"The requested range is outside the file ({size} bytes).", exc.max_size
        ) from exc


def signed_file_response(
    signer: UrlSigner,
    storage: LocalStorage,
    download_path: str,
    expires: str | None,
    sig: str | None,
    range_header: str | None,
) -> FileResponse:
    """The file behind a signed download path, or the reason it is refused."""
    signer.verify(download_path, expires, sig)
    path = storage.file_for(download_path)
    stat = path.stat()
    check_range(range_header, stat.st_size)
    remaining = max(0, int(expires or 0) - int(time.time()))
    return FileResponse(
        path,
        media_type=_media_type(path),
        stat_result=stat,
        filename=path.name,
        content_disposition_type="inline",
        headers={"Cache-Control": f"private, max-age={remaining}"},
    )
