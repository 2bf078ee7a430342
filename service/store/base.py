"""What both sides of the store share: the connection, reading the job record, appending
an event, the fenced write of a worker and the final write of a job."""

from __future__ import annotations

import json
import time
from typing import Any, Self

import redis

from service.errors import JobNotFound, LeaseLost
from service.events import DoneEvent, Event
from service.store.keys import Keys
from service.store.records import JobRecord


def redacted_url(url: str) -> str:
    """`url` fit for logs and messages: a password in it is replaced by `***`."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = f"{parts.username}:" if parts.username else ":"
    host = parts.netloc.rsplit("@", 1)[1]
    return urlunsplit(parts._replace(netloc=f"{user}***@{host}"))


class StoreBase(Keys):
    def __init__(self, client: redis.Redis, *, namespace: str = "tta", job_ttl_s: int = 7 * 86_400,
                 adapter_ttl_s: int = 7 * 86_400, adapters_kept: int = 2, cache_ttl_s: int = 7 * 86_400,
                 idempotency_ttl_s: int = 86_400, events_maxlen: int = 2_000) -> None:
        super().__init__(namespace)
        self.r = client
        self.job_ttl_s = job_ttl_s
        self.adapter_ttl_s = adapter_ttl_s
        self.adapters_kept = adapters_kept
        self.cache_ttl_s = cache_ttl_s
        self.idempotency_ttl_s = idempotency_ttl_s
        self.events_maxlen = events_maxlen

    @classmethod
    def from_settings(cls, settings, url: str | None = None) -> Self:
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

    # -- health --------------------------------------------------------------------------------
    def ping(self) -> bool:
        try:
            return bool(self.r.ping())
        except redis.RedisError:
            return False

    # -- the record ----------------------------------------------------------------------------
    def _record(self, conn, jid: str) -> JobRecord | None:
        """`conn`: the client, or a pipeline that is watching the record."""
        return JobRecord.from_redis(conn.hgetall(self.k_job(jid)))

    def get_job(self, jid: str) -> JobRecord:
        rec = self._record(self.r, jid)
        if rec is None:
            raise JobNotFound(f"no job {jid!r} (unknown, or expired)", details={"id": jid})
        return rec

    def latest_adapter(self, jid: str) -> tuple[int, bytes] | None:
        rec = self._record(self.r, jid)
        if rec is None or rec.adapter_round is None:
            return None
        blob = self.r.get(self.k_adapter(jid, rec.adapter_round))
        return (rec.adapter_round, blob) if blob else None

    def _update(self, pipe, rec: JobRecord, changes: dict[str, Any]) -> JobRecord:
        """Queue the HSET of `changes` to `rec`; the record as it is after."""
        new = rec.model_copy(update=changes)
        pipe.hset(self.k_job(rec.id), mapping=new.to_redis(*changes))
        return new

    # -- events, the fenced and the final writes -----------------------------------------------
    def _event(self, pipe, jid: str, event: Event) -> None:
        stamped = event.model_copy(update={"ts": round(time.time(), 3)})
        pipe.xadd(self.k_events(jid), {"type": event.type, "data": json.dumps(stamped.model_dump(mode="json"))},
                  maxlen=self.events_maxlen, approximate=True)

    def add_event(self, jid: str, event: Event) -> None:
        self._event(self.r, jid, event)

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
