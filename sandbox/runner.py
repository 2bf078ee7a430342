"""Isolated execution of one Python process: bubblewrap namespaces, rlimits, timeouts, output caps.

What a run gets (mode "bwrap"):
  * new user, pid, net, ipc, uts, cgroup and mount namespaces (`--unshare-all`); no
    network interface but loopback, so nothing on the host or beyond is reachable;
  * a root made of read-only binds of the system directories (/usr and the /bin,
    /lib* links) and of the Python runtime's prefix with its site-packages masked;
    nothing else of the host: no /etc, /root, /home, /work, /var, host /tmp;
  * a fresh /proc of its own pid namespace (other processes are invisible), a
    minimal /dev, and private size-capped tmpfs at /tmp and at the work dir /sandbox.
    Where the kernel refuses a fresh procfs (a container whose /proc has masked paths:
    Docker's default, which only `--security-opt systempaths=unconfined` lifts), the run
    gets an empty /proc instead: it sees no process at all, itself included;
  * an empty environment except PATH, HOME, LANG;
  * rlimits: CPU seconds, address space, processes, file size, open files, no core;
  * when the runner is root, the whole tree runs as an unprivileged uid drawn from a
    small pool (one uid per concurrent run), so RLIMIT_NPROC is enforced (the kernel
    exempts uid 0 from it) and a namespace escape would land as nobody, not root;
  * a wall-clock limit: the namespace's pid 1 is SIGKILLed, which takes every process
    of the pid namespace with it, and the call returns once bwrap has reaped it
    (`--die-with-parent` and a group kill of bwrap are the fallbacks; see launcher.kill_tree).

Where the parts live: the uid pool (uid_pool.py), the Python runtime the sandbox binds
(staging.py), bwrap's command line (bwrap.py), the launch under rlimits and the tree kill
(launcher.py), the I/O pump and the RunResult (pump.py), and the sandboxes started ahead
of time for `run_python(..., warm=True)` (warm_pool.py: each serves ONE run and is then
killed; the wall clock starts at hand-over).

Nested user namespaces are forbidden (`--disable-userns`; where /proc/sys is read-only, as in
a Docker container, seccomp.py's filter instead).

Not guaranteed: protection against kernel exploits (no seccomp filter beyond that one);
CPU/memory fairness between concurrent runs (no cgroups); that two *processes*
using runners at once draw distinct uids (the pool is per Python process).
Mode "unsafe" applies the rlimits and the timeout but isolates NOTHING.
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
import threading
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import overload

from sandbox.bwrap import bwrap_argv
from sandbox.errors import SandboxUnavailable
from sandbox.launcher import Sandbox, find_launchers, start
from sandbox.limits import SandboxLimits
from sandbox.pump import RunResult, collect
from sandbox.seccomp import SeccompUnavailable, filter_fd, no_new_userns_filter
from sandbox.staging import runtime_bind
from sandbox.uid_pool import UID_POOL
from sandbox.warm_pool import WarmPool, reclaim_idle

__all__ = ["RunResult", "Runner"]

log = logging.getLogger(__name__)

_UNSAFE_WARNED = False
_WARN_LOCK = threading.Lock()


def _warn_unsafe_once() -> None:
    global _UNSAFE_WARNED
    with _WARN_LOCK:
        if not _UNSAFE_WARNED:
            _UNSAFE_WARNED = True
            log.warning(
                "SANDBOX MODE IS UNSAFE: model-written code runs WITHOUT isolation "
                "(host filesystem, network and environment are reachable). Never use this "
                "outside a throwaway development machine."
            )


class Runner:
    """Runs a Python interpreter under the configured isolation.

    Thread-safe: `run_python` may be called from several threads at once (each
    run is its own process tree). One probe of bubblewrap happens on first use;
    if it fails every later call raises `SandboxUnavailable` too.
    """

    def __init__(
        self,
        limits: SandboxLimits | None = None,
        *,
        bwrap: str = "bwrap",
        python: str | None = None,
        runtime_cache_dir: str | os.PathLike[str] = "/var/cache/tta-sandbox",
        warm_pool: int = 4,
    ) -> None:
        self.limits = limits or SandboxLimits()
        # How many sandboxes `run_python(..., warm=True)` keeps started and blocked on their
        # stdin, so that a run does not wait for namespace set-up and interpreter start.
        self.warm_pool = warm_pool
        self._pool = WarmPool()
        self._bwrap = bwrap
        self._python = Path(os.path.realpath(python or sys.executable))
        self._runtime_cache_dir = Path(runtime_cache_dir)
        self._probe_lock = threading.Lock()
        self._probe_error: str | None = None
        self._probed = False
        # False once the probe found that this kernel will not mount a procfs for the sandbox
        self.fresh_proc = True
        # True once the probe found /proc/sys read-only: seccomp.py's filter replaces --disable-userns
        self.seccomp_userns = False
        self._runtime: tuple[Path, Path] | None = None  # (source on host, destination in sandbox)
        self._launchers = find_launchers()

    def run_python(
        self,
        args: Sequence[str],
        *,
        stdin: bytes = b"",
        channel: bool = False,
        wall_timeout_s: float | None = None,
        warm: bool = False,
    ) -> RunResult:
        """Run `python -I -S -B <args>` isolated; `stdin` is written to the process's stdin pipe.

        With `channel=True` a pipe is opened whose write end the process inherits;
        its fd number is appended to `args`, and what is written to it comes back
        in `RunResult.channel` (capped at `limits.channel_cap_bytes`). `wall_timeout_s`
        may only shorten `limits.wall_timeout_s` for this run.
        With `warm=True` the run may take a sandbox that was started ahead of time for
        the same `args` and `channel` (see `warm_pool`), and starts the next one. Each
        sandbox, warm or not, serves exactly one run and is then killed.
        Raises SandboxUnavailable when isolation cannot be provided (mode "bwrap").
        """
        limits = self.limits
        if limits.mode == "unsafe":
            _warn_unsafe_once()
        else:
            self._ensure_bwrap()
        wall = limits.wall_timeout_s if wall_timeout_s is None else min(wall_timeout_s, limits.wall_timeout_s)
        key = (tuple(args), channel)
        pooled = warm and self.warm_pool > 0
        box = self._pool.take(key) if pooled else None
        if pooled:
            self._pool.refill(key, self.warm_pool, partial(self._spawn, spare=True))
        if box is None:
            box = self._spawn(list(args), channel)
        return self._collect(box, stdin, wall)

    def close(self) -> None:
        """Kills the sandboxes kept warm (they have run nothing). The runner stays usable."""
        self._pool.close()

    def _ensure_bwrap(self) -> None:
        with self._probe_lock:
            if not self._probed:
                self._probe_error = self._probe()
                self._probed = True
        if self._probe_error is not None:
            raise SandboxUnavailable(self._probe_error)

    def _probe(self) -> str | None:
        """Returns why bwrap cannot isolate, or None when it can."""
        if shutil.which(self._bwrap) is None:
            return (
                f"bubblewrap ({self._bwrap!r}) is not installed; refusing to run untrusted code. "
                "Install bubblewrap, or set TTA_SANDBOX=unsafe on a throwaway machine."
            )
        try:
            result = self._collect(self._spawn(["-c", "print('ok')"], False), b"", self.limits.wall_timeout_s)
            # Docker's defaults (masked /proc paths, a read-only /proc/sys) refuse two of
            # bwrap's steps; each has a fallback that keeps its guarantee, tried one at a time.
            for _ in range(2):
                if result.exit_code != 0 and "Can't mount proc" in result.stderr and self.fresh_proc:
                    # The kernel mounts no new procfs over masked paths. An empty /proc hides
                    # every process, which is stricter; it costs only code that reads /proc/self.
                    self.fresh_proc = False
                    log.warning("bubblewrap cannot mount a fresh /proc here (%s); sandboxed runs get an empty /proc",
                                result.stderr.strip()[:200])
                elif result.exit_code != 0 and "max_user_namespaces" in result.stderr and not self.seccomp_userns:
                    # --disable-userns writes /proc/sys/user/max_user_namespaces; a seccomp
                    # filter forbids nested user namespaces instead (seccomp.py).
                    try:
                        no_new_userns_filter()
                    except SeccompUnavailable as exc:
                        return f"bubblewrap cannot disable nested user namespaces here ({result.stderr.strip()[:200]}), and {exc}"
                    self.seccomp_userns = True
                    log.warning("bubblewrap cannot set max_user_namespaces here (%s); a seccomp filter forbids "
                                "nested user namespaces instead", result.stderr.strip()[:200])
                else:
                    break
                result = self._collect(self._spawn(["-c", "print('ok')"], False), b"", self.limits.wall_timeout_s)
        except OSError as exc:
            return f"bubblewrap could not be started: {exc}"
        if result.exit_code != 0 or result.stdout.strip() != "ok":
            return f"bubblewrap cannot create its namespaces here (exit {result.exit_code}): {result.stderr.strip()[:500]}"
        return None

    @overload
    def _spawn(self, args: list[str], channel: bool) -> Sandbox: ...
    @overload
    def _spawn(self, args: list[str], channel: bool, *, spare: bool) -> Sandbox | None: ...

    def _spawn(self, args: list[str], channel: bool, *, spare: bool = False) -> Sandbox | None:
        """Starts the sandboxed interpreter; it blocks on its stdin until `_collect` feeds it.

        A `spare` (a warm-pool start) takes a uid only if one is free, and else returns None:
        uids held by idle sandboxes must never make a real run wait."""
        lim = self.limits
        if lim.mode == "bwrap" and self._runtime is None:
            self._runtime = runtime_bind(self._python, self._runtime_cache_dir)
        uid: int | None = None
        if lim.mode == "bwrap" and os.geteuid() == 0:
            uid = UID_POOL.try_acquire(keep_free=16) if spare else UID_POOL.acquire(reclaim=reclaim_idle)
            if uid is None:
                return None
        # the filter's pipe is made last, after the uid: start() owns both from here on
        try:
            seccomp_fd = filter_fd() if lim.mode == "bwrap" and self.seccomp_userns else None
        except BaseException:
            if uid is not None:
                UID_POOL.release(uid)
            raise
        if lim.mode == "bwrap" and self._runtime is not None:
            interpreter = bwrap_argv(self._bwrap, self._python, self._runtime, lim.tmpfs_mb, self.fresh_proc, seccomp_fd)
        else:
            interpreter = [str(self._python)]
        return start(interpreter, args, channel=channel, limits=lim, uid=uid, launchers=self._launchers,
                     inherit_fd=seccomp_fd)

    def _collect(self, box: Sandbox, stdin: bytes, wall_s: float) -> RunResult:
        return collect(box, self.limits, stdin, wall_s)
