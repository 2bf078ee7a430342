"""Redis persistence of jobs, attempts, adapter snapshots, events and the result cache
(DESIGN §5). One implementation for a real Redis server and the embedded one.

Keys (`P` = `<namespace>:v1`, the schema version is part of the prefix):

  P:job:{id}                hash   the job record: status, reason, request, timestamps, attempts_used,
                                   rounds_done, result (JSON, once final), owner/epoch (the lease fence)
  P:job:{id}:attempts       list   AttemptRecord JSON, append-only, index i = attempt i
  P:job:{id}:state          string SolveState JSON of the last finished round (deleted once final)
  P:job:{id}:adapter:{r}    string safetensors snapshot after round r (the latest `adapters_kept`)
  P:job:{id}:events         stream progress events (XADD MAXLEN ~), ends with a `done` event
  P:job:{id}:cancel         string set by DELETE /v1/jobs/{id}; polled by the worker
  P:queue                   stream the work queue, consumer group `workers`
  P:idem:{key}:{sha}        string idempotency key (scoped per API key) -> job id
  P:active:{key}            set    an API key's jobs that are not final (the concurrency limit)
  P:cache:{sha}             string result cache: request fingerprint -> the job that holds the result
  P:jobs_by_status          hash   live count per status (queued/running) and totals of final ones
  P:stats                   hash   totals: attempts, rounds, seconds per phase, cache hits
  P:workers                 hash   worker name -> heartbeat JSON (job, adapters, time)

Invariants the store keeps:
- the attempts list and the checkpoint state are written in one MULTI/EXEC with the adapter
  snapshot, so `LLEN attempts == len(state.attempts) == attempts_used` at every checkpoint;
  a worker resuming from the state appends only attempts it made itself: none is counted twice;
- every write of a worker is fenced by the job's `epoch` (WATCH): a worker whose lease was
  taken over cannot write any more (`LeaseLost`);
- a job's final record, its `done` event, the cache entry and the queue XACK commit together.

Not guaranteed: durability beyond what the Redis server is configured for (use AOF).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import socket
import time
import uuid
from dataclasses import dataclass
from typing import Any, Iterator, Mapping

import redis
from pydantic import BaseModel, ConfigDict, Field
from redis.exceptions import ResponseError

from service.errors import JobConflict, JobNotFound, LeaseLost, StoreUnavailable, TooManyJobs
from service.events import (
    CancelRequestedEvent,
    CheckpointEvent,
    ClaimedEvent,
    DoneEvent,
    Event,
    QueuedEvent,
    parse_event,
)
from service.schemas import JobStatus, SolveRequest, SolveResult, SolveState

log = logging.getLogger(__name__)

FINAL = ("solved", "exhausted", "cancelled", "failed")
GROUP = "workers"
SCHEMA = "v1"


def _s(v: bytes | str | None) -> str | None:
    return v.decode() if isinstance(v, bytes) else v


def new_job_id() -> str:
    return "job_" + uuid.uuid4().hex[:20]


def redacted_url(url: str) -> str:
    """`url` fit for logs and messages: a password in it is replaced by `***`."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = f"{parts.username}:" if parts.username else ":"
    host = parts.netloc.rsplit("@", 1)[1]
    return urlunsplit(parts._replace(netloc=f"{user}***@{host}"))


def key_id(api_key: str | None) -> str:
    """A stable, non-secret id for an API key (what the store keys are scoped by)."""
    return "anonymous" if not api_key else hashlib.sha256(api_key.encode()).hexdigest()[:16]


def fingerprint(model: str, engine: str, req: SolveRequest, init_adapter_from: str | None) -> str:
    """The result-cache key: sha256 over everything that decides a job's outcome."""
    body = {"schema": SCHEMA, "model": model, "engine": engine,
            "request": req.model_dump(mode="json"), "init_adapter_from": init_adapter_from}
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def cacheable(result: SolveResult, req: SolveRequest) -> bool:
    # Only outcomes that the same request reproduces: solved, or a spent budget that is not
    # a wall-clock deadline. Cancelled and failed jobs are never cached.
    return result.status == "solved" or (result.status == "exhausted" and req.budget.deadline_s is None)


class JobRecord(BaseModel):
    """The job hash `P:job:{id}`, typed. Redis keeps every value as a string: `from_redis`
    parses them, for every reader alike; `to_redis` is what HSET writes."""

    model_config = ConfigDict(extra="ignore")  # a field a newer version added is not ours to read

    id: str
    status: JobStatus
    request: str = Field(description="The SolveRequest as submitted, JSON.")
    created_at: float
    attempts_used: int = 0
    rounds_done: int = 0
    epoch: int = Field(0, description="The lease fence: every claim bumps it, and so does `fail`.")
    deliveries: int = 0
    api_key: str = Field(description="The submitter's key id (`key_id`), not the key.")
    fingerprint: str | None = None
    init_adapter_from: str | None = None
    idempotency_key: str | None = None
    reason: str | None = None
    result: str | None = Field(None, description="The SolveResult JSON, once final.")
    cached_from: str | None = None
    finished_at: float | None = None
    started_at: float | None = None
    owner: str | None = None
    adapter_round: int | None = None

    @property
    def is_final(self) -> bool:
        return self.status in FINAL

    def solve_request(self) -> SolveRequest:
        return SolveRequest.model_validate_json(self.request)

    @classmethod
    def from_redis(cls, raw: Mapping[bytes | str, bytes | str]) -> JobRecord | None:
        """The record of an HGETALL reply; None for an empty one (no such job). An empty
        string is how the hash says "none"."""
        if not raw:
            return None
        return cls.model_validate({_s(k): _s(v) for k, v in raw.items() if v not in (b"", "")})

    def to_redis(self, *names: str) -> dict[str, str | int | float]:
        """The fields `names` (default: all) as HSET takes them, None as ''."""
        return {n: "" if (v := getattr(self, n)) is None else v for n in names or type(self).model_fields}


@dataclass
class Submitted:
    id: str
    status: str
    created: bool  # False: an existing job (idempotency key) was returned
    cached_from: str | None = None


class Store:
    def __init__(self, client: redis.Redis, *, namespace: str = "tta", job_ttl_s: int = 7 * 86_400,
                 adapter_ttl_s: int = 7 * 86_400, adapters_kept: int = 2, cache_ttl_s: int = 7 * 86_400,
                 idempotency_ttl_s: int = 86_400, events_maxlen: int = 2_000) -> None:
        self.r = client
        self.p = f"{namespace}:{SCHEMA}"
        self.job_ttl_s = job_ttl_s
        self.adapter_ttl_s = adapter_ttl_s
        self.adapters_kept = adapters_kept
        self.cache_ttl_s = cache_ttl_s
        self.idempotency_ttl_s = idempotency_ttl_s
        self.events_maxlen = events_maxlen
        self.queue = f"{self.p}:queue"

    @classmethod
    def from_settings(cls, settings, url: str | None = None) -> Store:
        """Connect to `url`, TTA_REDIS_URL, or (neither set) a freshly started embedded Redis."""
        url = url or settings.redis_url
        if not url:
            from service.embedded_redis import start_embedded_redis

            url = start_embedded_redis(settings.embedded_redis_dir or settings.cache_dir / "redis")
        client = redis.Redis.from_url(url, socket_connect_timeout=2.0, socket_timeout=30.0,
                                      health_check_interval=30)
        return cls(client, namespace=settings.redis_namespace, job_ttl_s=settings.job_ttl_s,
                   adapter_ttl_s=settings.adapter_ttl_s, adapters_kept=settings.adapters_kept,
                   cache_ttl_s=settings.cache_ttl_s, idempotency_ttl_s=settings.idempotency_ttl_s,
                   events_maxlen=settings.events_maxlen)

    # -- keys ----------------------------------------------------------------------------------
    def k_job(self, jid: str) -> str:
        return f"{self.p}:job:{jid}"

    def k_attempts(self, jid: str) -> str:
        return f"{self.p}:job:{jid}:attempts"

    def k_state(self, jid: str) -> str:
        return f"{self.p}:job:{jid}:state"

    def k_adapter(self, jid: str, rnd: int) -> str:
        return f"{self.p}:job:{jid}:adapter:{rnd}"

    def k_events(self, jid: str) -> str:
        return f"{self.p}:job:{jid}:events"

    def k_cancel(self, jid: str) -> str:
        return f"{self.p}:job:{jid}:cancel"

    def k_active(self, kid: str) -> str:
        return f"{self.p}:active:{kid}"

    def k_idem(self, kid: str, idem: str) -> str:
        return f"{self.p}:idem:{kid}:{hashlib.sha256(idem.encode()).hexdigest()[:32]}"

    def k_cache(self, fp: str) -> str:
        return f"{self.p}:cache:{fp}"

    @property
    def k_by_status(self) -> str:
        return f"{self.p}:jobs_by_status"

    @property
    def k_stats(self) -> str:
        return f"{self.p}:stats"

    @property
    def k_workers(self) -> str:
        return f"{self.p}:workers"

    # -- health --------------------------------------------------------------------------------
    def ping(self) -> bool:
        try:
            return bool(self.r.ping())
        except redis.RedisError:
            return False

    def _event(self, pipe, jid: str, event: Event) -> None:
        stamped = event.model_copy(update={"ts": round(time.time(), 3)})
        pipe.xadd(self.k_events(jid), {"type": event.type, "data": json.dumps(stamped.model_dump(mode="json"))},
                  maxlen=self.events_maxlen, approximate=True)

    def add_event(self, jid: str, event: Event) -> None:
        self._event(self.r, jid, event)

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
                existing = _s(pipe.get(k_idem))
                rec = self._record(pipe, existing) if existing else None
                if rec is not None:
                    return Submitted(existing, rec.status, False)
            cached = self._cache_lookup(fingerprint_) if fingerprint_ and use_cache else None
            if cached is None and pipe.scard(k_active) >= max_active:
                raise TooManyJobs(f"this API key already has {max_active} queued or running jobs (the limit); "
                                  "wait for one to finish or cancel one", details={"limit": max_active})
            record = dict(id=jid, status="queued", request=req.model_dump_json(), created_at=now, attempts_used=0,
                          rounds_done=0, epoch=0, deliveries=0, api_key=api_key_id, fingerprint=fingerprint_,
                          init_adapter_from=init_adapter_from, idempotency_key=idempotency_key)
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
        src = _s(self.r.get(self.k_cache(fp)))
        rec = self._record(self.r, src) if src else None
        return (src, SolveResult.model_validate_json(rec.result)) if rec is not None and rec.result else None

    # -- reads ---------------------------------------------------------------------------------
    def _record(self, conn, jid: str) -> JobRecord | None:
        """`conn`: the client, or a pipeline that is watching the record."""
        return JobRecord.from_redis(conn.hgetall(self.k_job(jid)))

    def get_job(self, jid: str) -> JobRecord:
        rec = self._record(self.r, jid)
        if rec is None:
            raise JobNotFound(f"no job {jid!r} (unknown, or expired)", details={"id": jid})
        return rec

    def attempts(self, jid: str, offset: int = 0, limit: int = 1000) -> list[dict]:
        self.get_job(jid)
        return [json.loads(a) for a in self.r.lrange(self.k_attempts(jid), offset, offset + limit - 1)]

    def attempts_count(self, jid: str) -> int:
        return int(self.r.llen(self.k_attempts(jid)))

    def latest_adapter(self, jid: str) -> tuple[int, bytes] | None:
        rec = self._record(self.r, jid)
        if rec is None or rec.adapter_round is None:
            return None
        blob = self.r.get(self.k_adapter(jid, rec.adapter_round))
        return (rec.adapter_round, blob) if blob else None

    def cancel_requested(self, jid: str) -> bool:
        return bool(self.r.exists(self.k_cancel(jid)))

    def events(self, jid: str, after: str = "0-0", block_ms: int | None = None, count: int = 100) -> list[tuple[str, Event]]:
        """Events after stream id `after` (exclusive); waits up to `block_ms` when none."""
        res = self.r.xread({self.k_events(jid): after}, count=count, block=block_ms)
        out = []
        for _stream, entries in res or []:
            for eid, fields in entries:
                out.append((_s(eid), parse_event(fields[b"data"])))
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
                last = _s(info[0][0]) if info else "0-0"
            evs = self.events(jid, last, block_ms=int(min(left, 2.0) * 1000) or 1)
            if evs:
                last = evs[-1][0]

    # -- cancel --------------------------------------------------------------------------------
    def cancel(self, jid: str) -> str:
        """Cancel a job: a queued one ends at once; a running one gets the flag its worker
        polls between phases (effective within one round). Returns the status after."""
        k = self.k_job(jid)

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

        return self.r.transaction(tx, k, value_from_callable=True)

    def _update(self, pipe, rec: JobRecord, changes: dict[str, Any]) -> JobRecord:
        """Queue the HSET of `changes` to `rec`; the record as it is after."""
        new = rec.model_copy(update=changes)
        pipe.hset(self.k_job(rec.id), mapping=new.to_redis(*changes))
        return new

    def _finish(self, pipe, rec: JobRecord | None, end: dict[str, Any], **done: Any) -> None:
        """Queue (after MULTI) the end of a job: the final fields `end` of its record `rec`
        (None for a job that is born final, a cache hit: `end` is then all of it), the
        counts per status, the `done` event (status and reason, plus `done`) and the TTLs.
        The one writer of `done`: a job's end and its event commit together."""
        end = {"finished_at": time.time(), **end}
        if rec is None:
            final = JobRecord.model_validate(end)
            pipe.hset(self.k_job(final.id), mapping=final.to_redis(*end))
        else:
            final = self._update(pipe, rec, end)
            pipe.srem(self.k_active(rec.api_key), rec.id)
            pipe.hincrby(self.k_by_status, rec.status, -1)
        pipe.hincrby(self.k_by_status, final.status, 1)
        self._event(pipe, final.id, DoneEvent(status=final.status, reason=final.reason, **done))
        pipe.delete(self.k_state(final.id))
        self._expire_job(pipe, final.id)

    def _expire_job(self, pipe, jid: str) -> None:
        for k in (self.k_job(jid), self.k_attempts(jid), self.k_events(jid), self.k_cancel(jid)):
            pipe.expire(k, self.job_ttl_s)

    # -- the queue (workers) ---------------------------------------------------------------------
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
                return _s(eid), _s(fields[b"job"])
        return None

    def autoclaim(self, consumer: str, min_idle_ms: int) -> tuple[str, str] | None:
        """Take over one entry whose worker stopped renewing it (idle > lease)."""
        res = self.r.xautoclaim(self.queue, GROUP, consumer, min_idle_time=min_idle_ms, start_id="0-0", count=1)
        entries = res[1] if res else []
        for eid, fields in entries:
            if fields:
                return _s(eid), _s(fields[b"job"])
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

    def claim(self, jid: str, worker: str, delivery: int) -> tuple[int, JobRecord] | None:
        """Become the job's owner: bump its epoch (fencing any earlier owner). None when the
        job is gone or already final (its queue entry is then just acknowledged)."""
        k = self.k_job(jid)

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

        return self.r.transaction(tx, k, value_from_callable=True)

    def load_checkpoint(self, jid: str):
        """(SolveState, adapter blob or None) of the last finished round, or None."""
        raw = self.r.get(self.k_state(jid))
        if not raw:
            return None
        state = SolveState.model_validate_json(raw)
        got = self.latest_adapter(jid)
        return state, (got[1] if got else None)

    def _fenced(self, jid: str, epoch: int, write) -> None:
        """Run `write(pipe, record)` in MULTI/EXEC iff the job's epoch is still `epoch`. A claim
        by another worker bumps the epoch: the watch fails, and the retry raises `LeaseLost`."""

        def tx(pipe) -> None:
            rec = self._record(pipe, jid)
            if rec is None or rec.epoch != epoch:
                now = rec.epoch if rec is not None else -1
                raise LeaseLost(f"job {jid} is owned by another worker now (epoch {now}, ours {epoch})")
            pipe.multi()
            write(pipe, rec)

        self.r.transaction(tx, self.k_job(jid), value_from_callable=True)

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

    # -- workers and metrics ---------------------------------------------------------------------
    def worker_heartbeat(self, name: str, info: dict) -> None:
        self.r.hset(self.k_workers, name, json.dumps({"ts": time.time(), **info}))

    def worker_gone(self, name: str) -> None:
        self.r.hdel(self.k_workers, name)

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
            "jobs_by_status": {_s(k): int(v) for k, v in by_status.items()},
            "stats": {_s(k): float(v) for k, v in stats.items()},
            "queue_waiting": max(0, int(qlen) - pending),
            "queue_in_progress": pending,
            "workers": len(live),
            "active_adapters": sum(int(w.get("adapters", 0)) for w in live),
        }

    def memory_usage(self, key: str) -> int:
        return int(self.r.memory_usage(key, samples=0) or 0)

    def job_keys(self, jid: str) -> Iterator[str]:
        yield from (_s(k) for k in self.r.scan_iter(match=f"{self.p}:job:{jid}*"))


def default_worker_name() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
