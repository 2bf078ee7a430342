"""The deployment files, parsed once; a real `tta sandbox serve` restricted to the sandbox
image's packages. No Docker engine runs here, so these tests check what the files promise."""

from __future__ import annotations

import os
import re
import shlex
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILES = {name: ROOT / "docker" / f"Dockerfile.{name}" for name in ("cpu", "gpu", "sandbox")}


@dataclass
class Instruction:
    keyword: str  # upper case: FROM, COPY, ...
    args: str  # the rest of the (joined) line


@dataclass
class Stage:
    base: str  # FROM's image, ARG defaults substituted
    name: str | None
    instructions: list[Instruction] = field(default_factory=list)

    def all(self, keyword: str) -> list[Instruction]:
        return [i for i in self.instructions if i.keyword == keyword]


def parse_dockerfile(path: Path) -> list[Stage]:
    """Stages of a Dockerfile: continuation lines joined, comments dropped, ARG defaults
    declared before the first FROM substituted into FROM lines."""
    text = re.sub(r"\\\n", " ", path.read_text())
    global_args: dict[str, str] = {}
    stages: list[Stage] = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        keyword, _, args = line.partition(" ")
        keyword, args = keyword.upper(), args.strip()
        if keyword == "ARG" and not stages:
            name, _, default = args.partition("=")
            global_args[name] = default.strip('"')
        elif keyword == "FROM":
            image = re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: global_args.get(m.group(1) or m.group(2), m.group(0)), args)
            parts = image.split()
            name = parts[2] if len(parts) >= 3 and parts[1].upper() == "AS" else None
            stages.append(Stage(base=parts[0], name=name))
        elif stages:
            stages[-1].instructions.append(Instruction(keyword, args))
    return stages


def exec_form(args: str) -> list[str]:
    """ENTRYPOINT/CMD/HEALTHCHECK CMD arguments: JSON exec form, else shell words."""
    import json

    args = args.strip()
    return json.loads(args) if args.startswith("[") else shlex.split(args)


def copy_sources(instruction: Instruction) -> list[str]:
    """Sources of a COPY/ADD from the build context ([] for COPY --from=stage)."""
    words = shlex.split(instruction.args)
    if any(w.startswith("--from") for w in words):
        return []
    words = [w for w in words if not w.startswith("--")]
    return words[:-1]


@pytest.fixture(scope="session")
def compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


@pytest.fixture(scope="session")
def dockerfiles() -> dict[str, list[Stage]]:
    return {name: parse_dockerfile(path) for name, path in DOCKERFILES.items()}


def enabled_services(compose: dict, profile: str) -> dict[str, dict]:
    """The services `docker compose --profile PROFILE up` starts (no profile = always)."""
    return {n: s for n, s in compose["services"].items() if not s.get("profiles") or profile in s["profiles"]}


def dockerfile_of(service: dict) -> str:
    """Which of our Dockerfiles builds a service's image ('cpu', 'gpu', 'sandbox'), or ''."""
    build = service.get("build") or {}
    dockerfile = build.get("dockerfile", "") if isinstance(build, dict) else ""
    return dockerfile.removeprefix("docker/Dockerfile.") if dockerfile else ""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def sandbox_distributions() -> set[str]:
    from packaging.utils import canonicalize_name

    lines = (ROOT / "docker" / "requirements-sandbox.txt").read_text().splitlines()
    return {canonicalize_name(l.split("==")[0]) for l in lines if l.strip() and not l.startswith("#")}


# Runs `tta` in a child whose imports are limited to the standard library, the project's own
# `service` and `sandbox` packages and the distributions in docker/requirements-sandbox.txt:
# anything else raises ModuleNotFoundError, exactly as if it were not installed.
_GUARD = r"""
import importlib.metadata as md, sys
from packaging.utils import canonicalize_name
allowed = set(sys.argv[1].split(","))
owners = md.packages_distributions()
own = {"service", "sandbox"}
class Guard:
    def find_spec(self, name, path=None, target=None):
        top = name.partition(".")[0]
        if top in sys.stdlib_module_names or top in own or top.startswith("_"):
            return None
        if any(canonicalize_name(d) in allowed for d in owners.get(top, [])):
            return None
        raise ModuleNotFoundError(f"{top} is not in the sandbox image", name=name)
sys.meta_path.insert(0, Guard())
sys.argv = ["tta", *sys.argv[2:]]
from service.cli import main
main()
"""


@dataclass
class SandboxServer:
    url: str
    proc: subprocess.Popen


def start_guarded_sandbox(env_extra: dict[str, str] | None = None) -> SandboxServer:
    port = _free_port()
    env = dict(os.environ, PYTHONPATH=str(ROOT), TTA_SANDBOX="bwrap", **(env_extra or {}))
    proc = subprocess.Popen(
        [sys.executable, "-c", _GUARD, ",".join(sorted(sandbox_distributions())),
         "sandbox", "serve", "--host", "127.0.0.1", "--port", str(port)],
        env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"the sandbox server exited {proc.returncode}:\n{proc.stdout.read()}")
        try:
            httpx.get(url + "/healthz", timeout=10).raise_for_status()
            return SandboxServer(url, proc)
        except httpx.HTTPError:
            time.sleep(0.3)
    proc.kill()
    raise AssertionError(f"the sandbox server did not answer:\n{proc.stdout.read()}")


def stop(server: SandboxServer) -> None:
    server.proc.terminate()
    try:
        server.proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        server.proc.kill()


@pytest.fixture(scope="module")
def sandbox_server():
    server = start_guarded_sandbox()
    yield server
    stop(server)
