"""Fail-closed without bubblewrap; explicit unsafe mode runs and warns once."""

from __future__ import annotations

import logging
import shutil
import tempfile
from pathlib import Path

import pytest

import sandbox.runner as runner_mod
from sandbox import PythonTestsSpec, Runner, SandboxLimits, SandboxUnavailable, verify

SPEC = PythonTestsSpec(type="python_tests", format="stdio", cases=[{"input": "", "output": "hi\n"}])
CODE = "```python\nprint('hi')\n```"


def test_refuses_without_bwrap():
    runner = Runner(SandboxLimits(), bwrap="/nonexistent/bwrap")
    with pytest.raises(SandboxUnavailable, match="not installed"):
        runner.run_python(["-c", "print(1)"])
    result = verify(SPEC, CODE, runner=runner)
    assert result.verdict == "error" and "refusing" in result.feedback


def test_refuses_when_bwrap_cannot_isolate():
    # a stand-in bwrap that fails like one without user namespaces; world-readable, since
    # the runner drops to an unprivileged uid before starting it
    folder = Path(tempfile.mkdtemp(dir="/var/tmp"))
    try:
        folder.chmod(0o755)
        fake = folder / "bwrap"
        fake.write_text("#!/bin/sh\necho 'bwrap: No permissions to creating new namespace' >&2\nexit 1\n")
        fake.chmod(0o755)
        with pytest.raises(SandboxUnavailable, match="cannot create its namespaces"):
            Runner(SandboxLimits(), bwrap=str(fake)).run_python(["-c", "print(1)"])
    finally:
        shutil.rmtree(folder)


def test_unsafe_mode_runs_and_warns_once(caplog, monkeypatch):
    monkeypatch.setattr(runner_mod, "_UNSAFE_WARNED", False)
    runner = Runner(SandboxLimits(mode="unsafe", wall_timeout_s=10), bwrap="/nonexistent/bwrap")
    with caplog.at_level(logging.WARNING, logger="sandbox.runner"):
        assert verify(SPEC, CODE, runner=runner).verdict == "pass"
        assert verify(SPEC, CODE, runner=runner).verdict == "pass"
    warnings = [r for r in caplog.records if "UNSAFE" in r.getMessage()]
    assert len(warnings) == 1


def test_unsafe_mode_still_times_out():
    runner = Runner(SandboxLimits(mode="unsafe", wall_timeout_s=2))
    result = runner.run_python(["-c", "import time\ntime.sleep(30)"])
    assert result.timed_out and result.wall_s < 6
