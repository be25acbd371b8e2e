"""docker-compose.yml cannot run here (no Docker engine): check what can be checked."""

from __future__ import annotations

import re
from pathlib import Path

import yaml
from pydantic_settings import BaseSettings

import astra_stac.app  # noqa: F401  (imports every settings class)

ROOT = Path(__file__).resolve().parents[1]


def _subclasses(cls: type) -> list[type]:
    found = []
    for sub in cls.__subclasses__():
        found += [sub, *_subclasses(sub)]
    return found


def _settings_env_names() -> set[str]:
    """Every environment variable an astra_stac settings class reads."""
    names = set()
    for cls in _subclasses(BaseSettings):
        if not cls.__module__.startswith("astra_stac"):
            continue
        prefix = cls.model_config.get("env_prefix", "")
        names |= {f"{prefix}{field}".upper() for field in cls.model_fields}
    return names


def test_compose_has_the_database_the_store_and_the_api_with_health_checks():
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    assert {"database", "storage", "api"} <= set(services)
    assert "postgis" in services["database"]["image"]
    for service in services.values():
        assert "healthcheck" in service
    for dependency in ("database", "storage"):
        assert services["api"]["depends_on"][dependency]["condition"] == "service_healthy"
    assert int(services["api"]["environment"]["ASTRA_WORKERS"].split(":-")[1].rstrip("}")) > 1
    assert services["api"]["ports"] == ["${ASTRA_PORT:-8080}:8080"]


def test_compose_environment_names_are_settings_the_app_reads():
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    known = _settings_env_names()
    for name in compose["services"]["api"]["environment"]:
        assert name in known, f"{name} is not a setting astra-stac reads"


def test_compose_hard_codes_no_secret():
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    for service in compose["services"].values():
        for name, value in (service.get("environment") or {}).items():
            if any(word in name for word in ("PASSWORD", "SECRET", "SIGNING_KEY")):
                assert str(value).startswith("${"), f"{name} is hard-coded"
    dsn = compose["services"]["api"]["environment"]["ASTRA_DATABASE_URL"]
    assert ":${POSTGRES_PASSWORD:?" in dsn


def test_env_example_names_every_required_variable():
    text = (ROOT / "docker-compose.yml").read_text()
    required = set(re.findall(r"\$\{([A-Z_]+):\?", text))
    example = (ROOT / ".env.example").read_text()
    documented = set(re.findall(r"^([A-Z_]+)=", example, flags=re.M))
    assert required <= documented, required - documented


def test_readme_settings_table_names_real_settings():
    readme = (ROOT / "README.md").read_text()
    documented = set(re.findall(r"`(ASTRA_[A-Z_]+)`", readme))
    known = _settings_env_names() | {"ASTRA_MIGRATIONS_DIR", "ASTRA_PG_BINDIR"}
    unknown = {name for name in documented if name not in known and not name.endswith("_")}
    assert not unknown, f"README documents settings the app does not read: {unknown}"
