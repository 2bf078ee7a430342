"""Runs queued jobs. Many workers, on many machines, share one Redis (docs/architecture.md §5, §8).

Distribution is a Redis Stream with one consumer group: XREADGROUP hands each new job to
one worker; the entry stays in the group's pending list until the worker's final
transaction XACKs it.

Leases. A worker renews its entry every `lease_s / 4` seconds (XCLAIM to itself with
JUSTID: resets the idle time, does not count as a delivery), from a heartbeat thread, so
long rounds are never taken away. An entry idle longer than `lease_s` belongs to a dead
worker: any worker XAUTOCLAIMs it and resumes the job from its last checkpoint (the
SolveState and adapter snapshot of its last finished round) via `Solver.solve(resume=...)`.
Each claim bumps the job's `epoch`; all of a worker's writes are fenced by it, so a worker
that stalled past its lease cannot write over its successor (it notices and stops).

A job delivered more than `max_deliveries` times (its workers keep dying) is marked
`failed` with the reason rather than crash-looping the fleet.

Not guaranteed: a round in flight when a worker dies is run again (its attempts were never
stored, so they are not counted twice, but the compute is spent twice).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from typing import Callable

from service.errors import LeaseLost
from service.events import SolverEvent
from service.schemas import SolveState
from service.settings import Settings
from service.store import Store, cacheable

log = logging.getLogger(__name__)


def default_worker_name() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


class Worker:
    def __init__(self, settings: Settings, store: Store, deps_factory: Callable[[], object],
                 name: str | None = None) -> None:
        self.settings = settings
        self.store = store
        self.deps_factory = deps_factory
        self.deps = None
        self.name = name or settings.worker_name or default_worker_name()
        self.lease_ms = int(settings.lease_s * 1000)
        self.renew_every = settings.lease_s / 4
        self.stop = threading.Event()
        self.ready = threading.Event()
        self.error: str | None = None  # why the worker could not start (model load), for /readyz
        self.current: str | None = None
        self._next_autoclaim = 0.0
        self._last_beat = 0.0

    # -- lifecycle -------------------------------------------------------------------------------
    def load(self) -> None:
        if self.deps is None:
            try:
                self.deps = self.deps_factory()
            except Exception as exc:
                self.error = f"{type(exc).__name__}: {exc}"
                raise
        self.store.ensure_group()
        self.ready.set()

    def run(self) -> None:
        """Serve jobs until `stop` is set (the job in hand is finished first)."""
        self.load()
        log.info("worker %s ready", self.name)
        try:
            while not self.stop.is_set():
                try:
                    self.run_once(block_ms=1000)
                except Exception:  # Redis away, etc.: keep the worker alive, retry shortly
                    log.exception("worker %s: loop error", self.name)
                    self.stop.wait(2.0)
        finally:
            try:
                self.store.worker_gone(self.name)
            except Exception:
                pass

    def start_thread(self) -> threading.Thread:
        t = threading.Thread(target=self._run_quietly, name=f"tta-worker-{self.name}", daemon=True)
        t.start()
        return t

    def _run_quietly(self) -> None:
        try:
            self.run()
        except Exception:
            log.exception("worker %s stopped", self.name)

    def _beat(self, force: bool = False) -> None:
        now = time.monotonic()
        if force or now - self._last_beat >= min(5.0, self.renew_every):
            self._last_beat = now
            adapters = len(self.deps.pool.adapters) if self.deps is not None else 0
            self.store.worker_heartbeat(self.name, {"job": self.current, "adapters": adapters})

    # -- one job -----------------------------------------------------------------------------------
    def run_once(self, block_ms: int = 1000) -> str | None:
        """Take one job (a stale one first, else a new one) and run it. Returns its id."""
        self._beat()
        entry = None
        now = time.monotonic()
        if now >= self._next_autoclaim:
            self._next_autoclaim = now + min(self.renew_every, 5.0)
            entry = self.store.autoclaim(self.name, self.lease_ms)
        if entry is None:
            entry = self.store.read_new(self.name, block_ms)
        if entry is None:
            return None
        entry_id, jid = entry
        self.process(entry_id, jid)
        return jid

    def process(self, entry_id: str, jid: str) -> None:
        from service.errors import JobNotFound
        from service.solver import Solver

        st = self.store
        delivery = st.deliveries(entry_id)
        try:
            job = st.get_job(jid)
        except JobNotFound:
            st.ack(entry_id)
            return
        if job.is_final:
            st.ack(entry_id)
            return
        if delivery > self.settings.max_deliveries:
            st.fail(jid, entry_id, f"gave up after {delivery - 1} deliveries: the worker running this job "
                                   f"stopped without finishing it each time (last: {job.owner or 'unknown'})")
            return
        claimed = st.claim(jid, self.name, delivery)
        if claimed is None:
            st.ack(entry_id)
            return
        epoch, job = claimed
        req = job.solve_request()
        resume = st.load_checkpoint(jid)
        if resume is None and job.init_adapter_from:
            src = st.latest_adapter(job.init_adapter_from)
            if src is None:
                self._finish_without_solving(jid, epoch, entry_id, req, "failed",
                                             f"init_adapter_from: job {job.init_adapter_from} has no stored adapter "
                                             "(it expired)")
                return
            resume = (SolveState(), src[1])
        stored = len(resume[0].attempts) if resume else 0
        stored_rounds = len(resume[0].rounds) if resume else 0
        progress = {"stored": stored, "rounds": stored_rounds}
        lost = threading.Event()
        done = threading.Event()

        def renew_loop() -> None:
            while not done.wait(self.renew_every):
                try:
                    if not st.renew(entry_id, self.name, jid, epoch):
                        log.warning("worker %s lost the lease of %s", self.name, jid)
                        lost.set()
                        return
                    self._beat(force=True)
                except Exception:
                    log.exception("heartbeat of %s failed", jid)

        def on_event(e: SolverEvent) -> None:
            try:
                st.add_event(jid, e)
            except Exception:
                log.exception("event of %s not stored", jid)

        def checkpoint(state, blob) -> None:
            try:
                st.checkpoint(jid, epoch, state, blob, progress["stored"], progress["rounds"])
            except LeaseLost:
                lost.set()
                raise
            except Exception:
                # The store is failing (Redis away?): stop without a verdict. The entry stays
                # pending; once the lease runs out the job resumes from its last checkpoint.
                log.exception("checkpoint of %s failed", jid)
                lost.set()
                raise
            progress["stored"], progress["rounds"] = len(state.attempts), len(state.rounds)

        def cancelled() -> bool:
            # a lost lease stops the loop at the next phase; the result is then dropped
            if lost.is_set():
                return True
            try:
                return st.cancel_requested(jid)
            except Exception:
                return False

        self.current = jid
        self._beat(force=True)
        hb = threading.Thread(target=renew_loop, name=f"tta-lease-{jid}", daemon=True)
        hb.start()
        try:
            result = Solver(self.deps).solve(req, job_id=jid, on_event=on_event, cancelled=cancelled,
                                             checkpoint=checkpoint, resume=resume)
        finally:
            done.set()
            self.current = None
        if lost.is_set():
            log.warning("job %s: result dropped (lease lost or store failing); it resumes from its checkpoint", jid)
            return
        try:
            st.finalize(jid, epoch, entry_id, result, stored=progress["stored"], stored_rounds=progress["rounds"],
                        fingerprint_=job.fingerprint, cache=cacheable(result, req))
        except LeaseLost:
            log.warning("job %s: result dropped, another worker owns it now", jid)
        self._beat(force=True)

    def _finish_without_solving(self, jid, epoch, entry_id, req, status, reason) -> None:
        from service import templates
        from service.schemas import RoundTimings, SolveResult

        result = SolveResult(status=status, reason=reason, strategy=req.strategy, model=self.deps.model_name,
                             engine=self.deps.engine.name, seed=req.seed, attempts_used=0, rounds=[], attempts=[],
                             templates=templates.all_templates(), timings=RoundTimings(), wall_s=0.0,
                             tokens_generated=0)
        self.store.finalize(jid, epoch, entry_id, result, stored=0, stored_rounds=0, fingerprint_=None, cache=False)
