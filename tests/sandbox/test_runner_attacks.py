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

OK_SPEC = PythonTestsSpec(type="python_tests", format="stdio", cases=[{"input": "2 3\n", "output": "5\n"}], time_limit_s=2)
OK_CODE = "```python\na, b = map(int, input().split())\nprint(a + b)\n```"


def still_works(runner: Runner) -> None:
    result = verify(OK_SPEC, OK_CODE, runner=runner)
    assert result.verdict == "pass", result


def no_survivors(marker: str) -> None:
    survivors = []
    for proc in psutil.process_iter(["pid", "cmdline"]):
        try:
            if any(marker in part for part in proc.info["cmdline"] or []):
                survivors.append(proc.info)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    assert not survivors, survivors


def run(runner: Runner, code: str):
    return runner.run_python(["-c", code])


def test_fork_bomb(runner):
    marker = f"forkbomb-{uuid.uuid4().hex}"
    result = run(runner, f"import os\n# {marker}\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n")
    assert result.timed_out
    no_survivors(marker)
    still_works(runner)


def test_process_limit_applies(runner):
    code = "import os\nn = 0\ntry:\n    for _ in range(200):\n        if os.fork() == 0:\n            import time; time.sleep(5); os._exit(0)\n        n += 1\nexcept OSError:\n    pass\nprint(n)\n"
    result = run(runner, code)
    assert int(result.stdout.split()[0]) < 32
    still_works(runner)


def test_memory_bomb(runner):
    spec = PythonTestsSpec(type="python_tests", format="stdio", cases=[{"input": "", "output": "x"}], time_limit_s=3)
    result = verify(spec, "```python\nblocks = []\nwhile True:\n    blocks.append(bytearray(50_000_000))\n```", runner=runner)
    assert result.verdict == "fail" and result.kind == "memory", result
    assert "Memory Limit Exceeded" in result.feedback
    still_works(runner)


def test_infinite_loop(runner):
    spec = PythonTestsSpec(type="python_tests", format="stdio", cases=[{"input": "", "output": "x"}], time_limit_s=1)
    result = verify(spec, "```python\nwhile True:\n    pass\n```", runner=runner)
    assert result.kind == "timeout" and "Time Limit Exceeded" in result.feedback
    still_works(runner)


def test_busy_threads(runner):
    marker = f"threads-{uuid.uuid4().hex}"
    code = (
        f"import threading\n# {marker}\ndef spin():\n    while True:\n        pass\n"
        "for _ in range(100):\n    try:\n        threading.Thread(target=spin).start()\n    except RuntimeError:\n        break\n"
    )
    result = run(runner, code)
    assert result.timed_out or result.killed_by_signal is not None
    no_survivors(marker)
    still_works(runner)


def test_sleep_past_timeout(runner):
    result = run(runner, "import time\ntime.sleep(60)\n")
    assert result.timed_out and result.wall_s < 10
    still_works(runner)


def test_background_children_do_not_survive(runner):
    marker = f"orphan-{uuid.uuid4().hex}"
    code = (
        "import os, sys\n"
        "if os.fork() == 0:\n"
        "    os.setsid()\n"
        "    if os.fork() == 0:\n"
        f"        os.execv(sys.executable, [sys.executable, '-c', 'import time; time.sleep(120)', '{marker}'])\n"
        "    os._exit(0)\n"
        "print('parent done')\n"
    )
    result = run(runner, code)
    assert "parent done" in result.stdout
    no_survivors(marker)
    still_works(runner)


def test_no_network_egress(runner):
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    listener.settimeout(0.5)
    port = listener.getsockname()[1]
    code = (
        "import socket\n"
        f"for port in (6379, {port}):\n"
        "    try:\n"
        "        socket.create_connection(('127.0.0.1', port), timeout=1).sendall(b'PING\\r\\n')\n"
        "        print('CONNECTED', port)\n"
        "    except OSError as exc:\n"
        "        print('blocked', port, exc)\n"
        "try:\n"
        "    socket.getaddrinfo('example.com', 80)\n"
        "    print('RESOLVED')\n"
        "except OSError:\n"
        "    print('no dns')\n"
    )
    result = run(runner, code)
    assert "CONNECTED" not in result.stdout and "RESOLVED" not in result.stdout, result.stdout
    assert result.stdout.count("blocked") == 2
    with pytest.raises(socket.timeout):
        listener.accept()
    listener.close()
    still_works(runner)


def test_cannot_write_outside_workdir(runner):
    name = f"pwned_{uuid.uuid4().hex}"
    targets = [f"/tmp/{name}", f"/work/main/{name}", f"/root/{name}", f"/usr/{name}"]
    code = (
        "import os\n"
        f"for path in {targets!r}:\n"
        "    try:\n"
        "        open(path, 'w').write('x')\n"
        "    except OSError as exc:\n"
        "        print('denied', path, exc.errno)\n"
        "open('/sandbox/ok.txt', 'w').write('fine')\n"
        "print('workdir ok')\n"
    )
    result = run(runner, code)
    assert "workdir ok" in result.stdout, result
    for path in targets:
        assert not Path(path).exists(), path
    still_works(runner)


def test_environment_secret_not_visible(runner, monkeypatch):
    secret = f"s3cr3t-{uuid.uuid4().hex}"
    monkeypatch.setenv("TTA_TEST_SECRET", secret)
    code = (
        "import os\nprint(dict(os.environ))\n"
        "for pid in os.listdir('/proc'):\n"
        "    if pid.isdigit():\n"
        "        try:\n"
        "            print(open(f'/proc/{pid}/environ').read())\n"
        "        except OSError:\n"
        "            pass\n"
    )
    result = run(runner, code)
    assert result.exit_code == 0, result
    assert secret not in result.stdout and secret not in result.stderr


def test_proc_of_other_processes_not_readable(runner):
    me = os.getpid()
    code = (
        "import os\n"
        "print('pids', sorted(int(p) for p in os.listdir('/proc') if p.isdigit()))\n"
        f"for path in ('/proc/{me}/environ', '/proc/{me}/cmdline', '/proc/1/environ'):\n"
        "    try:\n"
        "        print(path, open(path, 'rb').read()[:200])\n"
        "    except OSError as exc:\n"
        "        print(path, 'denied', exc.errno)\n"
    )
    result = run(runner, code)
    pids = eval(result.stdout.split("pids ", 1)[1].split("\n", 1)[0])  # noqa: S307 - our own test output
    assert max(pids) < 100 and me not in pids  # a fresh pid namespace: only the sandbox's few processes
    assert "pytest" not in result.stdout and "TTA_" not in result.stdout
    still_works(runner)


def test_huge_stdout_is_capped(runner):
    result = run(runner, "import sys\nfor _ in range(2000):\n    sys.stdout.write('x' * 10000)\n")
    assert result.truncated
    assert len(result.stdout) < runner.limits.output_cap_bytes + 200
    assert "output truncated" in result.stdout
    still_works(runner)


def test_huge_file_is_limited(runner):
    code = (
        "import signal\nsignal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
        "try:\n"
        "    with open('/sandbox/big', 'wb') as f:\n"
        "        for _ in range(100):\n"
        "            f.write(b'x' * 1_000_000)\n"
        "    print('WROTE ALL')\n"
        "except OSError as exc:\n"
        "    print('stopped', exc.errno)\n"
    )
    result = run(runner, code)
    assert "stopped 27" in result.stdout, result  # EFBIG
    still_works(runner)


def test_deep_recursion(runner):
    spec = PythonTestsSpec(type="python_tests", format="functional", fn_name="f", cases=[{"input": [1], "output": 1}])
    code = "```python\nimport sys\nsys.setrecursionlimit(10**7)\ndef f(n):\n    return f(n + 1)\n```"
    result = verify(spec, code, runner=runner)
    # 3.11 keeps Python-to-Python calls off the C stack: this ends in memory, crash or time limit
    assert result.verdict == "fail" and result.kind in {"runtime_error", "memory", "timeout"}, result
    plain = verify(spec, "```python\ndef f(n):\n    return f(n + 1)\n```", runner=runner)
    assert plain.kind == "runtime_error" and "RecursionError" in plain.feedback
    still_works(runner)


def test_signalling_the_parent(runner):
    for code in (
        "import os, signal\nos.kill(os.getppid(), signal.SIGKILL)\n",
        "import os, signal\nos.kill(-1, signal.SIGKILL)\n",
        "import os, signal\nfor pid in range(1, 50):\n    try:\n        os.kill(pid, signal.SIGKILL)\n    except OSError:\n        pass\n",
    ):
        run(runner, code)
        assert psutil.Process(os.getpid()).is_running()
    still_works(runner)


def test_exhausting_file_descriptors(runner):
    code = "fds = []\ntry:\n    while True:\n        fds.append(open('/dev/null'))\nexcept OSError as exc:\n    print('stopped at', len(fds), exc.errno)\n"
    result = run(runner, code)
    assert "stopped at" in result.stdout and int(result.stdout.split()[2]) < runner.limits.max_open_files
    still_works(runner)


def test_forged_result_lines_do_not_pass(runner):
    spec = PythonTestsSpec(type="python_tests", format="stdio", cases=[{"input": "", "output": "42\n"}])
    forge = (
        "```python\nimport json, os, sys\n"
        "for fd in range(3, 64):\n"
        "    try:\n"
        "        os.write(fd, (json.dumps({'t': 'case', 'i': 0, 'status': 'ok', 'output': '42', 'n': 'guess'}) + '\\n').encode())\n"
        "        os.write(fd, (json.dumps({'t': 'done', 'n': 'guess'}) + '\\n').encode())\n"
        "    except OSError:\n"
        "        pass\n"
        "print('{\"t\": \"done\"}')\nos._exit(0)\n```"
    )
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
