"""Where an asset's bytes are, and how a client (or GDAL) gets at them.

- local files (`file://` hrefs, absolute paths, or paths relative to the storage
  root) are served by the app's signed download route, only from inside the
  storage root;
- `s3://` objects get boto3 presigned URLs (any S3-compatible endpoint,
  requester-pays buckets included);
- `http(s)` hrefs are public, or signed by a pluggable `HrefSigner` (Planetary
  Computer SAS tokens).

Remote hrefs are read only when the item's provider allows their scheme and host
(`Provider.allows`, the registry's `asset_hosts`); local ones only inside the
storage root; `/vsi…` paths, inline XML and other schemes never. Band files are
opened with raster drivers only (`open_raster`): a VRT can name any file or URL.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from enum import Enum
from functools import lru_cache
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import unquote, urlsplit

import boto3
import httpx
from awscrt import auth as crt_auth
from awscrt.http import HttpHeaders, HttpRequest
from botocore import UNSIGNED
from botocore.config import Config
from botocore.credentials import Credentials
from botocore.exceptions import BotoCoreError, ClientError, HTTPClientError, NoCredentialsError
from botocore.exceptions import ConnectionError as BotoConnectionError
from botocore.utils import percent_encode
from rasterio._path import _parse_path
from rasterio.env import env_ctx_if_needed
from rasterio.errors import RasterioIOError
from rasterio.io import DatasetReader

from astra_stac.assets.settings import S3BucketSettings, S3Settings
from astra_stac.errors import AssetNotAllowed, AssetUnavailable, NotFound
from astra_stac.providers import Provider

logger = logging.getLogger(__name__)
FILES_AREA = "files"
CACHE_AREA = "cache"
# GDAL drivers a band file may be opened with (no VRT: a VRT can point at any file).
ALLOWED_DRIVERS = ["GTiff", "JP2OpenJPEG", "JP2KAK", "JP2ECW", "JPEG", "PNG", "WEBP"]
OUTSIDE_ROOT = (
    "This asset is stored outside the server's storage root (ASTRA_STORAGE_ROOT) "
    "and cannot be read."
)


class SourceKind(Enum):
    LOCAL = "local"
    S3 = "s3"
    HTTP = "http"


@dataclass(frozen=True)
class Source:
    """A parsed asset href."""

    href: str
    kind: SourceKind
    path: Path | None = None
    bucket: str | None = None
    key: str | None = None


def parse_href(href: str, storage_root: Path, provider: Provider | None) -> Source:
    """What kind of place a catalogue href points at, or `AssetNotAllowed` when the
    server must not read it (see the module docstring)."""
    if href.startswith(("/vsi", "<")):
        raise AssetNotAllowed("GDAL virtual paths and inline datasets are not served.")
    parts = urlsplit(href)
    scheme = parts.scheme.lower()
    if scheme == "file":
        if parts.netloc not in ("", "localhost"):
            raise AssetNotAllowed("Remote file:// hosts are not served.")
        return Source(href, SourceKind.LOCAL, path=Path(unquote(parts.path)))
    if scheme == "" and href:
        path = Path(href)
        return Source(
            href, SourceKind.LOCAL, path=path if path.is_absolute() else storage_root / path
        )
    if scheme not in ("s3", "http", "https"):
        raise AssetNotAllowed(f"The server does not read {scheme or 'empty'}:// hrefs.")
    if provider is None or not provider.allows(href):
        name = provider.prefix if provider is not None else "(none)"
        raise AssetNotAllowed(
            f"This asset's host ({scheme}://{parts.netloc.rpartition('@')[2]}) is not on "
            f"the allow-list of provider {name!r} (asset_hosts in the provider registry, "
            "or ASTRA_ASSET_HOSTS)."
        )
    if scheme == "s3":
        key = unquote(parts.path.lstrip("/"))
        if not key:
            raise AssetUnavailable(f"Not an s3://bucket/key href: {href}")
        return Source(href, SourceKind.S3, bucket=parts.netloc, key=key)
    return Source(href, SourceKind.HTTP)


def confined(path: Path, base: Path, hidden_ok: bool = False) -> str | None:
    """`path` relative to `base` (symlinks and `..` resolved), or None when it leaves
    `base` or passes through a hidden (`.`) directory."""
    resolved = path.resolve()
    if not resolved.is_relative_to(base):
        return None
    relative = resolved.relative_to(base)
    if not hidden_ok and any(part.startswith(".") for part in relative.parts):
        return None
    return relative.as_posix()


def open_raster(path: str) -> DatasetReader:
    """Open a band file for reading with raster drivers only (`ALLOWED_DRIVERS`);
    a file none of them recognises (a VRT, say) is `AssetNotAllowed`.

    `rasterio.open` takes one driver; its `DatasetReader` takes the list.
    """
    try:
        with env_ctx_if_needed():
            return DatasetReader(_parse_path(path), driver=ALLOWED_DRIVERS)
    except RasterioIOError as exc:
        if "not recognized as being in a supported file format" not in str(exc):
            raise  # unreachable, missing, …: not the file's format
        raise AssetNotAllowed(
            "This asset is not in a raster format the server reads "
            "(GeoTIFF, JPEG2000, JPEG, PNG or WebP)."
        ) from exc


class LocalStorage:
    """Files under the storage root, and the conversion cache, as download paths.

    A download path is `files/<path under the root>` or `cache/<path under the
    cache>`. Paths are resolved (symlinks and `..` included) and refused when
    they leave their directory or pass through a hidden (`.`) directory, so the
    signing key and other housekeeping files are never served.
    """

    def __init__(self, root: Path, cache_dir: Path) -> None:
        self.root = root.resolve()
        self.cache_dir = cache_dir.resolve()

    def _areas(self) -> dict[str, Path]:
        return {FILES_AREA: self.root, CACHE_AREA: self.cache_dir}

    def download_path(self, path: Path) -> str:
        """The download path of a local file, or `AssetNotAllowed` if it may not be served."""
        relative = confined(path, self.cache_dir, hidden_ok=True)
        if relative is not None:
            return f"{CACHE_AREA}/{relative}"
        relative = confined(path, self.root)
        if relative is None:
            logger.warning("asset %s is outside the storage root %s", path, self.root)
            raise AssetNotAllowed(OUTSIDE_ROOT)
        if not path.resolve().is_file():
            raise AssetUnavailable("The file behind this asset is missing from storage.")
        return f"{FILES_AREA}/{relative}"

    def file_for(self, download_path: str) -> Path:
        """The file a (signature-checked) download path names, or `NotFound`."""
        area, _, rest = download_path.partition("/")
        base = self._areas().get(area)
        pure = PurePosixPath(rest)
        if base is None or not rest or pure.is_absolute() or ".." in pure.parts:
            raise NotFound("No such download.")
        candidate = base.joinpath(*pure.parts)
        if confined(candidate, base, hidden_ok=area == CACHE_AREA) is None:
            raise NotFound("No such download.")
        resolved = candidate.resolve()
        if not resolved.is_file():
            raise NotFound("The file behind this download is gone; resolve the asset again.")
        return resolved


# A key botocore's URL rules leave as it is: the object URL of a bucket is learned
# once by asking botocore for this key's URL, then reused for every key.
_KEY_MARKER = "astra-key-marker"
_DEFAULT_PORTS = {"http": 80, "https": 443}


@dataclass(frozen=True)
class _BucketUrls:
    """How one bucket's object URLs are made and signed."""

    origin: str  # scheme://host[:port] of the object URLs
    path: str  # their path up to the key, as botocore's endpoint rules make it
    host: str  # the signed Host: botocore's rule, default ports dropped
    region: str
    credentials: Credentials | None  # botocore's, from the AWS chain; None: unsigned
    requester_pays: bool


def _split_object_url(url: str) -> tuple[str, str, str]:
    """Origin, path and signed host of a botocore object URL."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    if parts.port is not None and parts.port != _DEFAULT_PORTS.get(parts.scheme):
        host = f"{host}:{parts.port}"
    return f"{parts.scheme}://{parts.netloc}", parts.path, host


@lru_cache(maxsize=16)
def _crt_credentials(
    access_key: str, secret_key: str, token: str | None
) -> crt_auth.AwsCredentialsProvider:
    return crt_auth.AwsCredentialsProvider.new_static(access_key, secret_key, token)


@lru_cache(maxsize=64)
def _signing_config(
    credentials: crt_auth.AwsCredentialsProvider, region: str, ttl: int
) -> crt_auth.AwsSigningConfig:
    """SigV4 query signing as botocore presigns S3 GETs: unsigned payload, the path
    signed as it is (S3 neither double-encodes nor normalises it), Host signed."""
    return crt_auth.AwsSigningConfig(
        algorithm=crt_auth.AwsSigningAlgorithm.V4,
        signature_type=crt_auth.AwsSignatureType.HTTP_REQUEST_QUERY_PARAMS,
        credentials_provider=credentials,
        region=region,
        service="s3",
        use_double_uri_encode=False,
        should_normalize_uri_path=False,
        signed_body_value=crt_auth.AwsSignedBodyValue.UNSIGNED_PAYLOAD,
        signed_body_header_type=crt_auth.AwsSignedBodyHeaderType.NONE,
        expiration_in_seconds=ttl,
    )


class S3Storage:
    """Presigned URLs and object sizes for `s3://` hrefs (boto3).

    URLs are the ones botocore's `generate_presigned_url` makes (its endpoint rules
    give each bucket's object URL once), signed with the AWS Common Runtime's SigV4
    signer, the native one botocore itself uses when installed with `[crt]`:
    ~22 µs a URL instead of botocore's ~350 µs.
    """

    def __init__(self, settings: S3Settings) -> None:
        self.settings = settings
        self._sizes: dict[str, int] = {}

    @lru_cache(maxsize=64)  # noqa: B019 - one session per bucket for the life of the app
    def _session(self, bucket: str) -> boto3.session.Session:
        conf = self.settings.for_bucket(bucket)
        return boto3.session.Session(
            aws_access_key_id=conf.access_key_id,
            aws_secret_access_key=conf.secret_access_key.get_secret_value()
            if conf.secret_access_key
            else None,
            region_name=conf.region or "us-east-1",
        )

    @lru_cache(maxsize=64)  # noqa: B019 - one client per bucket for the life of the app
    def _client(self, bucket: str, unsigned: bool = False) -> Any:
        conf = self.settings.for_bucket(bucket)
        endpoint = conf.endpoint_url
        style = conf.addressing_style or "auto"
        if endpoint is None and conf.region:
            # AWS itself: the regional endpoint, bucket in the host name (dotted
            # names cannot be, their TLS certificate would not match).
            endpoint = f"https://s3.{conf.region}.amazonaws.com"
            if style == "auto":
                style = "path" if "." in bucket else "virtual"
        config = Config(
            signature_version=UNSIGNED if unsigned else "s3v4",
            s3={"addressing_style": style},
            retries={"max_attempts": 2},
            connect_timeout=5,
            read_timeout=20,
        )
        return self._session(bucket).client("s3", endpoint_url=endpoint, config=config)

    @lru_cache(maxsize=64)  # noqa: B019 - per bucket for the life of the app
    def _urls(self, bucket: str) -> _BucketUrls:
        client = self._client(bucket, unsigned=True)
        url = client.generate_presigned_url(
            "get_object", Params={"Bucket": bucket, "Key": _KEY_MARKER}
        )
        url = str(url).split("?", 1)[0]
        if not url.endswith(_KEY_MARKER):
            raise AssetUnavailable(f"botocore gave no object URL for bucket {bucket!r}.")
        origin, path, host = _split_object_url(url.removesuffix(_KEY_MARKER))
        return _BucketUrls(
            origin=origin,
            path=path,
            host=host,
            region=client.meta.region_name,
            credentials=self._session(bucket).get_credentials(),
            requester_pays=bool(self.settings.for_bucket(bucket).requester_pays),
        )

    def presign(self, bucket: str, key: str, ttl: int) -> tuple[str, bool]:
        """A GET URL for the object valid `ttl` seconds, and whether it is signed.

        Requester-pays travels in the signed query, so the downloading client
        sends no header. Without credentials anywhere in the AWS chain the plain
        (unsigned) URL is returned, which works for public buckets.
        """
        urls = self._urls(bucket)
        path = urls.path + percent_encode(key, safe="/~")  # botocore's {Key+} rule
        if urls.credentials is None:
            return urls.origin + path, False
        if urls.requester_pays:
            path += "?x-amz-request-payer=requester"
        frozen = urls.credentials.get_frozen_credentials()  # refreshes role credentials
        provider = _crt_credentials(frozen.access_key, frozen.secret_key, frozen.token)
        request = HttpRequest("GET", path, HttpHeaders([("host", urls.host)]))
        crt_auth.aws_sign_request(request, _signing_config(provider, urls.region, ttl)).result()
        return urls.origin + request.path, True

    def _params(self, conf: S3BucketSettings, bucket: str, key: str) -> dict[str, str]:
        params = {"Bucket": bucket, "Key": key}
        if conf.requester_pays:
            params["RequestPayer"] = "requester"
        return params

    def _head_size(self, bucket: str, key: str) -> int:
        conf = self.settings.for_bucket(bucket)
        try:
            head = self._client(bucket).head_object(**self._params(conf, bucket, key))
        except NoCredentialsError:
            head = self._client(bucket, unsigned=True).head_object(Bucket=bucket, Key=key)
        return int(head["ContentLength"])

    def known_size(self, bucket: str, key: str) -> int | None:
        """The object's size if a `HEAD` has told it already, else None."""
        return self._sizes.get(f"{bucket}/{key}")

    async def size(self, bucket: str, key: str) -> int | None:
        """The object's size in bytes (cached), None when S3 will not tell, or
        `AssetUnavailable` when the object store cannot be reached."""
        cache_key = f"{bucket}/{key}"
        if cache_key in self._sizes:
            return self._sizes[cache_key]
        try:
            size = await asyncio.to_thread(self._head_size, bucket, key)
        except (BotoConnectionError, HTTPClientError) as exc:
            logger.warning("s3://%s: the object store cannot be reached: %s", bucket, exc)
            raise AssetUnavailable(
                "The object store holding this asset cannot be reached; try again later."
            ) from exc
        except (ClientError, BotoCoreError) as exc:
            logger.warning("HEAD s3://%s/%s failed: %s", bucket, key, exc)
            return None
        self._sizes[cache_key] = size
        return size


class RemoteSizes:
    """Sizes of public or SAS-signed http(s) objects, asked with HEAD and cached."""

    def __init__(self, timeout: float, ttl: float = 24 * 3600) -> None:
        self._timeout = timeout
        self._ttl = ttl
        self._sizes: dict[str, tuple[float, int | None]] = {}

    async def size(self, cache_key: str, url: str) -> int | None:
        cached = self._sizes.get(cache_key)
        if cached is not None and cached[0] > time.monotonic():
            return cached[1]
        size: int | None = None
        try:
            async with httpx.AsyncClient(timeout=self._timeout, follow_redirects=True) as client:
                response = await client.head(url)
            if response.status_code == 200 and "content-length" in response.headers:
                size = int(response.headers["content-length"])
        except (httpx.HTTPError, ValueError) as exc:
            logger.info("HEAD %s failed: %s", cache_key, exc)
        # Failures are remembered briefly so a dead host does not slow every request.
        self._sizes[cache_key] = (time.monotonic() + (self._ttl if size else 60.0), size)
        return size
