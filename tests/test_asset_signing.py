"""HMAC URL signing, the signing key, and Planetary Computer SAS tokens (against a
real token server on loopback)."""

from __future__ import annotations

import asyncio
import os
import stat
import threading
import time
from datetime import timedelta

import pytest
from pydantic import ValidationError

from astra_stac.assets.settings import PlanetaryComputerSettings, SigningSettings
from astra_stac.assets.signing import (
    KEY_FILE,
    PlanetaryComputerSigner,
    UrlSigner,
    isoformat_z,
    load_signing_key,
)
from astra_stac.errors import AssetUnavailable, InvalidSignature, SignatureExpired
from tests.asset_helpers import loopback_http

BLOB = "https://sentinel2l2a01.blob.core.windows.net/sentinel2-l2/13/T/DE/2024/08/25/B04.tif"


def test_signature_round_trip_and_tampering():
    signer = UrlSigner(b"x" * 32)
    expires = int(time.time()) + 60
    sig = signer.signature("files/a/b.tif", expires)
    signer.verify("files/a/b.tif", str(expires), sig)
    url = signer.sign_url("http://h/api/v1/", "files/a b/c.tif", expires)
    assert url.startswith("http://h/api/v1/download/files/a%20b/c.tif?expires=")
    for path, exp, signature in (
        ("files/a/c.tif", str(expires), sig),
        ("files/a/b.tif", str(expires + 1), sig),
        ("files/a/b.tif", str(expires), sig[:-1]),
        ("files/a/b.tif", "-1", sig),
        ("files/a/b.tif", None, sig),
        ("files/a/b.tif", str(expires), None),
    ):
        with pytest.raises(InvalidSignature):
            signer.verify(path, exp, signature)
    with pytest.raises(InvalidSignature):
        UrlSigner(b"y" * 32).verify("files/a/b.tif", str(expires), sig)
    with pytest.raises(SignatureExpired):
        signer.verify("files/a/b.tif", str(expires), sig, now=expires)


def test_generated_key_is_kept_and_shared(tmp_path):
    settings = SigningSettings(signing_key=None)
    first = load_signing_key(settings, tmp_path)
    assert len(first) >= 32
    assert load_signing_key(settings, tmp_path) == first
    key_file = tmp_path / KEY_FILE
    assert stat.S_IMODE(os.stat(key_file).st_mode) == 0o600
    # Workers racing at start-up agree on one key.
    other = tmp_path / "race"
    keys: list[bytes] = []
    threads = [
        threading.Thread(target=lambda: keys.append(load_signing_key(settings, other)))
        for _ in range(8)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(set(keys)) == 1


def test_configured_key_wins_and_must_be_long(tmp_path, monkeypatch):
    monkeypatch.setenv("ASTRA_SIGNING_KEY", "s" * 40)
    monkeypatch.setenv("ASTRA_SIGNED_URL_TTL", "900")
    settings = SigningSettings()
    assert settings.signed_url_ttl == 900
    assert load_signing_key(settings, tmp_path) == b"s" * 40
    assert not (tmp_path / KEY_FILE).exists()
    with pytest.raises(ValidationError):
        SigningSettings(signing_key="short")
    with pytest.raises(ValidationError):
        SigningSettings(signed_url_ttl=0)


def test_isoformat_z():
    assert isoformat_z(0) == "1970-01-01T00:00:00Z"


def _signer(url: str, **settings: object) -> PlanetaryComputerSigner:
    return PlanetaryComputerSigner(
        PlanetaryComputerSettings(sas_token_url=f"{url}/token", **settings)  # type: ignore[arg-type]
    )


def test_sas_tokens_are_fetched_once_and_cached(tmp_path):
    with loopback_http(tmp_path) as server:
        signer = _signer(server.url, subscription_key="sub-key")

        async def scenario() -> list:
            together = await asyncio.gather(*(signer.sign(BLOB) for _ in range(10)))
            again = await signer.sign(BLOB.replace("B04", "B08"))
            other = await signer.sign(
                "https://landsateuwest.blob.core.windows.net/landsat-c2/x/SR_B4.TIF"
            )
            return [*together, again, other]

        signed = asyncio.run(scenario())
    assert signer.handles(BLOB)
    assert not signer.handles("https://sentinel-cogs.s3.us-west-2.amazonaws.com/x.tif")
    assert [path for path, _ in server.token_requests] == [
        "/token/sentinel2l2a01/sentinel2-l2",
        "/token/landsateuwest/landsat-c2",
    ]
    assert server.token_requests[0][1]["Ocp-Apim-Subscription-Key"] == "sub-key"
    assert signed[0].href == f"{BLOB}?st=2024&se=x&sp=rl&sv=2021&sr=c&skoid=t1&sig=token1"
    assert signed[10].href.endswith("B08.tif?st=2024&se=x&sp=rl&sv=2021&sr=c&skoid=t1&sig=token1")
    assert signed[11].href.endswith("SR_B4.TIF?st=2024&se=x&sp=rl&sv=2021&sr=c&skoid=t2&sig=token2")
    assert signed[0].signed
    assert signed[0].expires_at == pytest.approx(time.time() + 3600, abs=60)


def test_sas_tokens_are_refreshed_shortly_before_they_expire(tmp_path):
    with loopback_http(tmp_path) as server:
        server.token_lifetime = timedelta(minutes=4)  # inside the 5-minute margin
        signer = _signer(server.url)
        first = asyncio.run(signer.sign(BLOB))
        second = asyncio.run(signer.sign(BLOB))
        server.token_lifetime = timedelta(hours=1)
        third = asyncio.run(signer.sign(BLOB))
        fourth = asyncio.run(signer.sign(BLOB))
    assert len(server.token_requests) == 3
    assert first.href != second.href != third.href
    assert third.href == fourth.href


def test_sas_token_service_failure_is_asset_unavailable(tmp_path):
    with loopback_http(tmp_path) as server:
        server.token_status = 503
        signer = _signer(server.url)
        with pytest.raises(AssetUnavailable) as raised:
            asyncio.run(signer.sign(BLOB))
    assert raised.value.status_code == 502
    assert "sentinel2l2a01/sentinel2-l2" in raised.value.description
