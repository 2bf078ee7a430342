"""Isolated execution of one Python process: bubblewrap namespaces, rlimits, timeouts, output caps.

What a run gets (mode "bwrap"):
  * new user, pid, net, ipc, uts, cgroup and mount namespaces (`--unshare-all`); no
    network interface but loopback, so nothing on the host or beyond is reachable;
  * a root made of read-only binds of the system directories (/usr and the /bin,
    /lib* links) and of the Python runtime's prefix with its site-packages masked;
    nothing else of the host: no /etc, /root, /home, /work, /var, host /tmp;
  * a fresh /proc of its own pid namespace (other processes are invisible), a
    minimal /dev, and private size-capped tmpfs at /tmp and at the work dir /sandbox;
  * an empty environment except PATH, HOME, LANG;
  * rlimits: CPU seconds, address space, processes, file size, open files, no core;
  * when the runner is root, the whole tree runs as an unprivileged uid drawn from a
    small pool (one uid per concurrent run), so RLIMIT_NPROC is enforced (the kernel
    exempts uid 0 from it) and a namespace escape would land as nobody, not root;
  * a wall-clock limit: the namespace's pid 1 is SIGKILLed, which takes every process
    of the pid namespace with it, and the call returns once bwrap has reaped it
    (`--die-with-parent` and a group kill of bwrap are the fallbacks; see _kill_tree).

How it is started: `prlimit <limits> -- setpriv <uid> -- bwrap ...` (util-linux), so that
`subprocess` can use vfork. The alternative, a `preexec_fn` plus `user=`, forces a full
fork() of the calling process: measured 2.4 ms of CPU per run from a small process and
68 ms (157 ms of latency) from one holding 3 GB, as a worker with a model does. Where
util-linux's prlimit or setpriv is missing, the runner falls back to that fork path.

Warm pool (`run_python(..., warm=True)`, used by the harness): a few sandboxes are started
ahead of time with the same argv, limits and uid switch, each blocked reading its stdin.
A run takes one, writes its input, and a replacement is started in the background, so
namespace set-up and interpreter start-up (about two thirds of an attempt's latency,
mostly waiting rather than CPU) leave the critical path. Each sandbox serves ONE run and
is then killed; nothing is reused across attempts. The wall clock starts at hand-over.

Not guaranteed: protection against kernel exploits (no seccomp filter is loaded);
CPU/memory fairness between concurrent runs (no cgroups); that two *processes*
using runners at once draw distinct uids (the pool is per Python process).
Mode "unsafe" applies the rlimits and the timeout but isolates NOTHING.
"""

from __future__ import annotations

import collections
import hashlib
import logging
import os
import queue
import resource
import selectors
import shutil
import signal
import stat
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, overload

from sandbox.errors import SandboxUnavailable
from sandbox.limits import SandboxLimits

log = logging.getLogger(__name__)

WORKDIR = "/sandbox"
TRUNCATION_MARKER = "\n[... output truncated: {dropped} more bytes not shown ...]\n"
_MIB = 1024 * 1024
# Stdlib parts untrusted code never needs; left out of a staged runtime copy.
_STAGE_SKIP = {"site-packages", "test", "idlelib", "tkinter", "turtledemo", "ensurepip", "lib2to3", "__phello__"}


@dataclass(frozen=True)
class RunResult:
    """Outcome of one sandboxed process (a plain record, no behaviour)."""

    exit_code: int | None  # None when the process was killed by a signal
    stdout: str
    stderr: str
    timed_out: bool  # the wall clock ran out (or RLIMIT_CPU fired) and the tree was killed
    killed_by_signal: int | None
    memory_exceeded: bool  # a hint: MemoryError / allocation failure seen; not a measurement
    truncated: bool  # stdout, stderr or the channel lost bytes to the caps
    wall_s: float
    channel: bytes = b""  # the result channel's bytes (harness records), when requested


class _UidPool:
    """Hands out distinct unprivileged uids to concurrent runs of this process.

    First in, first out: a uid just released may still own processes that the kernel has
    not finished reaping, and they count against RLIMIT_NPROC of the next run with that
    uid. Rotating through the whole pool gives them time to go."""

    def __init__(self, first: int, size: int) -> None:
        self._free = collections.deque(range(first, first + size))
        self._cond = threading.Condition()

    def acquire(self) -> int:
        with self._cond:
            if self._free:
                return self._free.popleft()
        _reclaim_warm()  # idle warm sandboxes hold uids; a real run comes first
        with self._cond:
            while not self._free:
                self._cond.wait()
            return self._free.popleft()

    def try_acquire(self, keep_free: int) -> int | None:
        """A uid only while more than `keep_free` stay free (for spares, which must not starve runs)."""
        with self._cond:
            return self._free.popleft() if len(self._free) > keep_free else None

    def release(self, uid: int) -> None:
        with self._cond:
            self._free.append(uid)
            self._cond.notify()


# Host uids need no passwd entry. Each process takes its own block (by pid) so that two
# services on one host rarely share a uid, and with it a process limit.
_UID_POOL = _UidPool(first=200_000 + (os.getpid() % 4096) * 64, size=64)
_RUNNERS: weakref.WeakSet[Runner] = weakref.WeakSet()  # for _reclaim_warm
_UNSAFE_WARNED = False
_WARN_LOCK = threading.Lock()
_STAGE_LOCK = threading.Lock()


def _reclaim_warm() -> None:
    for runner in list(_RUNNERS):
        runner.close()


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


def _world_accessible(path: Path) -> bool:
    """True when every directory up to `path` is traversable by any uid and `path` is readable."""
    p = path
    while True:
        try:
            mode = p.stat().st_mode
        except OSError:
            return False
        if not mode & stat.S_IXOTH:
            return False
        if p == p.parent:
            return True
        p = p.parent


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
        self._pool: collections.deque[_Sandbox] = collections.deque()
        self._pool_key: tuple[tuple[str, ...], bool] | None = None
        self._pool_starting = 0
        self._pool_lock = threading.Lock()
        _RUNNERS.add(self)
        # a runner dropped without close() (e.g. evicted from a cache) still kills its spares
        weakref.finalize(self, _discard_all, self._pool)
        self._bwrap = bwrap
        self._python = Path(os.path.realpath(python or sys.executable))
        self._runtime_cache_dir = Path(runtime_cache_dir)
        self._probe_lock = threading.Lock()
        self._probe_error: str | None = None
        self._probed = False
        self._runtime_bind: tuple[Path, Path] | None = None  # (source on host, destination in sandbox)
        # util-linux helpers that let the launch use vfork (see the module doc); None: fork path
        prlimit, setpriv = shutil.which("prlimit"), shutil.which("setpriv")
        self._launchers: tuple[str, str] | None = (prlimit, setpriv) if prlimit and setpriv else None

    # ---- public -------------------------------------------------------------------------

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
        box = self._take_warm(key) if pooled else None
        if pooled:
            self._refill(key)
        if box is None:
            box = self._spawn(list(args), channel)
        return self._collect(box, stdin, wall)

    def close(self) -> None:
        """Kills the sandboxes kept warm (they have run nothing). The runner stays usable."""
        with self._pool_lock:
            boxes = list(self._pool)
            self._pool.clear()  # in place: the finalizer holds this very deque
        for box in boxes:
            box.discard()

    # ---- the warm pool ----------------------------------------------------------------------

    def _forget_pool(self) -> None:
        self._pool_lock = threading.Lock()  # a lock held by another thread at fork stays held
        self._pool.clear()
        self._pool_key = None
        self._pool_starting = 0

    def _take_warm(self, key: tuple[tuple[str, ...], bool]) -> _Sandbox | None:
        while True:
            with self._pool_lock:
                if self._pool_key != key or not self._pool:
                    return None
                box = self._pool.popleft()
            if box.proc.poll() is None:
                return box
            box.discard()  # died while waiting (killed from outside): never hand it out

    def _refill(self, key: tuple[tuple[str, ...], bool]) -> None:
        """Asks the spawner thread for sandboxes until `warm_pool` wait for `key`; a new key drops the old ones."""
        with self._pool_lock:
            stale: list[_Sandbox] = []
            if self._pool_key != key:
                stale, self._pool_key = list(self._pool), key
                self._pool.clear()
            missing = self.warm_pool - len(self._pool) - self._pool_starting
            self._pool_starting += max(missing, 0)
        for box in stale:
            box.discard()
        for _ in range(missing):
            _SPAWNER.submit(lambda: self._spawn_spare(key))

    def _spawn_spare(self, key: tuple[tuple[str, ...], bool]) -> None:
        box: _Sandbox | None = None
        try:
            box = self._spawn(list(key[0]), key[1], spare=True)
        except Exception:  # noqa: BLE001 - a spare is an optimisation; the run itself reports errors
            log.warning("could not start a warm sandbox", exc_info=True)
        with self._pool_lock:
            self._pool_starting -= 1
            if box is not None and self._pool_key == key:
                self._pool.append(box)
                return
        if box is not None:
            box.discard()

    # ---- set-up ---------------------------------------------------------------------------

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
        except OSError as exc:
            return f"bubblewrap could not be started: {exc}"
        if result.exit_code != 0 or result.stdout.strip() != "ok":
            return f"bubblewrap cannot create its namespaces here (exit {result.exit_code}): {result.stderr.strip()[:500]}"
        return None

    def _runtime(self) -> tuple[Path, Path]:
        """(host source, sandbox destination) of the Python prefix to bind, staging a copy if needed."""
        if self._runtime_bind is not None:
            return self._runtime_bind
        prefix = self._python.parent.parent
        if os.geteuid() != 0 or _world_accessible(prefix / "lib"):
            self._runtime_bind = (prefix, prefix)
        else:
            # The runtime lives where the sandbox uid cannot read it (e.g. under /root with
            # pyenv). Stage a world-readable copy once, hard-linked where possible.
            self._runtime_bind = (self._stage_runtime(prefix), prefix)
        return self._runtime_bind

    def _stage_runtime(self, prefix: Path) -> Path:
        version = f"{sys.version_info.major}.{sys.version_info.minor}"
        digest = hashlib.sha256(f"{prefix}\0{sys.version}".encode()).hexdigest()[:12]
        tag = f"python{version}-{digest}"
        dest = self._runtime_cache_dir / tag
        with _STAGE_LOCK:
            if (dest / ".complete").exists():
                return dest
            self._runtime_cache_dir.mkdir(parents=True, exist_ok=True)
            os.chmod(self._runtime_cache_dir, 0o755)
            tmp = Path(tempfile.mkdtemp(dir=self._runtime_cache_dir))
            os.chmod(tmp, 0o755)
            (tmp / "bin").mkdir(mode=0o755)
            _link_or_copy(self._python, tmp / "bin" / self._python.name)
            (tmp / "lib").mkdir(mode=0o755)
            libdir = prefix / "lib"
            for entry in libdir.iterdir():
                if entry.name.startswith("libpython") and entry.is_file():
                    _link_or_copy(entry, tmp / "lib" / entry.name)
            stdlib = Path(sysconfig.get_paths()["stdlib"])
            if stdlib.parent != libdir:
                raise SandboxUnavailable(f"unexpected Python layout: stdlib {stdlib} not under {libdir}")
            shutil.copytree(
                stdlib,
                tmp / "lib" / stdlib.name,
                ignore=lambda _d, names: [n for n in names if n in _STAGE_SKIP or n.startswith("config-")],
                copy_function=_link_or_copy,
                symlinks=True,
            )
            for root, dirs, _files in os.walk(tmp):
                for d in dirs:
                    os.chmod(os.path.join(root, d), 0o755)
            (tmp / ".complete").touch()
            if dest.exists():
                shutil.rmtree(dest)
            tmp.rename(dest)
            return dest

    def _bwrap_argv(self) -> list[str]:
        lim = self.limits
        src, dst = self._runtime()
        argv = [
            self._bwrap,
            "--unshare-all",
            "--unshare-user",
            "--disable-userns",
            "--uid", "65534", "--gid", "65534",
            "--hostname", "sandbox",
            "--die-with-parent",
            "--new-session",
            "--clearenv",
            "--setenv", "PATH", "/usr/bin:/bin",
            "--setenv", "HOME", WORKDIR,
            "--setenv", "LANG", "C.UTF-8",
            "--ro-bind", "/usr", "/usr",
        ]  # fmt: skip
        for top in ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"):
            if os.path.islink(top):
                argv += ["--symlink", os.readlink(top), top]
            elif os.path.isdir(top):
                argv += ["--ro-bind", top, top]
        if not str(dst).startswith("/usr/"):
            argv += ["--ro-bind", str(src), str(dst)]
            # the interpreter's own site-packages are not for untrusted code (-S already keeps
            # them off sys.path; masking them also keeps them unreadable)
            site = Path(sysconfig.get_paths()["stdlib"]) / "site-packages"
            if site.is_relative_to(dst) and (src / site.relative_to(dst)).exists():
                argv += ["--tmpfs", str(site)]
        size = str(lim.tmpfs_mb * _MIB)
        argv += [
            "--proc", "/proc",
            "--dev", "/dev",
            "--size", size, "--tmpfs", "/tmp",
            "--size", size, "--tmpfs", WORKDIR,
            "--chdir", WORKDIR,
            "--remount-ro", "/",
            str(dst / "bin" / self._python.name) if not str(dst).startswith("/usr/") else str(self._python),
        ]  # fmt: skip
        return argv

    # ---- execution ------------------------------------------------------------------------

    def _launch_argv(self, uid: int | None) -> list[str]:
        """`prlimit ... -- [setpriv ... --]`: the same limits and uid switch as `_preexec`, as execs."""
        assert self._launchers is not None
        prlimit, setpriv = self._launchers
        lim = self.limits
        argv = [
            prlimit,
            f"--cpu={lim.cpu_s}:{lim.cpu_s + 1}",
            f"--as={lim.memory_mb * _MIB}",
            f"--fsize={lim.max_file_mb * _MIB}",
            f"--nofile={lim.max_open_files}",
            "--core=0",
        ]
        if lim.mode == "bwrap":
            argv.append(f"--nproc={lim.max_processes}")
        argv.append("--")
        if uid is not None:
            argv += [setpriv, f"--reuid={uid}", f"--regid={uid}", "--clear-groups", "--"]
        return argv

    def _preexec(self) -> None:
        # Runs in the child after the uid switch, before exec: only async-safe setrlimit calls.
        lim = self.limits
        cpu = lim.cpu_s
        resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
        mem = lim.memory_mb * _MIB
        resource.setrlimit(resource.RLIMIT_AS, (mem, mem))
        fsize = lim.max_file_mb * _MIB
        resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))
        resource.setrlimit(resource.RLIMIT_NOFILE, (lim.max_open_files, lim.max_open_files))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        if self.limits.mode == "bwrap":
            resource.setrlimit(resource.RLIMIT_NPROC, (lim.max_processes, lim.max_processes))

    @overload
    def _spawn(self, args: list[str], channel: bool) -> _Sandbox: ...
    @overload
    def _spawn(self, args: list[str], channel: bool, *, spare: bool) -> _Sandbox | None: ...

    def _spawn(self, args: list[str], channel: bool, *, spare: bool = False) -> _Sandbox | None:
        """Starts the sandboxed interpreter; it blocks on its stdin until `_collect` feeds it.

        A `spare` (a warm-pool start) takes a uid only if one is free, and else returns None:
        uids held by idle sandboxes must never make a real run wait."""
        lim = self.limits
        py_flags = ["-I", "-S", "-B", "-X", "utf8"]
        uid: int | None = None
        if lim.mode == "bwrap" and os.geteuid() == 0:
            uid = _UID_POOL.try_acquire(keep_free=16) if spare else _UID_POOL.acquire()
            if uid is None:
                return None
        chan_r = chan_w = -1
        tmpdir: tempfile.TemporaryDirectory[str] | None = None
        try:
            if channel:
                chan_r, chan_w = os.pipe()
                args = [*args, str(chan_w)]
            if lim.mode == "bwrap":
                argv = [*self._bwrap_argv(), *py_flags, *args]
                env = {"PATH": "/usr/bin:/bin"}
                cwd = "/"
            else:
                tmpdir = tempfile.TemporaryDirectory(prefix="tta-unsafe-")
                argv = [str(self._python), *py_flags, *args]
                env = {"PATH": "/usr/bin:/bin", "HOME": tmpdir.name, "LANG": "C.UTF-8"}
                cwd = tmpdir.name
            if self._launchers is not None:
                argv = [*self._launch_argv(uid), *argv]
                # no preexec_fn and no user=: subprocess takes its vfork path
                identity: dict[str, Any] = {}
            else:
                identity = {
                    "user": uid,
                    "group": uid,
                    "extra_groups": [] if uid is not None else None,
                    "preexec_fn": self._preexec,
                }
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                pass_fds=(chan_w,) if channel else (),
                env=env,
                cwd=cwd,
                start_new_session=True,
                **identity,
            )
        except BaseException:
            for fd in (chan_r, chan_w):
                if fd >= 0:
                    os.close(fd)
            if tmpdir is not None:
                tmpdir.cleanup()
            if uid is not None:
                _UID_POOL.release(uid)
            raise
        if channel:
            os.close(chan_w)
        return _Sandbox(proc, chan_r if channel else None, uid, tmpdir, lim.mode == "bwrap")

    def _collect(self, box: _Sandbox, stdin: bytes, wall_s: float) -> RunResult:
        """Feeds `stdin`, gathers the capped output until exit or the wall limit, reaps the tree."""
        lim = self.limits
        proc = box.proc
        try:
            start = time.monotonic()
            streams = {proc.stdout.fileno(): "stdout", proc.stderr.fileno(): "stderr"}  # type: ignore[union-attr]
            if box.chan_r is not None:
                streams[box.chan_r] = "channel"
            caps = {"stdout": lim.output_cap_bytes, "stderr": lim.output_cap_bytes, "channel": lim.channel_cap_bytes}
            bufs, dropped, timed_out = _pump(proc, streams, caps, start + wall_s, stdin, box.bwrap)
            rc = proc.wait()
            wall = time.monotonic() - start
        finally:
            box.discard()
        return _result(lim.mode, rc, bufs, dropped, timed_out, wall)


@dataclass
class _Sandbox:
    """One started sandbox (bwrap and its interpreter), used for at most one run."""

    proc: subprocess.Popen[bytes]
    chan_r: int | None
    uid: int | None
    tmpdir: tempfile.TemporaryDirectory[str] | None  # unsafe mode's work dir
    bwrap: bool  # isolated (mode "bwrap"), as opposed to unsafe

    def discard(self) -> None:
        """Kills the tree if it still runs, reaps it, frees its fds, work dir and uid. Idempotent."""
        if self.proc.returncode is None:
            _kill_tree(self.proc, self.bwrap)
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
            _UID_POOL.release(self.uid)
            self.uid = None


class _Spawner:
    """One long-lived daemon thread that starts every warm sandbox.

    Why a thread of its own: `--die-with-parent` is PR_SET_PDEATHSIG, which fires when
    the *thread* that started bwrap exits, not its process. A spare started from a
    short-lived worker thread (verify_many's pool) is SIGKILLed when that thread ends,
    while it waits for its run. A run's own sandbox is started and collected by the
    same calling thread, so it needs no such care."""

    def __init__(self) -> None:
        self._queue: queue.SimpleQueue[Callable[[], None]] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def submit(self, task: Callable[[], None]) -> None:
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="tta-sandbox-spawner", daemon=True)
                self._thread.start()
        self._queue.put(task)

    def _loop(self) -> None:
        while True:
            self._queue.get()()


_SPAWNER = _Spawner()


def _after_fork_in_child() -> None:
    # A forked child has no spawner thread, and the spares belong to the parent (their
    # pipes and pids): start afresh rather than wait on a thread or a process that is not ours.
    global _SPAWNER
    _SPAWNER = _Spawner()
    for runner in list(_RUNNERS):
        runner._forget_pool()


os.register_at_fork(after_in_child=_after_fork_in_child)


def _discard_all(pool: collections.deque[_Sandbox]) -> None:
    while pool:
        try:
            pool.popleft().discard()
        except IndexError:
            return


def _link_or_copy(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
    src_path = Path(src)
    if src_path.stat().st_mode & stat.S_IROTH:
        try:
            os.link(src_path, dst)
            return
        except OSError:
            pass
    shutil.copy2(src_path, dst)
    os.chmod(dst, 0o755 if os.access(src_path, os.X_OK) else 0o644)


def _kill_tree(proc: subprocess.Popen[bytes], bwrap: bool) -> None:
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


def _pump(
    proc: subprocess.Popen[bytes],
    streams: dict[int, str],
    caps: dict[str, int],
    deadline: float,
    stdin: bytes,
    bwrap: bool,
) -> tuple[dict[str, bytearray], dict[str, int], bool]:
    """Writes `stdin` and reads all streams incrementally until EOF, keeping at most `caps` bytes of each."""
    bufs = {name: bytearray() for name in streams.values()}
    dropped = dict.fromkeys(streams.values(), 0)
    timed_out = False
    killed_at: float | None = None
    sel = selectors.DefaultSelector()
    for fd in streams:
        os.set_blocking(fd, False)
        sel.register(fd, selectors.EVENT_READ)
    pending = memoryview(stdin)
    in_fd = proc.stdin.fileno()  # type: ignore[union-attr]
    if pending:
        os.set_blocking(in_fd, False)
        sel.register(in_fd, selectors.EVENT_WRITE)
    else:
        proc.stdin.close()  # type: ignore[union-attr]
    open_readers = len(streams)
    try:
        while open_readers:
            now = time.monotonic()
            if killed_at is None and now >= deadline:
                timed_out = True
                _kill_tree(proc, bwrap)
                killed_at = now
            if killed_at is not None and now - killed_at > 2.0:
                break  # something outside the tree still holds a pipe (unsafe mode only)
            wait = 0.2 if killed_at is not None else max(0.0, min(deadline - now, 1.0))
            for key, _ in sel.select(timeout=wait):
                fd = key.fd
                if fd == in_fd:
                    try:
                        pending = pending[os.write(fd, pending[:65536]) :]
                    except BlockingIOError:
                        continue
                    except OSError:  # the program closed its stdin or exited: the rest is not wanted
                        pending = pending[:0]
                    if not pending:
                        sel.unregister(fd)
                        proc.stdin.close()  # type: ignore[union-attr]
                    continue
                try:
                    data = os.read(fd, 65536)
                except BlockingIOError:
                    continue
                name = streams[fd]
                if not data:
                    sel.unregister(fd)
                    open_readers -= 1
                    continue
                room = caps[name] - len(bufs[name])
                if room > 0:
                    bufs[name] += data[:room]
                dropped[name] += max(0, len(data) - max(room, 0))
    finally:
        sel.close()
    if killed_at is None:
        try:
            proc.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            timed_out = True
            _kill_tree(proc, bwrap)
    else:
        _kill_tree(proc, bwrap)
    return bufs, dropped, timed_out


_MEMORY_HINTS = ("MemoryError", "Cannot allocate memory", "std::bad_alloc", "out of memory")


def _decode(buf: bytearray, dropped: int) -> str:
    text = buf.decode("utf-8", errors="replace")
    if dropped:
        text += TRUNCATION_MARKER.format(dropped=dropped)
    return text


def _result(
    mode: str, rc: int, bufs: dict[str, bytearray], dropped: dict[str, int], timed_out: bool, wall: float
) -> RunResult:
    signum: int | None = None
    exit_code: int | None = rc
    if rc < 0:
        signum, exit_code = -rc, None
    elif mode == "bwrap" and rc > 128 and rc - 128 < 65:
        # bwrap reports a signal-killed child as 128 + signal number
        signum, exit_code = rc - 128, None
    if signum == signal.SIGXCPU:
        timed_out = True  # RLIMIT_CPU ran out: a time limit, not a crash
    stderr = _decode(bufs["stderr"], dropped["stderr"])
    memory = any(h in stderr for h in _MEMORY_HINTS)
    return RunResult(
        exit_code=exit_code,
        stdout=_decode(bufs["stdout"], dropped["stdout"]),
        stderr=stderr,
        timed_out=timed_out,
        killed_by_signal=signum,
        memory_exceeded=memory,
        truncated=any(dropped.values()),
        wall_s=wall,
        channel=bytes(bufs.get("channel", b"")),
    )
