"""Redis persistence of jobs, attempts, adapter snapshots, events and the result cache
(docs/architecture.md §5). One implementation for a real Redis server and the embedded one.

`Store` is the one way in; its parts live along their jobs:

  keys.py     the Redis key layout, every key in one table
  records.py  the job record (`JobRecord`), the result-cache fingerprint, the API key id
  base.py     the connection, reading the record, appending events, the fenced and final writes
  jobs.py     the API's side: submit, read, cancel, events, metrics
  work.py     the workers' side: the queue and its leases, claims, checkpoints, the end of a job

Invariants the store keeps:
- the attempts list and the checkpoint state are written in one MULTI/EXEC with the adapter
  snapshot, so `LLEN attempts == len(state.attempts) == attempts_used` at every checkpoint;
  a worker resuming from the state appends only attempts it made itself: none is counted twice;
- a worker's checkpoints and its final write are fenced by the job's `epoch` (WATCH): once its
  lease was taken over they fail (`LeaseLost`), so it stores no attempt, state or result any more;
- a job's final record, its `done` event, the cache entry and the queue XACK commit together.

Not guaranteed: durability beyond what the Redis server is configured for (use AOF). A
worker's progress events (round_start ... trained) are not fenced: one that stalled past its
lease may append a few, even after the job's `done`, before it notices.
"""

from service.store.base import redacted_url
from service.store.jobs import JobStore
from service.store.records import (
    FINAL,
    JobRecord,
    Submitted,
    cacheable,
    fingerprint,
    key_id,
)
from service.store.work import WorkStore

__all__ = ["FINAL", "JobRecord", "Store", "Submitted", "cacheable", "fingerprint", "key_id", "redacted_url"]


class Store(JobStore, WorkStore):
    """The job store. `Store.from_settings(settings)` connects as configured; `Store(client)`
    takes a redis-py client."""
