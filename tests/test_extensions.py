"""The published `astra` fields schema matches what the API serves."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest

ROOT = Path(__file__).resolve().parents[1] / "extensions" / "astra"
SCHEMA = json.loads((ROOT / "json-schema" / "schema.json").read_text())


def test_the_example_scene_validates():
    jsonschema.validate(json.loads((ROOT / "examples" / "scene.json").read_text()), SCHEMA)


def test_every_served_item_validates(client, auth):
    features = client.get("/api/v1/search", params={"limit": 100}, headers=auth).json()["features"]
    assert features
    for feature in features:
        jsonschema.validate(feature, SCHEMA)
        scene = client.get(f"/api/v1/scenes/{feature['id']}", headers=auth).json()
        jsonschema.validate(scene, SCHEMA)


def test_the_schema_rejects_unscoped_ids():
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(
            {
                "type": "Feature",
                "id": "S2A_13TDE_20231008_0_L2A",
                "properties": {"astra:provider": "x", "astra:collection": "y"},
            },
            SCHEMA,
        )
