"""The launch: both paths (util-linux execs, or the fork path's preexec_fn) drop to a host
uid and apply the same limits, and a killed run leaves nothing behind."""

from __future__ import annotations

import os
import time
import uuid

import psutil
import pytest

from sandbox import Runner
from tests.sandbox.conftest import FAST


def sandbox_host_uids_and_limits(runner: Runner) -> tuple[set[int], str]:
    """Real host uids of a live sandbox's processes, and the limits its interpreter sees."""
    code = (
        "import resource, sys\n"
        "print(resource.getrlimit(resource.RLIMIT_NPROC)[0], resource.getrlimit(resource.RLIMIT_NOFILE)[0],"
        " resource.getrlimit(resource.RLIMIT_AS)[0] // 2**20, resource.getrlimit(resource.RLIMIT_CPU)[0])\n"
        "sys.stdin.read()\n"  # stays alive, blocked, until the host closes stdin
    )
    box = runner._spawn(["-c", code], False)
    try:
        outer = psutil.Process(box.proc.pid)
        deadline = time.monotonic() + 20
        while len(outer.children(recursive=True)) < 2:  # bwrap's init and the interpreter
            assert time.monotonic() < deadline, "the sandbox did not start"
            time.sleep(0.01)
        uids = {p.uids().real for p in [outer, *outer.children(recursive=True)]}
    finally:
        result = runner._collect(box, b"", 10)
    assert result.exit_code == 0, result
    return uids, result.stdout.strip()


@pytest.mark.parametrize("launch", ["util-linux", "fork"])
def test_both_launch_paths_drop_to_a_host_uid_and_apply_limits(launch):
    runner = Runner(FAST, warm_pool=0)
    if launch == "fork":
        runner._launchers = None  # as on a host without prlimit/setpriv
    elif runner._launchers is None:
        pytest.skip("util-linux prlimit/setpriv not installed")
    uids, limits = sandbox_host_uids_and_limits(runner)
    if os.geteuid() == 0:
        assert len(uids) == 1 and 0 not in uids, uids  # one unprivileged uid for the whole tree
    assert limits == f"{FAST.max_processes} {FAST.max_open_files} {FAST.memory_mb} {FAST.cpu_s}"




def test_nothing_of_a_killed_run_outlives_the_call():
    # the wall-clock kill used to SIGKILL bwrap first, and the namespace died after the call
    # had returned: a dying process of the run could still be listed for a moment
    runner = Runner(FAST.model_copy(update={"wall_timeout_s": 1.0}), warm_pool=0)
    for _ in range(5):
        marker = uuid.uuid4().hex[:15]
        code = (
            f"open('/proc/self/comm', 'w').write('{marker}')\n"  # threads inherit the name
            "import threading\n"
            "def spin():\n    while True:\n        pass\n"
            "for _ in range(16):\n    threading.Thread(target=spin).start()\n"
        )
        result = runner.run_python(["-c", code])
        assert result.timed_out, result
        left = [p.info for p in psutil.process_iter(["pid", "name", "status"]) if p.info["name"] == marker]
        assert not left, left
