"""The Redis key layout of the store: every key it reads or writes, in one place.

`P` = `<namespace>:v1` (the schema version is part of the prefix):

  P:job:{id}                hash   the job record (`JobRecord`): status, reason, request, timestamps,
                                   attempts_used, rounds_done, result (JSON, once final), owner/epoch
                                   (the lease fence)
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
"""

from __future__ import annotations

import hashlib

SCHEMA = "v1"
GROUP = "workers"


class Keys:
    def __init__(self, namespace: str) -> None:
        self.p = f"{namespace}:{SCHEMA}"
        self.queue = f"{self.p}:queue"

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
