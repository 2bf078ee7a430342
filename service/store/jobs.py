"""The API's side of the store: submit (with the result cache and idempotency keys), read,
cancel, follow a job's events, and the fleet's metrics."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from typing import Any

import redis
from redis.exceptions import ResponseError

from service.errors import JobConflict, JobNotFound, StoreUnavailable, TooManyJobs
from service.events import CancelRequestedEvent, Event, QueuedEvent, parse_event
from service.schemas import SolveRequest, SolveResult
from service.store.base import StoreBase
from service.store.keys import GROUP
from service.store.records import JobRecord, Submitted, as_text, new_job_id

log = logging.getLogger(__name__)


class JobStore(StoreBase):
    # -- submit --------------------------------------------------------------------------------
    def submit(self, req: SolveRequest, *, api_key_id: str, max_active: int, idempotency_key: str | None = None,
               init_adapter_from: str | None = None, fingerprint_: str | None = None,
               use_cache: bool = True) -> Submitted:
        """Create a job and queue it, atomically (one MULTI/EXEC: record, queue entry, active
        set, idempotency key, first event). A cached result makes a job that is final at once
        and spends no attempt; an idempotency key already used returns its job unchanged."""
        jid = new_job_id()
        now = time.time()
        k_active = self.k_active(api_key_id)
        k_idem = self.k_idem(api_key_id, idempotency_key) if idempotency_key else None

        def tx(pipe) -> Submitted:
            if k_idem:
                existing = as_text(pipe.get(k_idem))
                rec = self._record(pipe, existing) if existing else None
                if rec is not None:
                    return Submitted(existing, rec.status, False)
            cached = self._cache_lookup(fingerprint_) if fingerprint_ and use_cache else None
            if cached is None and pipe.scard(k_active) >= max_active:
                raise TooManyJobs(f"this API key already has {max_active} queued or running jobs (the limit); "
                                  "wait for one to finish or cancel one", details={"limit": max_active})
            record = {"id": jid, "status": "queued", "request": req.model_dump_json(), "created_at": now,
                      "attempts_used": 0, "rounds_done": 0, "epoch": 0, "deliveries": 0, "api_key": api_key_id,
                      "fingerprint": fingerprint_, "init_adapter_from": init_adapter_from,
                      "idempotency_key": idempotency_key}
            pipe.multi()
            if cached is not None:
                src, result = cached
                self._finish(pipe, None, {**record, "status": result.status, "reason": result.reason,
                                          "result": result.model_dump_json(), "cached_from": src,
                                          "started_at": now, "finished_at": now},
                             attempts_used=0, cached_from=src)
                pipe.hincrby(self.k_stats, "cache_hits", 1)
            else:
                pipe.hset(self.k_job(jid), mapping=JobRecord(**record).to_redis(*record))
                pipe.sadd(k_active, jid)
                pipe.expire(k_active, self.job_ttl_s)
                self._event(pipe, jid, QueuedEvent(attempts_used=0))
                pipe.xadd(self.queue, {"job": jid})
                pipe.hincrby(self.k_by_status, "queued", 1)
            if k_idem:
                pipe.set(k_idem, jid, ex=self.idempotency_ttl_s)
            return Submitted(jid, cached[1].status if cached else "queued", True, cached[0] if cached else None)

        try:
            # the idempotency key and the active set are watched: a concurrent submit that
            # takes the key or the last slot makes this one read again
            return self.r.transaction(tx, *filter(None, (k_idem, k_active)), value_from_callable=True)
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            # the cause (with Redis's address) is logged, not handed to the client
            log.warning("submit: Redis unreachable: %s", exc)
            raise StoreUnavailable(f"the job store (Redis) is unreachable ({type(exc).__name__}); nothing was "
                                   "submitted, try again shortly") from None

    def _cache_lookup(self, fp: str) -> tuple[str, SolveResult] | None:
        if self.cache_ttl_s <= 0:
            return None
        src = as_text(self.r.get(self.k_cache(fp)))
        rec = self._record(self.r, src) if src else None
        return (src, SolveResult.model_validate_json(rec.result)) if rec is not None and rec.result else None

    # -- reads ---------------------------------------------------------------------------------
    def attempts(self, jid: str, offset: int = 0, limit: int = 1000) -> list[dict]:
        self.get_job(jid)
        return [json.loads(a) for a in self.r.lrange(self.k_attempts(jid), offset, offset + limit - 1)]

    def attempts_count(self, jid: str) -> int:
        return int(self.r.llen(self.k_attempts(jid)))

    def cancel_requested(self, jid: str) -> bool:
        return bool(self.r.exists(self.k_cancel(jid)))

    def events(self, jid: str, after: str = "0-0", block_ms: int | None = None, count: int = 100) -> list[tuple[str, Event]]:
        """Events after stream id `after` (exclusive); waits up to `block_ms` when none."""
        res = self.r.xread({self.k_events(jid): after}, count=count, block=block_ms)
        out = []
        for _stream, entries in res or []:
            for eid, fields in entries:
                out.append((as_text(eid), parse_event(fields[b"data"])))
        return out

    def wait_final(self, jid: str, timeout_s: float) -> JobRecord:
        """The job record once final, or as it stands after `timeout_s`."""
        deadline = time.monotonic() + timeout_s
        last = "$"
        while True:
            job = self.get_job(jid)
            left = deadline - time.monotonic()
            if job.is_final or left <= 0:
                return job
            if last == "$":  # from now on: a `done` written after our read wakes us
                info = self.r.xrevrange(self.k_events(jid), count=1)
                last = as_text(info[0][0]) if info else "0-0"
            evs = self.events(jid, last, block_ms=int(min(left, 2.0) * 1000) or 1)
            if evs:
                last = evs[-1][0]

    # -- cancel --------------------------------------------------------------------------------
    def cancel(self, jid: str) -> str:
        """Cancel a job: a queued one ends at once; a running one gets the flag its worker
        polls between phases (effective within one round). Returns the status after."""

        def tx(pipe) -> str:
            rec = self._record(pipe, jid)
            if rec is None:
                raise JobNotFound(f"no job {jid!r} (unknown, or expired)", details={"id": jid})
            if rec.is_final:
                raise JobConflict(f"job {jid} has already finished ({rec.status}); there is nothing to cancel",
                                  details={"id": jid, "status": rec.status})
            pipe.multi()
            pipe.set(self.k_cancel(jid), 1, ex=self.job_ttl_s)
            if rec.status == "queued":
                self._finish(pipe, rec, {"status": "cancelled", "reason": "cancelled by request before it started"},
                             attempts_used=0)
                return "cancelled"
            self._event(pipe, jid, CancelRequestedEvent())
            return rec.status

        return self.r.transaction(tx, self.k_job(jid), value_from_callable=True)

    # -- metrics -------------------------------------------------------------------------------
    def metrics(self, fresh_s: float = 120.0) -> dict[str, Any]:
        with self.r.pipeline(transaction=False) as pipe:
            pipe.hgetall(self.k_by_status)
            pipe.hgetall(self.k_stats)
            pipe.hgetall(self.k_workers)
            pipe.xlen(self.queue)
            by_status, stats, workers, qlen = pipe.execute()
        try:
            pending = int(self.r.xpending(self.queue, GROUP)["pending"])
        except ResponseError:  # no group yet
            pending = 0
        now = time.time()
        live = [json.loads(v) for v in workers.values()]
        live = [w for w in live if now - w.get("ts", 0) <= fresh_s]
        return {
            "jobs_by_status": {as_text(k): int(v) for k, v in by_status.items()},
            "stats": {as_text(k): float(v) for k, v in stats.items()},
            "queue_waiting": max(0, int(qlen) - pending),
            "queue_in_progress": pending,
            "workers": len(live),
            "active_adapters": sum(int(w.get("adapters", 0)) for w in live),
        }

    def memory_usage(self, key: str) -> int:
        return int(self.r.memory_usage(key, samples=0) or 0)

    def job_keys(self, jid: str) -> Iterator[str]:
        yield from (as_text(k) for k in self.r.scan_iter(match=f"{self.p}:job:{jid}*"))
