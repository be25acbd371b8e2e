"""The spec pages' curl and JavaScript examples, run as written against a live server.

Only the host, the key and the scene id are replaced (the spec's scene is not in the
demo catalogue). The Python examples run in test_e2e_clients.py and test_assets.py.
curl and Node.js (18+, for `fetch` and top-level `await` in a module) are part of
the machine the tests run on; without them these tests are skipped, loudly.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

SPEC_HOST = "https://astraos.cloud/api/v1"
SPEC_KEY = "astra_sk_live_your_key_here"
SPEC_SCENE = "sentinel-2:S2B_MSIL2A_20250115T184929"
LIVE_SCENE = "sentinel-2:S2A_MSIL2A_20220217T183431_N0510_R027_T13VEK_20240516T022440"

# spec/scene-details-api.txt, "JavaScript" (scene_detail.js), as written.
SCENE_DETAIL_JS = """
const sceneId = "sentinel-2:S2B_MSIL2A_20250115T184929";
const res = await fetch(
`https://astraos.cloud/api/v1/scenes/${sceneId}`,
{
headers: { Authorization: "Bearer astra_sk_live_your_key_here" },
}
);
const scene = await res.json();
console.log("Platform:", scene.properties.platform);
console.log("Cloud cover:", scene.properties["eo:cloud_cover"] + "%");
console.log("Available bands:", Object.keys(scene.assets));
"""

# spec/asset-resolver-api.txt, "JavaScript" (assets_example.js), as written.
ASSETS_JS = """
const params = new URLSearchParams({
scene_id: "sentinel-2:S2B_MSIL2A_20250115T184929",
bands: "red,nir",
format: "cog",
});
const res = await fetch(`https://astraos.cloud/api/v1/assets?${params}`, {
headers: { Authorization: "Bearer astra_sk_live_your_key_here" },
});
const data = await res.json();
Object.entries(data.assets).forEach(([band, asset]) => {
console.log(`${band}: ${asset.href}`);
});
"""

# spec/scene-details-api.txt and spec/asset-resolver-api.txt, "cURL", as written.
SCENE_DETAIL_CURL = [
    "curl",
    "https://astraos.cloud/api/v1/scenes/sentinel-2:S2B_MSIL2A_20250115T184929",
    "-H",
    "Authorization: Bearer astra_sk_live_your_key_here",
]
ASSETS_CURL = [
    "curl",
    "https://astraos.cloud/api/v1/assets?"
    "scene_id=sentinel-2:S2B_MSIL2A_20250115T184929&bands=red,nir&format=cog",
    "-H",
    "Authorization: Bearer astra_sk_live_your_key_here",
]


def _live(text: str, live_server) -> str:
    return (
        text.replace(SPEC_HOST, live_server.url)
        .replace(SPEC_KEY, live_server.key)
        .replace(SPEC_SCENE, LIVE_SCENE)
    )


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.skip(f"{name} is not installed on this machine")
    return path


def _run_module(source: str, tmp_path: Path) -> list[str]:
    script = tmp_path / "example.mjs"
    script.write_text(source)
    done = subprocess.run(
        [_tool("node"), str(script)], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.splitlines()


def test_scene_details_javascript_example(live_server, tmp_path):
    printed = _run_module(_live(SCENE_DETAIL_JS, live_server), tmp_path)
    assert printed[0] == "Platform: sentinel-2a"
    assert printed[1].startswith("Cloud cover: ") and printed[1].endswith("%")
    assert printed[1] != "Cloud cover: undefined%"
    # console.log spreads a long array over several lines
    assert printed[2].startswith("Available bands: [")
    assert "'B04_10m'" in " ".join(printed[2:]) and printed[-1].endswith("]")


def test_asset_resolver_javascript_example(live_server, tmp_path):
    printed = _run_module(_live(ASSETS_JS, live_server), tmp_path)
    assert [line.split(": ", 1)[0] for line in printed] == ["B04", "B08"]
    for line in printed:
        assert line.split(": ", 1)[1].startswith("http://127.0.0.1:")
        assert "sig=" in line


def _curl(command: list[str], live_server) -> dict:
    argv = [_tool("curl"), "--silent", "--show-error", "--fail"]
    argv += [_live(part, live_server) for part in command[1:]]
    done = subprocess.run(argv, capture_output=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    body: dict = json.loads(done.stdout)
    return body


def test_scene_details_curl_example(live_server):
    scene = _curl(SCENE_DETAIL_CURL, live_server)
    assert scene["type"] == "Feature"
    assert scene["id"] == LIVE_SCENE
    assert scene["properties"]["astra:provider"] == "copernicus"


def test_asset_resolver_curl_example(live_server, tmp_path):
    body = _curl(ASSETS_CURL, live_server)
    assert body["scene_id"] == LIVE_SCENE and body["format"] == "cog"
    assert set(body["assets"]) == {"B04", "B08"}
    red = body["assets"]["B04"]
    downloaded = tmp_path / "red_band.tif"
    done = subprocess.run(
        [_tool("curl"), "--silent", "--fail", "-o", str(downloaded), red["href"]],
        timeout=60,
        check=False,
    )
    assert done.returncode == 0
    assert downloaded.stat().st_size == red["file:size"]
