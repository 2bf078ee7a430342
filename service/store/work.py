"""The workers' side of the store: the work queue and its leases, claiming a job,
checkpoints, and the end of a job (its result, or a failure outside any lease)."""

from __future__ import annotations

import json
import time

from redis.exceptions import ResponseError

from service.events import CheckpointEvent, ClaimedEvent
from service.schemas import SolveResult, SolveState
from service.store.base import StoreBase
from service.store.keys import GROUP
from service.store.records import JobRecord, as_text


class WorkStore(StoreBase):
    # -- the queue -----------------------------------------------------------------------------
    def ensure_group(self) -> None:
        try:
            self.r.xgroup_create(self.queue, GROUP, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    def read_new(self, consumer: str, block_ms: int) -> tuple[str, str] | None:
        res = self.r.xreadgroup(GROUP, consumer, {self.queue: ">"}, count=1, block=block_ms)
        for _s_, entries in res or []:
            for eid, fields in entries:
                return as_text(eid), as_text(fields[b"job"])
        return None

    def autoclaim(self, consumer: str, min_idle_ms: int) -> tuple[str, str] | None:
        """Take over one entry whose worker stopped renewing it (idle > lease)."""
        res = self.r.xautoclaim(self.queue, GROUP, consumer, min_idle_time=min_idle_ms, start_id="0-0", count=1)
        entries = res[1] if res else []
        for eid, fields in entries:
            if fields:
                return as_text(eid), as_text(fields[b"job"])
            self.r.xack(self.queue, GROUP, eid)  # deleted entry: nothing to do
        return None

    def deliveries(self, entry_id: str) -> int:
        rows = self.r.xpending_range(self.queue, GROUP, min=entry_id, max=entry_id, count=1)
        return int(rows[0]["times_delivered"]) if rows else 0

    def renew(self, entry_id: str, consumer: str, jid: str, epoch: int) -> bool:
        """The heartbeat: while the job's epoch is ours, reset the entry's idle time (XCLAIM
        to ourselves, JUSTID: this does not count as a delivery). False: lease lost."""
        rec = self._record(self.r, jid)
        if rec is None or rec.epoch != epoch:
            return False
        self.r.xclaim(self.queue, GROUP, consumer, min_idle_time=0, message_ids=[entry_id], justid=True)
        return True

    def ack(self, entry_id: str) -> None:
        with self.r.pipeline() as pipe:
            pipe.xack(self.queue, GROUP, entry_id)
            pipe.xdel(self.queue, entry_id)
            pipe.execute()

    # -- a job in hand -------------------------------------------------------------------------
    def claim(self, jid: str, worker: str, delivery: int) -> tuple[int, JobRecord] | None:
        """Become the job's owner: bump its epoch (fencing any earlier owner). None when the
        job is gone or already final (its queue entry is then just acknowledged)."""

        def tx(pipe) -> tuple[int, JobRecord] | None:
            rec = self._record(pipe, jid)
            if rec is None or rec.is_final:
                return None
            changes = {"status": "running", "owner": worker, "epoch": rec.epoch + 1, "deliveries": delivery}
            if rec.started_at is None:
                changes["started_at"] = time.time()
            pipe.multi()
            claimed = self._update(pipe, rec, changes)
            if rec.status == "queued":
                pipe.hincrby(self.k_by_status, "queued", -1)
                pipe.hincrby(self.k_by_status, "running", 1)
            self._event(pipe, jid, ClaimedEvent(worker=worker, delivery=delivery, resumed_from_round=rec.rounds_done))
            return claimed.epoch, claimed

        return self.r.transaction(tx, self.k_job(jid), value_from_callable=True)

    def load_checkpoint(self, jid: str):
        """(SolveState, adapter blob or None) of the last finished round, or None."""
        raw = self.r.get(self.k_state(jid))
        if not raw:
            return None
        state = SolveState.model_validate_json(raw)
        got = self.latest_adapter(jid)
        return state, (got[1] if got else None)

    def _progress(self, pipe, jid: str, attempts: list, rounds: list, stored: int, stored_rounds: int) -> None:
        new = attempts[stored:]
        if new:
            pipe.rpush(self.k_attempts(jid), *[a.model_dump_json() for a in new])
            pipe.hincrby(self.k_stats, "attempts", len(new))
        for r in rounds[stored_rounds:]:
            pipe.hincrby(self.k_stats, "rounds", 1)
            for phase in ("generate_s", "verify_s", "train_s"):
                pipe.hincrbyfloat(self.k_stats, phase, getattr(r.timings, phase))

    def checkpoint(self, jid: str, epoch: int, state, blob: bytes | None, stored: int, stored_rounds: int) -> None:
        """Persist a finished round in one transaction: the state, the attempts not stored
        yet (from index `stored`), the adapter snapshot (dropping the one `adapters_kept`
        rounds older) and a `checkpoint` event."""
        rnd = len(state.rounds) - 1

        def write(pipe, rec: JobRecord) -> None:
            pipe.set(self.k_state(jid), state.model_dump_json(), ex=self.job_ttl_s)
            self._progress(pipe, jid, state.attempts, state.rounds, stored, stored_rounds)
            changes = {"attempts_used": len(state.attempts), "rounds_done": len(state.rounds)}
            if blob is not None:
                pipe.set(self.k_adapter(jid, rnd), blob, ex=self.job_ttl_s)
                if rnd - self.adapters_kept >= 0:
                    pipe.delete(self.k_adapter(jid, rnd - self.adapters_kept))
                changes["adapter_round"] = rnd
            self._update(pipe, rec, changes)
            self._event(pipe, jid, CheckpointEvent(round=rnd, attempts_used=len(state.attempts), adapter=blob is not None))

        self._fenced(jid, epoch, write)

    def finalize(self, jid: str, epoch: int, entry_id: str, result: SolveResult, *, stored: int,
                 stored_rounds: int, fingerprint_: str | None, cache: bool) -> None:
        """The job's end, in one transaction: remaining attempts, result, `done` event,
        cache entry, TTLs, and the queue entry's XACK."""

        def write(pipe, rec: JobRecord) -> None:
            self._progress(pipe, jid, result.attempts, result.rounds, stored, stored_rounds)
            self._finish(pipe, rec, {"status": result.status, "reason": result.reason,
                                     "result": result.model_dump_json(), "attempts_used": result.attempts_used,
                                     "rounds_done": len(result.rounds)},
                         attempts_used=result.attempts_used, solved_attempt=result.solved_attempt)
            if rec.adapter_round is not None:
                for r in range(max(0, rec.adapter_round - self.adapters_kept + 1), rec.adapter_round + 1):
                    pipe.expire(self.k_adapter(jid, r), self.adapter_ttl_s)
            if cache and fingerprint_ and self.cache_ttl_s > 0:
                pipe.set(self.k_cache(fingerprint_), jid, ex=min(self.cache_ttl_s, self.job_ttl_s))
            pipe.xack(self.queue, GROUP, entry_id)
            pipe.xdel(self.queue, entry_id)

        self._fenced(jid, epoch, write)

    def fail(self, jid: str, entry_id: str, reason: str) -> None:
        """Mark a job failed outside any lease (e.g. too many deliveries) and drop its entry."""

        def tx(pipe) -> None:
            rec = self._record(pipe, jid)
            pipe.multi()
            if rec is not None and not rec.is_final:
                # the epoch bump fences any worker still holding the job
                self._finish(pipe, rec, {"status": "failed", "reason": reason, "epoch": rec.epoch + 1})
            pipe.xack(self.queue, GROUP, entry_id)
            pipe.xdel(self.queue, entry_id)

        self.r.transaction(tx, self.k_job(jid), value_from_callable=True)

    # -- workers -------------------------------------------------------------------------------
    def worker_heartbeat(self, name: str, info: dict) -> None:
        self.r.hset(self.k_workers, name, json.dumps({"ts": time.time(), **info}))

    def worker_gone(self, name: str) -> None:
        self.r.hdel(self.k_workers, name)
