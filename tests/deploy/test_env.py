"""Every TTA_* name in the deployment files is a real settings field with a valid value, and
every ${VAR} the compose file reads is documented in .env.example."""

from __future__ import annotations

import re

import pytest

from service.settings import Settings
from tests.deploy.conftest import ROOT, parse_dockerfile

ASSIGN = re.compile(r"^\s*#?\s*([A-Z][A-Z0-9_]*)=(.*)$")
# Compose's own variables (read by `docker compose` itself, not by the compose file)
COMPOSE_OWN = {"COMPOSE_PROFILES", "COMPOSE_PROJECT_NAME", "COMPOSE_FILE"}


def _env_example() -> dict[str, str]:
    """Assignments in .env.example, the commented-out examples included (they are docs too)."""
    found = {}
    for line in (ROOT / ".env.example").read_text().splitlines():
        m = ASSIGN.match(line)
        if m and not line.lstrip("# ").startswith(("cp ", "e.g.")):
            found[m.group(1)] = m.group(2).strip()
    return found


def _compose_env(compose: dict) -> dict[str, str]:
    env = {}
    for svc in compose["services"].values():
        environment = svc.get("environment") or {}
        if isinstance(environment, list):
            environment = dict(e.split("=", 1) for e in environment)
        env.update({k: str(v) for k, v in environment.items()})
    return env


def _dockerfile_env() -> dict[str, str]:
    env = {}
    for name in ("cpu", "gpu", "sandbox"):
        for stage in parse_dockerfile(ROOT / "docker" / f"Dockerfile.{name}"):
            for inst in stage.all("ENV"):
                env.update(re.findall(r"(\w+)=(\S+)", inst.args))
    return env


def _field(name: str) -> str | None:
    prefix = Settings.model_config["env_prefix"]
    field = name[len(prefix):].lower() if name.startswith(prefix) else None
    return field if field in Settings.model_fields else None


def _interpolated(compose_text: str) -> set[str]:
    # ${VAR}, ${VAR:-default}, ${VAR:?error}; `$${...}` is an escape for the container's shell
    return set(re.findall(r"(?<!\$)\$\{([A-Z][A-Z0-9_]*)", compose_text))


def test_env_parsers_see_the_files(compose):
    assert "TTA_API_KEYS" in _env_example() and "TTA_REDIS_URL" in _env_example()
    assert "TTA_SANDBOX_URL" in _compose_env(compose) and "TTA_CACHE_DIR" in _dockerfile_env()
    assert _field("TTA_MODEL") == "model" and _field("TTA_NO_SUCH_THING") is None and _field("MODEL") is None


def test_every_tta_name_is_a_settings_field(compose):
    names = {**_env_example(), **_compose_env(compose), **_dockerfile_env()}
    text = (ROOT / "docker-compose.yml").read_text()
    tta_names = {n for n in [*names, *_interpolated(text)] if n.startswith("TTA_")}
    unknown = sorted(n for n in tta_names if _field(n) is None)
    assert unknown == [], f"not fields of service/settings.py: {unknown}"


@pytest.mark.parametrize("source", ["env.example", "compose", "dockerfiles"])
def test_tta_values_are_valid_settings(compose, source):
    values = {"env.example": _env_example, "compose": lambda: _compose_env(compose), "dockerfiles": _dockerfile_env}[source]()
    fields = {}
    for name, value in values.items():
        field = _field(name)
        if field and "${" not in value:
            fields[field] = value
    assert fields
    Settings.model_validate(fields)  # raises on e.g. TTA_ENGINE=vlm or TTA_LEASE_S=soon


def test_every_compose_variable_is_documented_in_env_example():
    text = (ROOT / "docker-compose.yml").read_text()
    documented = set(_env_example())
    missing = sorted(_interpolated(text) - documented)
    assert missing == [], f"read by docker-compose.yml but not in .env.example: {missing}"
    unused = sorted(n for n in documented if not n.startswith("TTA_") and n not in COMPOSE_OWN and n not in _interpolated(text))
    assert unused == [], f"in .env.example but read by nothing: {unused}"


def test_compose_profiles_default_names_a_real_profile(compose):
    profiles = {p for svc in compose["services"].values() for p in svc.get("profiles", [])}
    assert set(_env_example()["COMPOSE_PROFILES"].split(",")) <= profiles
