"""Sandboxes started ahead of time, and the one thread that starts them.

A few sandboxes are started with the same argv, limits and uid switch as a run's own, each
blocked reading its stdin. A run takes one, writes its input, and a replacement is started
in the background, so namespace set-up and interpreter start-up (about two thirds of an
attempt's latency, mostly waiting rather than CPU) leave the critical path. Each sandbox
serves ONE run and is then killed; nothing is reused across attempts.
"""

from __future__ import annotations

import collections
import logging
import os
import queue
import threading
import weakref
from collections.abc import Callable, Iterator

from sandbox.launcher import Sandbox

log = logging.getLogger(__name__)

Key = tuple[tuple[str, ...], bool]  # the (args, channel) of the runs a spare can serve
_POOLS: weakref.WeakSet[WarmPool] = weakref.WeakSet()


class WarmPool:
    """The idle sandboxes of one runner, all for one key; a new key drops the old ones."""

    def __init__(self) -> None:
        self._idle: collections.deque[Sandbox] = collections.deque()
        self._key: Key | None = None
        self._starting = 0
        self._lock = threading.Lock()
        _POOLS.add(self)
        # a pool dropped without close() (its runner evicted from a cache) still kills its spares
        weakref.finalize(self, _discard_all, self._idle)

    def __len__(self) -> int:
        return len(self._idle)

    def __iter__(self) -> Iterator[Sandbox]:
        with self._lock:
            return iter(list(self._idle))

    def take(self, key: Key) -> Sandbox | None:
        while True:
            with self._lock:
                if self._key != key or not self._idle:
                    return None
                box = self._idle.popleft()
            if box.proc.poll() is None:
                return box
            box.discard()  # died while waiting (killed from outside): never hand it out

    def refill(self, key: Key, size: int, spawn: Callable[[list[str], bool], Sandbox | None]) -> None:
        """Asks the spawner thread for sandboxes until `size` wait for `key`.

        `spawn(args, channel)` starts one, or returns None when it should not (no uid to spare)."""
        with self._lock:
            stale: list[Sandbox] = []
            if self._key != key:
                stale, self._key = list(self._idle), key
                self._idle.clear()
            missing = size - len(self._idle) - self._starting
            self._starting += max(missing, 0)
        for box in stale:
            box.discard()
        for _ in range(missing):
            _SPAWNER.submit(lambda: self._start_spare(key, spawn))

    def close(self) -> None:
        """Kills the idle sandboxes (they have run nothing). The pool stays usable."""
        with self._lock:
            boxes = list(self._idle)
            self._idle.clear()  # in place: the finalizer holds this very deque
        for box in boxes:
            box.discard()

    def _start_spare(self, key: Key, spawn: Callable[[list[str], bool], Sandbox | None]) -> None:
        box: Sandbox | None = None
        try:
            box = spawn(list(key[0]), key[1])
        except Exception:  # noqa: BLE001 - a spare is an optimisation; the run itself reports errors
            log.warning("could not start a warm sandbox", exc_info=True)
        with self._lock:
            self._starting -= 1
            if box is not None and self._key == key:
                self._idle.append(box)
                return
        if box is not None:
            box.discard()

    def _forget(self) -> None:
        self._lock = threading.Lock()  # a lock held by another thread at fork stays held
        self._idle.clear()
        self._key = None
        self._starting = 0


def reclaim_idle() -> None:
    """Kills every idle sandbox of this process, so that the uids they hold are free again."""
    for pool in list(_POOLS):
        pool.close()


def _discard_all(idle: collections.deque[Sandbox]) -> None:
    while idle:
        try:
            idle.popleft().discard()
        except IndexError:
            return


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
    for pool in list(_POOLS):
        pool._forget()


os.register_at_fork(after_in_child=_after_fork_in_child)
