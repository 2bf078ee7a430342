"""Fail-closed without bubblewrap; explicit unsafe mode runs and warns once."""

from __future__ import annotations

import errno
import logging
import os
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


# Docker's defaults refuse two of bwrap's steps, with these messages (seen in the Compose
# smoke test): masked /proc paths refuse a fresh procfs, and a read-only /proc/sys refuses
# --disable-userns. The stand-in fails the same way on the given flag and is the real bwrap
# otherwise; the run must still be isolated.
REFUSALS = {
    "--proc": "bwrap: Can't mount proc on /newroot/proc: Operation not permitted",
    "--disable-userns": "bwrap: cannot open /proc/sys/user/max_user_namespaces: Read-only file system",
}


@pytest.fixture
def docker_like_bwrap():
    """fake(*flags): a bwrap that refuses each of `flags` as Docker's defaults make it."""
    folder = Path(tempfile.mkdtemp(dir="/var/tmp"))  # the sandbox uid must reach it
    folder.chmod(0o755)

    def fake(*flags: str) -> str:
        path = folder / f"bwrap{len(list(folder.iterdir()))}"
        checks = "".join(f"  if [ \"$a\" = {f} ]; then echo \"{REFUSALS[f]}\" >&2; exit 1; fi\n" for f in flags)
        path.write_text(f"#!/bin/sh\nfor a in \"$@\"; do\n{checks}done\nexec {shutil.which('bwrap')} \"$@\"\n")
        path.chmod(0o755)
        return str(path)

    yield fake
    shutil.rmtree(folder)


@pytest.mark.skipif(shutil.which("bwrap") is None, reason="needs bubblewrap")
def test_empty_proc_where_the_kernel_refuses_a_fresh_one(caplog, docker_like_bwrap):
    runner = Runner(SandboxLimits(), bwrap=docker_like_bwrap("--proc"), warm_pool=0)
    with caplog.at_level(logging.WARNING, logger="sandbox.runner"):
        result = runner.run_python(["-c", "import os, socket; print(os.listdir('/proc'), socket.gethostname(), os.getuid())"])
    assert result.exit_code == 0, result.stderr
    assert result.stdout.split() == ["[]", "sandbox", "65534"]  # still in its own namespaces
    assert runner.fresh_proc is False and runner.seccomp_userns is False and "empty /proc" in caplog.text
    assert verify(SPEC, CODE, runner=runner).verdict == "pass"


@pytest.mark.skipif(shutil.which("bwrap") is None, reason="needs bubblewrap")
def test_a_fresh_proc_where_the_kernel_allows_one():
    runner = Runner(SandboxLimits(), warm_pool=0)
    result = runner.run_python(["-c", "import os; print(sorted(int(p) for p in os.listdir('/proc') if p.isdigit()))"])
    assert runner.fresh_proc is True and result.stdout.strip() in ("[1, 2]", "[1]", "[2]"), result.stdout


NESTED_USERNS = (
    "import ctypes, os\n"
    "libc = ctypes.CDLL(None, use_errno=True)\n"
    "rc = libc.unshare(0x10000000)  # CLONE_NEWUSER\n"
    "print(rc, ctypes.get_errno(), os.getuid())\n"
)


@pytest.mark.skipif(shutil.which("bwrap") is None, reason="needs bubblewrap")
def test_nested_user_namespaces_are_refused():
    result = Runner(SandboxLimits(), warm_pool=0).run_python(["-c", NESTED_USERNS])
    rc, err, uid = result.stdout.split()
    assert (rc, uid) == ("-1", "65534") and int(err) in (errno.EPERM, errno.ENOSPC, errno.EUSERS), result.stdout


@pytest.mark.skipif(shutil.which("bwrap") is None, reason="needs bubblewrap")
def test_seccomp_forbids_nested_user_namespaces_where_proc_sys_is_read_only(caplog, docker_like_bwrap):
    runner = Runner(SandboxLimits(), bwrap=docker_like_bwrap("--proc", "--disable-userns"), warm_pool=0)
    with caplog.at_level(logging.WARNING, logger="sandbox.runner"):
        result = runner.run_python(["-c", NESTED_USERNS])
    fds = len(os.listdir("/proc/self/fd"))
    assert runner.seccomp_userns is True and runner.fresh_proc is False and "seccomp filter" in caplog.text
    assert result.stdout.split() == ["-1", str(errno.EPERM), "65534"], result.stderr
    # threads and subprocesses (clone without CLONE_NEWUSER; clone3 falls back) still work
    ok = runner.run_python(["-c", "import subprocess, sys, threading\n"
                            "t = threading.Thread(target=print, args=('thread',)); t.start(); t.join()\n"
                            "print(subprocess.run([sys.executable, '-c', 'print(7)'], capture_output=True).stdout.decode().strip())\n"])
    assert ok.stdout.split() == ["thread", "7"], ok.stderr
    assert verify(SPEC, CODE, runner=runner).verdict == "pass"
    assert len(os.listdir("/proc/self/fd")) == fds  # each start's filter pipe is closed
