"""The Compose stack for real (scripts/compose_smoke.sh): opt-in, it builds images and runs
containers for half an hour. `TTA_COMPOSE_SMOKE=1 pytest tests/deploy/test_compose_smoke.py`
(add `TTA_COMPOSE_SMOKE_ARGS=--local-bases` on a host with no image registry); needs root and
Docker. What is always checked: the scripts parse and the driver needs nothing but the
standard library, since it runs with the host's bare python3."""

from __future__ import annotations

import ast
import os
import shlex
import subprocess
import sys

import pytest

from tests.deploy.conftest import ROOT

SCRIPTS = ROOT / "scripts"


@pytest.mark.parametrize("script", ["compose_up.sh", "compose_smoke.sh"])
def test_shell_scripts_parse(script):
    r = subprocess.run(["bash", "-n", str(SCRIPTS / script)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def test_compose_up_refuses_an_unknown_option_before_touching_docker():
    r = subprocess.run(["bash", str(SCRIPTS / "compose_up.sh"), "--profile", "tpu"], capture_output=True, text=True)
    assert r.returncode == 2 and "cpu or gpu" in r.stderr


def test_smoke_driver_imports_only_the_standard_library():
    tree = ast.parse((SCRIPTS / "compose_smoke.py").read_text())
    top = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    top |= {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    assert top and top - {"__future__"} <= set(sys.stdlib_module_names), top - set(sys.stdlib_module_names)


@pytest.mark.skipif(os.environ.get("TTA_COMPOSE_SMOKE") != "1", reason="opt-in: TTA_COMPOSE_SMOKE=1 (builds and runs the stack)")
def test_the_stack_as_deployed():
    args = shlex.split(os.environ.get("TTA_COMPOSE_SMOKE_ARGS", ""))
    r = subprocess.run(["bash", str(SCRIPTS / "compose_smoke.sh"), *args], cwd=ROOT, timeout=3 * 3600)
    assert r.returncode == 0
