"""Hostile programs: each must be contained, and the runner must still work afterwards."""

from __future__ import annotations

import os
import socket
import threading
import uuid
from pathlib import Path

import psutil
import pytest

from sandbox import PythonTestsSpec, Runner, verify
from tests.sandbox import attacks

OK_SPEC = PythonTestsSpec(type="python_tests", format="stdio", cases=[{"input": "2 3\n", "output": "5\n"}], time_limit_s=2)
OK_CODE = "```python\na, b = map(int, input().split())\nprint(a + b)\n```"


def still_works(runner: Runner) -> None:
    result = verify(OK_SPEC, OK_CODE, runner=runner)
    assert result.verdict == "pass", result


def no_survivors(marker: str) -> None:
    survivors = attacks.survivors(marker)
    assert not survivors, survivors


def run(runner: Runner, code: str):
    return runner.run_python(["-c", code])


def test_fork_bomb(runner):
    marker = f"forkbomb-{uuid.uuid4().hex}"
    result = run(runner, attacks.fork_bomb(marker))
    assert result.timed_out
    no_survivors(marker)
    still_works(runner)


def test_process_limit_applies(runner):
    result = run(runner, attacks.process_limit())
    assert int(result.stdout.split()[0]) < 32
    still_works(runner)


def test_memory_bomb(runner):
    spec = PythonTestsSpec(type="python_tests", format="stdio", cases=[{"input": "", "output": "x"}], time_limit_s=3)
    result = verify(spec, f"```python\n{attacks.memory_bomb()}```", runner=runner)
    assert result.verdict == "fail" and result.kind == "memory", result
    assert "Memory Limit Exceeded" in result.feedback
    still_works(runner)


def test_infinite_loop(runner):
    spec = PythonTestsSpec(type="python_tests", format="stdio", cases=[{"input": "", "output": "x"}], time_limit_s=1)
    result = verify(spec, f"```python\n{attacks.infinite_loop()}```", runner=runner)
    assert result.kind == "timeout" and "Time Limit Exceeded" in result.feedback
    still_works(runner)


def test_busy_threads(runner):
    marker = f"threads-{uuid.uuid4().hex}"
    result = run(runner, attacks.busy_threads(marker))
    assert result.timed_out or result.killed_by_signal is not None
    no_survivors(marker)
    still_works(runner)


def test_sleep_past_timeout(runner):
    result = run(runner, attacks.sleep_past_timeout())
    assert result.timed_out and result.wall_s < 10
    still_works(runner)


def test_background_children_do_not_survive(runner):
    marker = f"orphan-{uuid.uuid4().hex}"
    result = run(runner, attacks.background_children(marker))
    assert "parent done" in result.stdout
    no_survivors(marker)
    still_works(runner)


def test_no_network_egress(runner):
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    listener.settimeout(0.5)
    port = listener.getsockname()[1]
    result = run(runner, attacks.network_egress([6379, port]))
    assert "CONNECTED" not in result.stdout and "RESOLVED" not in result.stdout, result.stdout
    assert result.stdout.count("blocked") == 2
    with pytest.raises(socket.timeout):
        listener.accept()
    listener.close()
    still_works(runner)


def test_cannot_write_outside_workdir(runner):
    name = f"pwned_{uuid.uuid4().hex}"
    targets = [f"/tmp/{name}", f"/work/main/{name}", f"/root/{name}", f"/usr/{name}"]
    result = run(runner, attacks.write_outside(targets))
    assert "workdir ok" in result.stdout, result
    for path in targets:
        assert not Path(path).exists(), path
    still_works(runner)


def test_environment_secret_not_visible(runner, monkeypatch):
    secret = f"s3cr3t-{uuid.uuid4().hex}"
    monkeypatch.setenv("TTA_TEST_SECRET", secret)
    result = run(runner, attacks.read_environment())
    assert result.exit_code == 0, result
    assert secret not in result.stdout and secret not in result.stderr


def test_proc_of_other_processes_not_readable(runner):
    me = os.getpid()
    result = run(runner, attacks.read_other_proc(me))
    pids = eval(result.stdout.split("pids ", 1)[1].split("\n", 1)[0])  # noqa: S307 - our own test output
    assert max(pids) < 100 and me not in pids  # a fresh pid namespace: only the sandbox's few processes
    assert "pytest" not in result.stdout and "TTA_" not in result.stdout
    still_works(runner)


def test_huge_stdout_is_capped(runner):
    result = run(runner, attacks.huge_stdout())
    assert result.truncated
    assert len(result.stdout) < runner.limits.output_cap_bytes + 200
    assert "output truncated" in result.stdout
    still_works(runner)


def test_huge_file_is_limited(runner):
    result = run(runner, attacks.huge_file())
    assert "stopped 27" in result.stdout, result  # EFBIG
    still_works(runner)


def test_deep_recursion(runner):
    spec = PythonTestsSpec(type="python_tests", format="functional", fn_name="f", cases=[{"input": [1], "output": 1}])
    result = verify(spec, f"```python\n{attacks.deep_recursion()}```", runner=runner)
    # 3.11 keeps Python-to-Python calls off the C stack: this ends in memory, crash or time limit
    assert result.verdict == "fail" and result.kind in {"runtime_error", "memory", "timeout"}, result
    plain = verify(spec, f"```python\n{attacks.deep_recursion(raise_limit=False)}```", runner=runner)
    assert plain.kind == "runtime_error" and "RecursionError" in plain.feedback
    still_works(runner)


def test_signalling_the_parent(runner):
    for code in attacks.SIGNAL_PARENT:
        run(runner, code)
        assert psutil.Process(os.getpid()).is_running()
    still_works(runner)


def test_exhausting_file_descriptors(runner):
    result = run(runner, attacks.exhaust_fds())
    assert "stopped at" in result.stdout and int(result.stdout.split()[2]) < runner.limits.max_open_files
    still_works(runner)


def test_forged_result_lines_do_not_pass(runner):
    spec = PythonTestsSpec(type="python_tests", format="stdio", cases=[{"input": "", "output": "42\n"}])
    forge = f"```python\n{attacks.forge_results()}```"
    result = verify(spec, forge, runner=runner)
    assert result.verdict == "fail"
    assert verify(spec, "```python\nimport os\nos._exit(0)\n```", runner=runner).verdict == "fail"
    hemi = PythonTestsSpec(type="python_tests", format="assert", tests="def check(c):\n    assert c() == 1\n", entry_point="g")
    assert verify(hemi, "```python\nimport sys\nsys.exit(0)\n```", runner=runner).verdict == "fail"
    assert verify(hemi, "```python\ndef g():\n    raise SystemExit(0)\n```", runner=runner).verdict == "fail"


def test_parallel_runs(runner):
    results: list[bool] = []

    def go() -> None:
        results.append(verify(OK_SPEC, OK_CODE, runner=runner).verdict == "pass")

    threads = [threading.Thread(target=go) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [True] * 4
