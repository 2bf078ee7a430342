"""The images' dependency lists: pinned like requirements.lock, closed, and sufficient."""

from __future__ import annotations

import importlib.metadata as md
import re
import tomllib

import httpx
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.deploy.conftest import ROOT, sandbox_distributions


def _lines(path) -> list[str]:
    return [l.split("#")[0].strip() for l in path.read_text().splitlines() if l.split("#")[0].strip()]


def _lock() -> dict[str, str]:
    return {canonicalize_name(n): v for n, v in (l.split("==") for l in _lines(ROOT / "requirements.lock"))}


def test_sandbox_requirements_are_the_locked_versions():
    lock = _lock()
    for line in _lines(ROOT / "docker" / "requirements-sandbox.txt"):
        name, _, version = line.partition("==")
        assert version, f"{line}: pin it (the image installs with --no-deps)"
        assert lock.get(canonicalize_name(name)) == version, f"{line}: requirements.lock has {lock.get(canonicalize_name(name))}"


def test_sandbox_requirements_are_closed_under_dependencies():
    # --no-deps installs exactly this list, so each listed distribution's own requirements
    # must be listed too (read from the installed metadata of the same versions)
    listed = sandbox_distributions()
    missing = {}
    for name in listed:
        for raw in md.distribution(name).requires or []:
            req = Requirement(raw)
            if req.marker and not req.marker.evaluate({"extra": ""}):
                continue
            if canonicalize_name(req.name) not in listed:
                missing.setdefault(name, []).append(req.name)
    assert missing == {}


def test_the_sandbox_server_runs_on_its_image_packages_alone(sandbox_server):
    # the server was started with every distribution outside requirements-sandbox.txt blocked
    # from import (conftest._GUARD); it must still verify code in bubblewrap and do maths
    health = httpx.get(sandbox_server.url + "/healthz", timeout=30).json()
    assert health["isolation"] is True, health
    code = "```python\ndef add(a, b):\n    return a + b\n```"
    wrong = "```python\ndef add(a, b):\n    return a - b\n```"
    spec = {"type": "python_tests", "format": "functional", "fn_name": "add",
            "cases": [{"input": "1\n2", "output": "3"}]}
    res = httpx.post(sandbox_server.url + "/v1/verify", json={"spec": spec, "responses": [code, wrong]}, timeout=120)
    assert res.status_code == 200, res.text
    assert [v["verdict"] for v in res.json()] == ["pass", "fail"]
    res = httpx.post(sandbox_server.url + "/v1/verify", timeout=120,
                     json={"spec": {"type": "math", "answer": "9"}, "responses": ["so \\boxed{9}", "\\boxed{8}"]})
    assert [v["verdict"] for v in res.json()] == ["pass", "fail"]


def test_the_import_guard_blocks_what_the_image_lacks():
    # the guard is what makes the test above mean something: a server that needs torch dies
    import subprocess
    import sys

    from tests.deploy.conftest import _GUARD

    out = subprocess.run([sys.executable, "-c", _GUARD.replace("from service.cli import main\nmain()", "import torch"),
                          ",".join(sandbox_distributions())], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert out.returncode != 0 and "torch is not in the sandbox image" in out.stderr


def _gpu_file() -> tuple[list[str], set[str]]:
    text = (ROOT / "docker" / "requirements-gpu.txt").read_text()
    from_base = set(re.search(r"^# provided by the base image: (.+)$", text, re.M).group(1).split())
    return _lines(ROOT / "docker" / "requirements-gpu.txt"), {canonicalize_name(n) for n in from_base}


def test_gpu_requirements_cover_every_runtime_dependency():
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    lines, from_base = _gpu_file()
    listed = {canonicalize_name(Requirement(l).name) for l in lines}
    uncovered = sorted(canonicalize_name(Requirement(d).name) for d in deps)
    uncovered = [n for n in uncovered if n not in listed and n not in from_base]
    assert uncovered == [], f"pyproject dependencies the GPU image would lack: {uncovered}"
    assert not listed & from_base


def test_gpu_pins_are_the_locked_versions():
    lock = _lock()
    for line in _gpu_file()[0]:
        req = Requirement(line)
        pins = [s.version for s in req.specifier if s.operator == "=="]
        if pins:
            assert lock[canonicalize_name(req.name)] == pins[0], line
        else:
            assert req.specifier.contains(lock[canonicalize_name(req.name)]), f"{line} excludes the locked version"
