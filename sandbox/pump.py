"""A started sandbox's I/O: stdin in, capped stdout/stderr/channel out, under the wall
clock; and what the bytes and the exit status say, as a `RunResult`."""

from __future__ import annotations

import os
import selectors
import signal
import subprocess
import time
from dataclasses import dataclass

from sandbox.launcher import Sandbox, kill_tree
from sandbox.limits import SandboxLimits

TRUNCATION_MARKER = "\n[... output truncated: {dropped} more bytes not shown ...]\n"
_MEMORY_HINTS = ("MemoryError", "Cannot allocate memory", "std::bad_alloc", "out of memory")


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


def collect(box: Sandbox, limits: SandboxLimits, stdin: bytes, wall_s: float) -> RunResult:
    """Feeds `stdin`, gathers the capped output until exit or the wall limit, reaps the tree."""
    proc = box.proc
    try:
        start = time.monotonic()
        streams = {proc.stdout.fileno(): "stdout", proc.stderr.fileno(): "stderr"}  # type: ignore[union-attr]
        if box.chan_r is not None:
            streams[box.chan_r] = "channel"
        caps = {"stdout": limits.output_cap_bytes, "stderr": limits.output_cap_bytes, "channel": limits.channel_cap_bytes}
        bufs, dropped, timed_out = pump(proc, streams, caps, start + wall_s, stdin, box.bwrap)
        rc = proc.wait()
        wall = time.monotonic() - start
    finally:
        box.discard()
    return _result(limits.mode, rc, bufs, dropped, timed_out, wall)


def pump(
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
                kill_tree(proc, bwrap)
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
            kill_tree(proc, bwrap)
    else:
        kill_tree(proc, bwrap)
    return bufs, dropped, timed_out


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
