"""The unprivileged host uids that sandboxed runs execute as when the runner is root.

One uid per concurrent run: RLIMIT_NPROC counts the processes of a uid (and the kernel
exempts uid 0 from it), so runs that shared a uid would share one process budget.
"""

from __future__ import annotations

import collections
import os
import threading
from collections.abc import Callable


class UidPool:
    """Hands out distinct unprivileged uids to concurrent runs of this process.

    First in, first out: a uid just released may still own processes that the kernel has
    not finished reaping, and they count against RLIMIT_NPROC of the next run with that
    uid. Rotating through the whole pool gives them time to go."""

    def __init__(self, first: int, size: int) -> None:
        self._free = collections.deque(range(first, first + size))
        self._cond = threading.Condition()

    def acquire(self, reclaim: Callable[[], None] | None = None) -> int:
        """A uid, waiting for one if none is free; `reclaim` is called first then, so that
        idle holders (the warm pool's spares) give theirs back: a real run comes first."""
        with self._cond:
            if self._free:
                return self._free.popleft()
        if reclaim is not None:
            reclaim()
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
UID_POOL = UidPool(first=200_000 + (os.getpid() % 4096) * 64, size=64)
