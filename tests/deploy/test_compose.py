"""docker-compose.yml: valid Compose, and the services, networks and volumes as intended."""

from __future__ import annotations

import copy
import json
import re
from urllib.parse import urlsplit

import jsonschema
import pytest

from tests.deploy.conftest import (
    ROOT,
    dockerfile_of,
    enabled_services,
    parse_dockerfile,
)

PROFILES = ("gpu", "cpu")


def _errors(document: dict) -> list[str]:
    schema = json.loads((ROOT / "docker" / "compose-spec.json").read_text())
    validator = jsonschema.Draft7Validator(schema)
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(document)]


def test_compose_file_validates_against_the_compose_specification(compose):
    assert _errors(compose) == []


def test_the_schema_rejects_what_compose_rejects(compose):
    # the validator is not vacuous: a misspelt key and a wrong type are both caught
    broken = copy.deepcopy(compose)
    broken["services"]["redis"]["helthcheck"] = broken["services"]["redis"].pop("healthcheck")
    broken["services"]["worker"]["deploy"]["resources"]["reservations"]["devices"][0]["capabilities"] = "gpu"
    errors = _errors(broken)
    assert any("helthcheck" in e for e in errors)
    assert any("capabilities" in e for e in errors)


@pytest.mark.parametrize("profile", PROFILES)
def test_each_profile_is_a_whole_stack(compose, profile):
    services = enabled_services(compose, profile)
    roles = {"api": [], "worker": []}
    for name, svc in services.items():
        command = svc.get("command") or []
        if command[:1] == ["serve"]:
            roles["api"].append(name)
        elif command[:1] == ["worker"]:
            roles["worker"].append(name)
    assert {"redis", "sandbox"} <= services.keys()
    assert len(roles["api"]) == 1 and len(roles["worker"]) == 1, roles
    # every image of the stack comes from the profile's Dockerfile (or is redis)
    built = {dockerfile_of(services[n]) for n in roles["api"] + roles["worker"]}
    assert built == {profile}


def test_every_service_has_a_healthcheck(compose):
    for name, svc in compose["services"].items():
        check = svc.get("healthcheck") or {}
        assert check.get("test") and not check.get("disable"), name


def test_services_wait_for_healthy_dependencies(compose):
    for name, svc in compose["services"].items():
        for dep, cond in (svc.get("depends_on") or {}).items():
            assert cond == {"condition": "service_healthy"}, (name, dep)
            assert compose["services"][dep].get("healthcheck"), dep


def test_sandbox_sits_only_on_internal_networks_and_holds_nothing(compose):
    sandbox = compose["services"]["sandbox"]
    networks = sandbox["networks"]
    assert networks, "the sandbox must name its networks (else it joins `default`, which has egress)"
    for net in networks:
        assert compose["networks"][net].get("internal") is True, net
    assert "network_mode" not in sandbox and "ports" not in sandbox
    assert "env_file" not in sandbox and "volumes" not in sandbox
    assert set(sandbox.get("environment", {})) <= {"TTA_SANDBOX"}
    assert sandbox["environment"]["TTA_SANDBOX"] == "bwrap"


def test_sandbox_gets_what_bubblewrap_needs_and_no_more(compose):
    sandbox = compose["services"]["sandbox"]
    opts = set(sandbox["security_opt"])
    assert {"seccomp=unconfined", "apparmor=unconfined"} <= opts
    # systempaths=unconfined (a fresh /proc) is not needed: the runner falls back to an empty
    # one, and Compose v1 refuses the option ("invalid --security-opt 2")
    assert opts - {"seccomp=unconfined", "apparmor=unconfined"} == {"no-new-privileges:true"}
    assert not sandbox.get("privileged")
    assert sandbox["cap_drop"] == ["ALL"]
    assert set(sandbox["cap_add"]) <= {"SETUID", "SETGID", "KILL"} and sandbox["init"] is True
    assert sandbox.get("read_only") is True


@pytest.mark.parametrize("profile", PROFILES)
def test_workers_reach_the_sandbox_over_the_internal_network(compose, profile):
    services = enabled_services(compose, profile)
    sandbox = services["sandbox"]
    port = sandbox["command"][sandbox["command"].index("--port") + 1]
    for name, svc in services.items():
        if (svc.get("command") or [])[:1] != ["worker"]:
            continue
        url = urlsplit(svc["environment"]["TTA_SANDBOX_URL"])
        assert (url.hostname, str(url.port)) == ("sandbox", port), name
        assert set(svc["networks"]) & set(sandbox["networks"]), name
        assert svc["depends_on"]["sandbox"] == {"condition": "service_healthy"}


def _gpu_reservations(svc: dict) -> list[dict]:
    devices = (((svc.get("deploy") or {}).get("resources") or {}).get("reservations") or {}).get("devices") or []
    return [d for d in devices if "gpu" in d.get("capabilities", [])]


def test_gpu_worker_reserves_a_gpu_and_scales(compose):
    worker = compose["services"]["worker"]
    (gpu,) = _gpu_reservations(worker)
    assert gpu["driver"] == "nvidia" and str(gpu["count"]) == "1"
    assert "replicas" in worker["deploy"]
    assert worker["environment"]["TTA_ENGINE"] == "vllm"
    assert "container_name" not in worker  # a fixed name forbids replicas


def test_cpu_profile_needs_no_gpu(compose):
    for name, svc in enabled_services(compose, "cpu").items():
        assert not _gpu_reservations(svc), name
        assert "gpus" not in svc and svc.get("runtime") != "nvidia", name
        assert dockerfile_of(svc) != "gpu", name
        assert svc.get("environment", {}).get("TTA_DEVICE") != "cuda", name


def test_redis_is_persistent_and_checked(compose):
    redis = compose["services"]["redis"]
    command = " ".join(redis["command"])
    assert "--appendonly yes" in command
    assert "--maxmemory-policy noeviction" in command
    (mount,) = [v for v in redis["volumes"] if v.endswith(":/data")]
    assert mount.split(":")[0] in compose["volumes"]
    assert "ping" in " ".join(redis["healthcheck"]["test"])


@pytest.mark.parametrize("profile", PROFILES)
def test_workers_keep_the_model_cache_on_a_volume_at_their_cache_dir(compose, profile):
    for name, svc in enabled_services(compose, profile).items():
        if (svc.get("command") or [])[:1] != ["worker"]:
            continue
        env = {}
        for inst in parse_dockerfile(ROOT / svc["build"]["dockerfile"])[-1].all("ENV"):
            env.update(re.findall(r"(\w+)=(\S+)", inst.args))
        cache_dir = svc["environment"].get("TTA_CACHE_DIR", env["TTA_CACHE_DIR"])
        mounts = {v.split(":")[1]: v.split(":")[0] for v in svc["volumes"]}
        assert mounts.get(cache_dir) == "model-cache", name
        assert "model-cache" in compose["volumes"]


@pytest.mark.parametrize("profile", PROFILES)
def test_api_port_command_and_healthcheck_agree(compose, profile):
    for name, svc in enabled_services(compose, profile).items():
        command = svc.get("command") or []
        if command[:1] != ["serve"]:
            continue
        port = command[command.index("--port") + 1]
        assert "--no-worker" in command  # workers are their own services
        (publish,) = svc["ports"]
        assert publish.rsplit(":", 1)[1] == port
        assert f"127.0.0.1:{port}/readyz" in " ".join(svc["healthcheck"]["test"])


def test_the_file_is_one_that_compose_v1_reads_too():
    # Debian's docker-compose 1.29 (what `apt-get install docker-compose` gives, and what
    # scripts/compose_up.sh falls back to) refuses a top-level `name:` and cannot nest
    # ${...} inside a default: it passes `$${REDIS_PASSWORD@redis...}` through literally.
    text = (ROOT / "docker-compose.yml").read_text()
    assert not re.search(r"^name:", text, re.M), "top-level name: (set COMPOSE_PROJECT_NAME in .env instead)"
    nested = re.findall(r"\$\{[^}]*\$\{", text)
    assert nested == [], f"nested interpolation: {nested}"


def test_nesting_check_sees_nesting():
    assert re.findall(r"\$\{[^}]*\$\{", "url: ${A:-x${B}y}") and not re.findall(r"\$\{[^}]*\$\{", "${A} ${B:-c}")


def test_local_base_stand_ins_give_what_the_service_dockerfiles_use():
    # --local-bases hands these to the service Dockerfiles in place of python:…-slim and redis:…
    python = parse_dockerfile(ROOT / "docker" / "local" / "Dockerfile.python")
    redis = parse_dockerfile(ROOT / "docker" / "local" / "Dockerfile.redis")
    run = " ".join(i.args for i in python[-1].all("RUN"))
    assert "python3-venv" in run and "/usr/local/bin/python" in run and "ca-certificates" in run
    assert [i.args for i in redis[-1].all("WORKDIR")] == ["/data"] and "redis-server" in " ".join(
        i.args for i in redis[-1].all("RUN"))
    assert [i.args for i in redis[-1].all("USER")] == ["redis"]
