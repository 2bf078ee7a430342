"""The sandbox limit settings: their defaults are SandboxLimits' own, and an operator's
TTA_SANDBOX_* changes what a verification may use, in-process and in `tta sandbox serve`."""

from __future__ import annotations

import httpx
import pytest
from pydantic import ValidationError

from sandbox import PythonTestsSpec, SandboxLimits
from service.settings import Settings
from service.wiring import build_verifier
from tests.deploy.conftest import start_guarded_sandbox, stop

SPEC = PythonTestsSpec(type="python_tests", format="stdio", cases=[{"input": "", "output": "ok\n"}], time_limit_s=20)
ALLOCATE = "```python\nx = bytearray(256 * 2**20)\nprint('ok')\n```"  # fits the default 1024 MiB
BURN = (  # two CPU seconds, within the default 10
    "```python\nimport time\nt = time.process_time()\nwhile time.process_time() - t < 2:\n    pass\nprint('ok')\n```"
)
SLEEP = "```python\nimport time\ntime.sleep(4)\nprint('ok')\n```"  # within the default 30 s wall clock
VARIABLES = ("TTA_SANDBOX_CPU_S", "TTA_SANDBOX_MEMORY_MB", "TTA_SANDBOX_WALL_TIMEOUT_S", "TTA_SANDBOX_OUTPUT_CAP_BYTES")


@pytest.fixture(autouse=True)
def _operator_unset(monkeypatch):
    for name in (*VARIABLES, "TTA_SANDBOX", "TTA_SANDBOX_URL"):
        monkeypatch.delenv(name, raising=False)


def test_the_defaults_are_the_sandbox_limits_own():
    assert Settings().sandbox_limits == SandboxLimits()


def test_each_variable_sets_its_limit(monkeypatch):
    for name, value in zip(VARIABLES, ("7", "300", "12.5", "2048"), strict=True):
        monkeypatch.setenv(name, value)
    limits = Settings().sandbox_limits
    assert (limits.cpu_s, limits.memory_mb, limits.wall_timeout_s, limits.output_cap_bytes) == (7, 300, 12.5, 2048)


def test_a_value_outside_the_limits_bounds_is_refused_at_load(monkeypatch):
    monkeypatch.setenv("TTA_SANDBOX_MEMORY_MB", "8")  # SandboxLimits takes 64 MiB at least
    with pytest.raises(ValidationError, match="sandbox_memory_mb"):
        Settings()


@pytest.mark.parametrize(
    ("variable", "value", "code"),
    [("TTA_SANDBOX_MEMORY_MB", "128", ALLOCATE), ("TTA_SANDBOX_CPU_S", "1", BURN), ("TTA_SANDBOX_WALL_TIMEOUT_S", "2", SLEEP)],
    ids=["memory", "cpu", "wall-clock"],
)
def test_a_lowered_limit_fails_what_the_default_passes(monkeypatch, variable, value, code):
    assert build_verifier(Settings())(SPEC, [code], [False])[0].verdict == "pass"
    monkeypatch.setenv(variable, value)
    lowered = build_verifier(Settings())(SPEC, [code], [False])[0]
    assert lowered.verdict == "fail" and lowered.kind == ("memory" if code is ALLOCATE else "timeout"), lowered


def test_sandbox_serve_applies_the_memory_setting():
    server = start_guarded_sandbox({"TTA_SANDBOX_MEMORY_MB": "128"})
    try:
        body = {"spec": SPEC.model_dump(mode="json"), "responses": [ALLOCATE]}
        answer = httpx.post(server.url + "/v1/verify", json=body, timeout=120)
    finally:
        stop(server)
    assert answer.status_code == 200, answer.text
    assert [(v["verdict"], v["kind"]) for v in answer.json()] == [("fail", "memory")]
