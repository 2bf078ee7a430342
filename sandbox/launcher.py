"""Starting one sandbox process under its rlimits and uid, and killing its whole tree.

How it is started: `prlimit <limits> -- setpriv <uid> -- bwrap ...` (util-linux), so that
`subprocess` can use vfork. The alternative, a `preexec_fn` plus `user=`, forces a full
fork() of the calling process: measured 2.4 ms of CPU per run from a small process and
68 ms (157 ms of latency) from one holding 3 GB, as a worker with a model does. Where
util-linux's prlimit or setpriv is missing, the launch falls back to that fork path. Both
paths apply the same table, `rlimits()`.
"""

from __future__ import annotations

import os
import resource
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

from sandbox.limits import MIB, SandboxLimits
from sandbox.uid_pool import UID_POOL

PY_FLAGS = ("-I", "-S", "-B", "-X", "utf8")


class Rlimit(NamedTuple):
    option: str  # prlimit's name for it
    resource: int  # the `resource` module's
    soft: int
    hard: int


def rlimits(limits: SandboxLimits) -> list[Rlimit]:
    """Every rlimit a run gets, in the order both launch paths set them."""
    mem, fsize, files = limits.memory_mb * MIB, limits.max_file_mb * MIB, limits.max_open_files
    table = [
        # the soft limit sends SIGXCPU (reported as a time-out), the hard one a second later SIGKILL
        Rlimit("cpu", resource.RLIMIT_CPU, limits.cpu_s, limits.cpu_s + 1),
        Rlimit("as", resource.RLIMIT_AS, mem, mem),
        Rlimit("fsize", resource.RLIMIT_FSIZE, fsize, fsize),
        Rlimit("nofile", resource.RLIMIT_NOFILE, files, files),
        Rlimit("core", resource.RLIMIT_CORE, 0, 0),
    ]
    if limits.mode == "bwrap":
        # unsafe mode keeps the caller's uid, whose own processes would count against it
        table.append(Rlimit("nproc", resource.RLIMIT_NPROC, limits.max_processes, limits.max_processes))
    return table


def find_launchers() -> tuple[str, str] | None:
    """util-linux's (prlimit, setpriv), which let the launch use vfork; None: the fork path."""
    prlimit, setpriv = shutil.which("prlimit"), shutil.which("setpriv")
    return (prlimit, setpriv) if prlimit and setpriv else None


def launch_argv(table: list[Rlimit], launchers: tuple[str, str], uid: int | None) -> list[str]:
    """`prlimit ... -- [setpriv ... --]`: the limits and uid switch of `preexec`, as execs."""
    prlimit, setpriv = launchers
    argv = [prlimit, *(f"--{r.option}={r.soft}:{r.hard}" for r in table), "--"]
    if uid is not None:
        argv += [setpriv, f"--reuid={uid}", f"--regid={uid}", "--clear-groups", "--"]
    return argv


def preexec(table: list[Rlimit]) -> Callable[[], None]:
    def apply() -> None:
        # Runs in the child after the uid switch, before exec: only async-safe setrlimit calls.
        for r in table:
            resource.setrlimit(r.resource, (r.soft, r.hard))

    return apply


@dataclass
class Sandbox:
    """One started sandbox (bwrap and its interpreter), used for at most one run."""

    proc: subprocess.Popen[bytes]
    chan_r: int | None
    uid: int | None
    tmpdir: tempfile.TemporaryDirectory[str] | None  # unsafe mode's work dir
    bwrap: bool  # isolated (mode "bwrap"), as opposed to unsafe

    def discard(self) -> None:
        """Kills the tree if it still runs, reaps it, frees its fds, work dir and uid. Idempotent."""
        if self.proc.returncode is None:
            kill_tree(self.proc, self.bwrap)
            self.proc.wait()
        for stream in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            if stream is not None:
                try:
                    stream.close()
                except OSError:
                    pass  # stdin whose reader is gone: nothing left to flush
        if self.chan_r is not None:
            os.close(self.chan_r)
            self.chan_r = None
        if self.tmpdir is not None:
            self.tmpdir.cleanup()
            self.tmpdir = None
        if self.uid is not None:
            # only now: the kernel counts the tree against this uid's RLIMIT_NPROC until reaped
            UID_POOL.release(self.uid)
            self.uid = None


def start(
    interpreter: list[str],
    args: list[str],
    *,
    channel: bool,
    limits: SandboxLimits,
    uid: int | None,
    launchers: tuple[str, str] | None,
    inherit_fd: int | None = None,
) -> Sandbox:
    """Starts `interpreter` (bwrap's argv, or in unsafe mode the bare python) on `args`; it
    blocks on its stdin until fed. The sandbox owns `uid` from here on (a failed start
    releases it at once). With `channel`, the write end of a pipe is inherited and its fd
    number appended to `args`. `inherit_fd` (bwrap's `--seccomp` pipe) is inherited too, and
    closed here once the child has it, or on a failed start."""
    isolated = limits.mode == "bwrap"
    chan_r = chan_w = -1
    tmpdir: tempfile.TemporaryDirectory[str] | None = None
    try:
        if channel:
            chan_r, chan_w = os.pipe()
            args = [*args, str(chan_w)]
        argv = [*interpreter, *PY_FLAGS, *args]
        if isolated:
            env = {"PATH": "/usr/bin:/bin"}
            cwd = "/"
        else:
            tmpdir = tempfile.TemporaryDirectory(prefix="tta-unsafe-")
            env = {"PATH": "/usr/bin:/bin", "HOME": tmpdir.name, "LANG": "C.UTF-8"}
            cwd = tmpdir.name
        table = rlimits(limits)
        if launchers is not None:
            argv = [*launch_argv(table, launchers, uid), *argv]
            # no preexec_fn and no user=: subprocess takes its vfork path
            identity: dict[str, Any] = {}
        else:
            identity = {
                "user": uid,
                "group": uid,
                "extra_groups": [] if uid is not None else None,
                "preexec_fn": preexec(table),
            }
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            pass_fds=((chan_w,) if channel else ()) + ((inherit_fd,) if inherit_fd is not None else ()),
            env=env,
            cwd=cwd,
            start_new_session=True,
            **identity,
        )
    except BaseException:
        for fd in (chan_r, chan_w, -1 if inherit_fd is None else inherit_fd):
            if fd >= 0:
                os.close(fd)
        if tmpdir is not None:
            tmpdir.cleanup()
        if uid is not None:
            UID_POOL.release(uid)
        raise
    if channel:
        os.close(chan_w)
    if inherit_fd is not None:
        os.close(inherit_fd)
    return Sandbox(proc, chan_r if channel else None, uid, tmpdir, isolated)


def kill_tree(proc: subprocess.Popen[bytes], bwrap: bool) -> None:
    """SIGKILLs the run's whole tree; with `bwrap`, returns once all of it is reaped.

    The namespace's pid 1 (bwrap's only child) is killed first: the kernel then kills and
    reaps every process of the pid namespace before pid 1 exits, and bwrap exits once it
    has reaped pid 1, so reaping bwrap means nothing of the run is left. Killing bwrap
    first (its process group: it leads one, start_new_session) also ends the namespace,
    via --die-with-parent, but after bwrap is gone, so for a moment the caller would
    return while the code's processes still exist. The group kill stays as the fallback
    (no /proc children list, or bwrap not exiting). In unsafe mode a child that called
    setsid() escapes the group kill; that mode promises no containment."""
    if proc.returncode is not None:
        return  # reaped: its pid may already belong to another process
    children = _children(proc.pid) if bwrap else []
    for child in children:
        try:
            os.kill(child, signal.SIGKILL)
        except ProcessLookupError:
            pass
    if children:
        try:
            proc.wait(timeout=2.0)
            return
        except subprocess.TimeoutExpired:
            pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children", encoding="ascii") as f:
            return [int(c) for c in f.read().split()]
    except (OSError, ValueError):
        return []
