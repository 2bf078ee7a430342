"""The warm pool: a sandbox started ahead of time is as isolated as a fresh one, serves
exactly one attempt, and survives the thread that asked for it."""

from __future__ import annotations

import os
import signal
import threading
import time
import uuid

import pytest

from sandbox import PythonTestsSpec, Runner, verify
from sandbox.harness import run_tests
from tests.sandbox.conftest import FAST

OK_SPEC = PythonTestsSpec(type="python_tests", format="stdio", cases=[{"input": "2 3\n", "output": "5\n"}], time_limit_s=2)
OK_CODE = "```python\na, b = map(int, input().split())\nprint(a + b)\n```"


def wait_for_pool(runner: Runner, size: int) -> None:
    # the spares are started by a background thread; waiting for them is set-up, not a claim
    deadline = time.monotonic() + 30
    while len(runner._pool) < size:
        assert time.monotonic() < deadline, f"warm pool never reached {size}"
        time.sleep(0.02)


@pytest.fixture
def pooled():
    runner = Runner(FAST, warm_pool=2)
    yield runner
    runner.close()


def stdio_output(runner: Runner, code: str) -> str:
    spec = PythonTestsSpec(type="python_tests", format="stdio", cases=[{"input": "", "output": ""}], time_limit_s=3)
    result = run_tests(runner, spec, code)
    assert result.cases, result
    return result.cases[0].output or ""


def test_warm_sandbox_serves_one_attempt(pooled):
    marker = f"leftover-{uuid.uuid4().hex}"
    first = (
        "import os, subprocess, sys\n"
        f"open('/tmp/{marker}', 'w').write('x')\n"
        f"open('/sandbox/{marker}', 'w').write('x')\n"
        f"subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)', '{marker}'])\n"
        "print(os.getpid())\n"
    )
    stdio_output(pooled, first)
    wait_for_pool(pooled, 2)
    second = (
        "import os\n"
        f"print(os.path.exists('/tmp/{marker}'), os.path.exists('/sandbox/{marker}'))\n"
        "mine = []\n"
        "for pid in os.listdir('/proc'):\n"
        "    if pid.isdigit():\n"
        "        try:\n"
        "            mine.append(open(f'/proc/{pid}/cmdline', 'rb').read())\n"
        "        except OSError:\n"
        "            pass\n"
        f"print(any(b'{marker}' in c for c in mine))\n"
    )
    assert stdio_output(pooled, second).split() == ["False", "False", "False"]


def test_spares_outlive_the_thread_that_asked(pooled):
    # --die-with-parent is PR_SET_PDEATHSIG, tied to the starting *thread*: spares started
    # from a short-lived worker thread used to be killed when it ended
    worker = threading.Thread(target=lambda: verify(OK_SPEC, OK_CODE, runner=pooled))
    worker.start()
    worker.join()
    wait_for_pool(pooled, 2)
    time.sleep(0.2)  # room for a parent-death signal to land, if one were coming
    assert all(box.proc.poll() is None for box in list(pooled._pool))
    for _ in range(3):
        assert verify(OK_SPEC, OK_CODE, runner=pooled).verdict == "pass"


def test_a_spare_killed_from_outside_is_not_used(pooled):
    verify(OK_SPEC, OK_CODE, runner=pooled)
    wait_for_pool(pooled, 2)
    for box in list(pooled._pool):
        os.killpg(box.proc.pid, signal.SIGKILL)
        box.proc.wait()
    assert verify(OK_SPEC, OK_CODE, runner=pooled).verdict == "pass"


def test_close_kills_the_spares(pooled):
    verify(OK_SPEC, OK_CODE, runner=pooled)
    wait_for_pool(pooled, 2)
    boxes = list(pooled._pool)
    pooled.close()
    assert not pooled._pool
    assert all(box.proc.returncode is not None for box in boxes)
    assert verify(OK_SPEC, OK_CODE, runner=pooled).verdict == "pass"  # still usable


def test_large_stdin_arrives_whole(pooled):
    # stdin goes through a pipe now: more than its 64 KiB buffer must still arrive in full
    text = "x" * 1_000_000
    spec = PythonTestsSpec(
        type="python_tests", format="stdio", cases=[{"input": text + "\n", "output": "1000000\n"}], time_limit_s=5
    )
    assert verify(spec, "```python\nprint(len(input()))\n```", runner=pooled).verdict == "pass"


def test_a_forked_child_starts_its_own_spares(pooled):
    verify(OK_SPEC, OK_CODE, runner=pooled)
    wait_for_pool(pooled, 2)
    pid = os.fork()
    if pid == 0:  # the child: the parent's spares are not its own; it must still verify
        ok = not pooled._pool and verify(OK_SPEC, OK_CODE, runner=pooled).verdict == "pass"
        os._exit(0 if ok else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert all(box.proc.poll() is None for box in list(pooled._pool))  # the parent's are untouched
