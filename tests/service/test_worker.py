"""The worker on a real Redis: giving up on a job whose workers keep dying, and resuming a
job from another worker's checkpoint (on the tiny model)."""

from __future__ import annotations

import time

import pytest

from tests.service.conftest import job_body


def _store(settings):
    from service.store import Store

    return Store.from_settings(settings)


def test_job_whose_workers_keep_dying_is_failed_after_max_deliveries(settings):
    from service.schemas import SolveRequest
    from service.worker import Worker

    s = settings.model_copy(update={"lease_s": 0.05, "max_deliveries": 2})
    st = _store(s)
    st.ensure_group()
    sub = st.submit(SolveRequest.model_validate(job_body()), api_key_id="k", max_active=5)
    assert st.read_new("dead-1", 100) == (st.r.xrange(st.queue)[0][0].decode(), sub.id)  # delivery 1, never acked
    time.sleep(0.1)
    assert st.autoclaim("dead-2", 50) is not None  # delivery 2, dies too
    time.sleep(0.1)
    w = Worker(s, st, deps_factory=lambda: pytest.fail("the model is not needed to give up"), name="w")
    assert w.run_once(block_ms=10) == sub.id  # delivery 3 > 2
    job = st.get_job(sub.id)
    assert job.status == "failed" and "gave up after 2 deliveries" in job.reason
    assert st.r.xlen(st.queue) == 0 and st.metrics()["queue_in_progress"] == 0
    assert st.r.scard(st.k_active("k")) == 0


def test_a_job_resumed_from_a_checkpoint_counts_no_attempt_twice(settings, tiny_deps):
    """A worker stores round 0 and dies; after its lease another takes the job over, resumes
    from the checkpoint and finishes: 4 attempts stored, counted and reported once each."""
    from service.schemas import SolveRequest, SolveResult
    from service.solver import Solver
    from service.worker import Worker

    s = settings.model_copy(update={"lease_s": 0.2})
    st = _store(s)
    st.ensure_group()
    req = SolveRequest.model_validate(job_body(strategy="best_of_k", max_attempts=4, n=2))
    sub = st.submit(req, api_key_id="k", max_active=5)
    st.read_new("dead", 100)
    epoch, _ = st.claim(sub.id, "dead", 1)
    saved = []

    def checkpoint(state, blob):
        st.checkpoint(sub.id, epoch, state, blob, 0, 0)
        saved.append(state.model_copy(deep=True))

    # the dead worker's share: round 0, checkpointed; then it stops, its entry unacknowledged
    Solver(tiny_deps).solve(req, job_id=sub.id, checkpoint=checkpoint, cancelled=lambda: bool(saved))
    assert len(saved) == 1 and len(saved[0].attempts) == 2
    time.sleep(0.3)  # past the lease
    w = Worker(s, st, deps_factory=lambda: tiny_deps, name="w")
    w.load()
    assert w.run_once(block_ms=10) == sub.id

    job = st.get_job(sub.id)
    assert job.status == "exhausted" and job.owner == "w" and job.deliveries == 2, job.reason
    result = SolveResult.model_validate_json(job.result)
    texts = [a["text"] for a in st.attempts(sub.id)]
    assert job.attempts_used == result.attempts_used == len(texts) == 4
    assert texts[:2] == [a.text for a in saved[0].attempts] and texts == [a.text for a in result.attempts]
    assert [a["index"] for a in st.attempts(sub.id)] == [0, 1, 2, 3]
    assert st.metrics()["stats"]["attempts"] == 4
    events = [ev for _, ev in st.events(sub.id)]
    assert [ev.type for ev in events].count("done") == 1 and events[-1].type == "done"
    claims = [(ev.worker, ev.delivery, ev.resumed_from_round) for ev in events if ev.type == "claimed"]
    assert claims == [("dead", 1, 0), ("w", 2, 1)]
