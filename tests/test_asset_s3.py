"""`s3://` assets against a real S3-compatible server (moto) on loopback."""

from __future__ import annotations

import datetime as dt
import socket
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

import boto3
import botocore.auth
import botocore.crt.auth
import httpx
import numpy as np
import pytest
import rasterio
from moto.server import ThreadedMotoServer

from astra_stac.assets.settings import S3BucketSettings, S3Settings
from astra_stac.assets.storage import S3Storage
from tests.asset_helpers import (
    COG,
    GEOTIFF,
    app_client,
    asset_settings,
    band_asset,
    download,
    load_scene,
    read_tiff,
    resolve,
    scene_item,
    write_cog,
    write_striped,
)

BUCKET = "astra-cogs"
PAYS_BUCKET = "astra-requester-pays"
CREDENTIALS = {"access_key_id": "testing", "secret_access_key": "testing"}


@pytest.fixture
def storage(pg_server) -> Path:
    return Path(pg_server.storage)


@pytest.fixture
def cache(tmp_path: Path) -> Path:
    return tmp_path / "cache"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    client = boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    client.create_bucket(Bucket=BUCKET)
    client.create_bucket(Bucket=PAYS_BUCKET)
    client.put_bucket_request_payment(
        Bucket=PAYS_BUCKET, RequestPaymentConfiguration={"Payer": "Requester"}
    )
    try:
        yield endpoint
    finally:
        server.stop()


@pytest.fixture(scope="module")
def s3_rasters(s3_endpoint: str, tmp_path_factory) -> dict[str, Path]:
    directory = tmp_path_factory.mktemp("s3-rasters")
    files = {
        "cog": write_cog(directory / "B04.tif"),
        "striped": write_striped(directory / "B08.tif"),
    }
    client = boto3.client(
        "s3",
        endpoint_url=s3_endpoint,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    for bucket in (BUCKET, PAYS_BUCKET):
        client.upload_file(str(files["cog"]), bucket, "scenes/S2X/B04.tif")
        client.upload_file(str(files["striped"]), bucket, "scenes/S2X/B08.tif")
    return files


def s3_settings(endpoint: str) -> S3Settings:
    return S3Settings(
        endpoint_url=endpoint,
        region="us-east-1",
        addressing_style="path",
        buckets={PAYS_BUCKET: S3BucketSettings(requester_pays=True)},
        **CREDENTIALS,  # type: ignore[arg-type]
    )


@pytest.mark.parametrize("bucket", [BUCKET, PAYS_BUCKET])
def test_s3_cogs_get_presigned_urls_and_the_rest_is_converted(
    dsn, registry, storage, cache, auth, s3_endpoint, s3_rasters, bucket
):
    item = scene_item(
        "S2X_ON_S3",
        {
            "red": band_asset(f"s3://{bucket}/scenes/S2X/B04.tif", COG, "B04", "red", 10),
            "nir": band_asset(f"s3://{bucket}/scenes/S2X/B08.tif", GEOTIFF, "B08", "nir", 10),
        },
        "astra-test-s3",
    )
    scene = load_scene(dsn, registry, item)
    settings = asset_settings(storage, cache, s3=s3_settings(s3_endpoint))
    with app_client(dsn, settings, local_hosts=[f"s3://{bucket}/scenes/"]) as client:
        response = resolve(client, auth, scene_id=scene, bands="red,nir")
        assert response.status_code == 200, response.text
        body = response.json()
        red, nir = body["assets"]["B04"], body["assets"]["B08"]
        # The COG: a presigned URL straight to the object store.
        assert red["astra:routing"] == "direct" and red["astra:signed"] is True
        assert red["href"].startswith(f"{s3_endpoint}/{bucket}/scenes/S2X/B04.tif?")
        assert "X-Amz-Signature=" in red["href"] and "X-Amz-Expires=3600" in red["href"]
        if bucket == PAYS_BUCKET:
            assert "x-amz-request-payer=requester" in red["href"]
        got = httpx.get(red["href"])  # no headers, no key: the URL is enough
        assert got.status_code == 200
        assert got.content == s3_rasters["cog"].read_bytes()
        assert red["file:size"] == len(got.content)
        # Not a COG: GDAL read it through a presigned URL, the app serves the COG.
        assert nir["astra:routing"] == "converted"
        assert body["metadata"]["routing"] == "converted"
        assert "/api/v1/download/cache/" in urlsplit(nir["href"]).path
        converted = download(client, nir["href"])
        assert len(converted.content) == nir["file:size"]
        with rasterio.open(s3_rasters["striped"]) as src:
            assert np.array_equal(read_tiff(converted.content), src.read(1))


def test_presign_without_credentials_falls_back_to_the_plain_url(monkeypatch):
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    storage = S3Storage(S3Settings(region="us-west-2"))
    url, signed = storage.presign("usgs-landsat", "collection02/x/SR_B4.TIF", 3600)
    assert signed is False
    assert url == "https://usgs-landsat.s3.us-west-2.amazonaws.com/collection02/x/SR_B4.TIF"


def test_requester_pays_travels_in_the_signed_query(monkeypatch):
    storage = S3Storage(S3Settings(**CREDENTIALS))  # type: ignore[arg-type]
    url, signed = storage.presign("usgs-landsat", "collection02/x/SR_B4.TIF", 600)
    query = urlsplit(url).query
    assert signed
    assert url.startswith("https://usgs-landsat.s3.us-west-2.amazonaws.com/")
    assert "x-amz-request-payer=requester" in query
    assert "X-Amz-SignedHeaders=host&" in query  # nothing the client must send


@pytest.mark.parametrize(
    ("settings", "bucket"),
    [
        (S3Settings(endpoint_url="http://127.0.0.1:9000", addressing_style="path"), "cogs"),
        (S3Settings(endpoint_url="https://s3.example.org:443"), "cogs"),  # default port
        (S3Settings(endpoint_url="http://[::1]:9000", addressing_style="path"), "cogs"),
        (S3Settings(region="us-west-2"), "usgs-landsat"),  # requester pays, virtual host
        (S3Settings(region="eu-central-1"), "dotted.bucket.name"),  # path style on AWS
        (S3Settings(buckets={"cogs": S3BucketSettings(requester_pays=True)}), "cogs"),
    ],
)
@pytest.mark.parametrize(
    "key", ["scenes/S2X/B04.tif", "a b/ü+(1)~!*'.tif", "/leading//double/slash", "%41.tif"]
)
@pytest.mark.parametrize("token", [None, "the-session-token"])
def test_presigned_urls_are_what_boto3_generates(monkeypatch, settings, bucket, key, token):
    """At the moment it was signed, the URL is boto3's own `generate_presigned_url`:
    the same object URL and query, the same signature (parameter order aside)."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY")
    if token:
        monkeypatch.setenv("AWS_SESSION_TOKEN", token)
    else:
        monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)
    storage = S3Storage(settings)
    url, signed = storage.presign(bucket, key, 900)
    query = dict(parse_qsl(urlsplit(url).query, keep_blank_values=True))
    moment = dt.datetime.strptime(query["X-Amz-Date"], "%Y%m%dT%H%M%SZ")

    def signed_then(remove_tzinfo: bool = True) -> dt.datetime:
        return moment if remove_tzinfo else moment.replace(tzinfo=dt.UTC)

    # boto3 signs with botocore's signer, or the CRT's when installed (it is here).
    for signer in (botocore.auth, botocore.crt.auth):
        monkeypatch.setattr(signer, "get_current_datetime", signed_then)
    params = {"Bucket": bucket, "Key": key}
    if settings.for_bucket(bucket).requester_pays:
        params["RequestPayer"] = "requester"
    client = storage._client(bucket)
    client.meta.events.register("before-sign.s3.GetObject", _payer_in_query)
    expected = client.generate_presigned_url("get_object", Params=params, ExpiresIn=900)
    assert signed
    assert url.split("?")[0] == expected.split("?")[0]
    assert query == dict(parse_qsl(urlsplit(expected).query, keep_blank_values=True))
    assert query["X-Amz-Expires"] == "900" and query["X-Amz-SignedHeaders"] == "host"
    assert (query.get("X-Amz-Security-Token") == token) and len(query["X-Amz-Signature"]) == 64


def _payer_in_query(request, **_):
    """What a presigned URL must do with requester-pays: carry it in the signed query."""
    value = request.headers.get("x-amz-request-payer")
    if value:
        del request.headers["x-amz-request-payer"]
        request.url += f"{'&' if '?' in request.url else '?'}x-amz-request-payer={value}"
