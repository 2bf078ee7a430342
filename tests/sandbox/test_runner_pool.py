"""The warm pool and the launch path: a sandbox started ahead of time is as isolated as a
fresh one, serves exactly one attempt, and survives the thread that asked for it."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
import uuid

import psutil
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


def test_driver_encodes_return_values_like_json():
    # the driver encodes with json's C encoder directly (no `import json` in the sandbox)
    spec = PythonTestsSpec(
        type="python_tests",
        format="functional",
        fn_name="f",
        cases=[
            {"input": [0], "output": json.dumps({"a": [1, 2.5, None, True, "é\n\"q\""], "b": [1, 2], "1": -0.0})},
            {"input": [1], "output": json.dumps("plain")},
            {"input": [2], "output": "[1e+300, 3]"},
        ],
        run_all_cases=True,
    )
    code = (
        "```python\n"
        "def f(i):\n"
        "    if i == 0:\n"
        "        return {'a': [1, 2.5, None, True, 'é\\n\"q\"'], 'b': (1, 2), 1: -0.0}\n"
        "    if i == 1:\n"
        "        return 'plain'\n"
        "    return [1e300, 3]\n"
        "```"
    )
    result = verify(spec, code, runner=Runner(FAST, warm_pool=0))
    assert result.verdict == "pass", result.feedback
    circular = "```python\ndef f(i):\n    x = []\n    x.append(x)\n    return x\n```"
    failed = verify(spec, circular, runner=Runner(FAST, warm_pool=0))
    assert failed.verdict == "fail" and failed.kind == "wrong_answer", failed


def test_candidate_code_is_compiled_as_plain_python():
    # found on a real output of the default model (fixture HumanEval/0#0): `import typing`
    # then `List[float]` must fail as it does under plain python, not pass because the
    # host's `from __future__ import annotations` leaked into the driver's compile()
    spec = PythonTestsSpec(
        type="python_tests", format="assert", tests="def check(c):\n    assert c() == 1\n", entry_point="f"
    )
    code = "```python\nimport typing\n\ndef f(x: List[int] = None) -> int:\n    return 1\n```"
    result = verify(spec, code, runner=Runner(FAST, warm_pool=0))
    assert result.kind == "runtime_error" and "NameError" in result.feedback, result


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
