"""The store on a real Redis (a private redis-server, or the embedded one): fencing by the
lease epoch, checkpoints and resumes, the one `done` of a job, the job record, and that
reading Redis pulls in no model code."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis

from tests.service.conftest import job_body

ROOT = Path(__file__).parents[2]


def _store(settings):
    from service.store import Store

    return Store.from_settings(settings)


def _attempt(i: int, rnd: int = 0, text: str = "x"):
    from service.schemas import AttemptRecord

    return AttemptRecord(index=i, round=rnd, text=text, tokens=1, truncated=False, verdict="fail", score=0.0,
                         passed_cases=0, total_cases=1, feedback="", kind="wrong_answer")


def _result(status: str, attempts: list, rounds: list, reason: str | None = "budget spent"):
    from service.schemas import RoundTimings, SolveResult

    return SolveResult(status=status, reason=reason, strategy="sdpo", model="tiny", engine="transformers", seed=0,
                       attempts_used=len(attempts), rounds=rounds, attempts=attempts, templates={},
                       timings=RoundTimings(), wall_s=0.0, tokens_generated=len(attempts))


def _request(**over):
    from service.schemas import SolveRequest

    return SolveRequest.model_validate(job_body(**over))


@pytest.mark.parametrize("module", ["service.store", "service.app"])
def test_reading_redis_imports_no_model_code(module):
    code = (f"import sys, {module}; heavy = {{'torch', 'peft', 'transformers'}} & set(sys.modules); "
            "assert not heavy, heavy")
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120,
                       check=False)
    assert r.returncode == 0, r.stderr


# ---- fencing ----------------------------------------------------------------------------------------


def test_stale_worker_cannot_write_after_takeover(settings):
    from service.errors import LeaseLost
    from service.schemas import AttemptRecord, RoundRecord, SolveRequest, SolveState

    st = _store(settings)
    sub = st.submit(SolveRequest.model_validate(job_body()), api_key_id="k", max_active=5)
    e1, _ = st.claim(sub.id, "old", 1)
    e2, _ = st.claim(sub.id, "new", 2)
    assert e2 == e1 + 1
    a = AttemptRecord(index=0, round=0, text="x", tokens=1, truncated=False, verdict="fail", score=0.0,
                      passed_cases=0, total_cases=1, feedback="", kind="wrong_answer")
    state = SolveState(attempts=[a], rounds=[RoundRecord(round=0, attempts=[0], passes=0)], tokens=[[1]])
    with pytest.raises(LeaseLost):
        st.checkpoint(sub.id, e1, state, b"blob", 0, 0)
    assert st.attempts_count(sub.id) == 0 and st.load_checkpoint(sub.id) is None
    st.checkpoint(sub.id, e2, state, b"blob", 0, 0)
    assert st.attempts_count(sub.id) == 1 and st.get_job(sub.id).attempts_used == 1
    assert st.latest_adapter(sub.id) == (0, b"blob")
    assert st.load_checkpoint(sub.id)[0].attempts[0].text == "x"


def test_a_stale_final_write_raises_lease_lost_and_writes_nothing(settings):
    from service.errors import LeaseLost
    from service.schemas import RoundRecord
    from service.store import fingerprint

    st = _store(settings)
    st.ensure_group()
    req = _request()
    fp = fingerprint("tiny", "transformers", req, None)
    sub = st.submit(req, api_key_id="k", max_active=5, fingerprint_=fp)
    entry, _ = st.read_new("old", 100)
    e1, _ = st.claim(sub.id, "old", 1)
    st.claim(sub.id, "new", 2)

    def snapshot():
        return (st.r.hgetall(st.k_job(sub.id)), st.r.xrange(st.k_events(sub.id)), st.metrics(),
                st.r.exists(st.k_cache(fp)), st.attempts_count(sub.id))

    before = snapshot()
    result = _result("exhausted", [_attempt(0)], [RoundRecord(round=0, attempts=[0], passes=0)])
    with pytest.raises(LeaseLost, match="epoch 2, ours 1"):
        st.finalize(sub.id, e1, entry, result, stored=0, stored_rounds=0, fingerprint_=fp, cache=True)
    assert snapshot() == before
    assert before[2]["queue_in_progress"] == 1  # the entry is still pending: the new owner acks it


def test_a_takeover_between_watch_and_exec_ends_in_lease_lost(settings):
    """Another worker claims the job after the fenced write read the epoch: EXEC fails on the
    WATCH, redis-py runs the transaction again, and the second run stops at the fence."""
    from service.errors import LeaseLost

    st = _store(settings)
    sub = st.submit(_request(), api_key_id="k", max_active=5)
    e1, _ = st.claim(sub.id, "old", 1)
    runs = []

    def write(pipe, rec):
        runs.append(rec.epoch)
        st.claim(sub.id, "new", 2)  # on another connection: commits before this EXEC
        pipe.hset(st.k_job(sub.id), "owner", "old")

    with pytest.raises(LeaseLost, match="epoch 2, ours 1"):
        st._fenced(sub.id, e1, write)
    assert runs == [e1]
    job = st.get_job(sub.id)
    assert job.owner == "new" and job.epoch == e1 + 1


# ---- ends, resumes --------------------------------------------------------------------------------------


def test_every_way_a_job_ends_writes_one_done_event_last(settings):
    from service.errors import JobConflict
    from service.schemas import RoundRecord
    from service.store import fingerprint

    st = _store(settings)
    st.ensure_group()
    req = _request()
    fp = fingerprint("tiny", "transformers", req, None)
    ran = st.submit(req, api_key_id="k", max_active=9, fingerprint_=fp).id
    cancelled = st.submit(_request(seed=1), api_key_id="k", max_active=9).id
    given_up = st.submit(_request(seed=2), api_key_id="k", max_active=9).id
    entries = dict(reversed(st.read_new("w", 100)) for _ in range(3))

    epoch, _ = st.claim(ran, "w", 1)
    st.finalize(ran, epoch, entries[ran], _result("exhausted", [_attempt(0)], [RoundRecord(round=0, attempts=[0],
                                                                                           passes=0)]),
                stored=0, stored_rounds=0, fingerprint_=fp, cache=True)
    hit = st.submit(req, api_key_id="k", max_active=9, fingerprint_=fp)
    assert hit.cached_from == ran and hit.status == "exhausted"
    assert st.cancel(cancelled) == "cancelled"
    st.fail(given_up, entries[given_up], "gave up")
    # ends of a job that has ended already: nothing more is written
    st.fail(ran, entries[ran], "too late")
    with pytest.raises(JobConflict):
        st.cancel(given_up)

    for jid in (ran, hit.id, cancelled, given_up):
        kinds = [ev.type for _, ev in st.events(jid)]
        assert kinds.count("done") == 1 and kinds[-1] == "done", (jid, kinds)
    assert st.get_job(ran).reason == "budget spent" and st.get_job(given_up).status == "failed"
    assert st.metrics()["jobs_by_status"] == {"queued": 0, "running": 0, "exhausted": 2, "cancelled": 1, "failed": 1}


def test_a_resumed_job_stores_and_counts_each_attempt_once(settings):
    """Worker a checkpoints round 0 and stops renewing; b takes the entry over, resumes from
    the checkpoint and finishes, handing `finalize` what it loaded as already stored."""
    from service.schemas import RoundRecord, SolveState

    st = _store(settings)
    st.ensure_group()
    sub = st.submit(_request(), api_key_id="k", max_active=5)
    entry, _ = st.read_new("a", 100)
    ea, _ = st.claim(sub.id, "a", 1)
    round0 = SolveState(attempts=[_attempt(0, 0, "a0"), _attempt(1, 0, "a1")],
                        rounds=[RoundRecord(round=0, attempts=[0, 1], passes=0)], tokens=[[1], [2]])
    st.checkpoint(sub.id, ea, round0, None, 0, 0)
    time.sleep(0.05)
    assert st.autoclaim("b", 10) == (entry, sub.id)
    eb, _ = st.claim(sub.id, "b", st.deliveries(entry))
    state, blob = st.load_checkpoint(sub.id)
    assert blob is None and state == round0
    attempts = [*state.attempts, _attempt(2, 1, "b2"), _attempt(3, 1, "b3")]
    rounds = [*state.rounds, RoundRecord(round=1, attempts=[2, 3], passes=0)]
    st.finalize(sub.id, eb, entry, _result("exhausted", attempts, rounds), stored=len(state.attempts),
                stored_rounds=len(state.rounds), fingerprint_=None, cache=False)

    assert [a["text"] for a in st.attempts(sub.id)] == ["a0", "a1", "b2", "b3"]
    job = st.get_job(sub.id)
    assert job.attempts_used == st.attempts_count(sub.id) == 4 and job.rounds_done == 2 and job.deliveries == 2
    stats = st.metrics()["stats"]
    assert stats["attempts"] == 4 and stats["rounds"] == 2
    assert st.load_checkpoint(sub.id) is None  # a final job keeps no checkpoint


# ---- the job record ---------------------------------------------------------------------------------------


def test_job_record_round_trips_through_redis(settings):
    from service.store import JobRecord

    st = _store(settings)
    rec = JobRecord(id="job_rt", status="solved", request='{"seed":0}', created_at=1700000000.25, attempts_used=3,
                    rounds_done=2, epoch=4, deliveries=2, api_key="k", fingerprint="f" * 64,
                    init_adapter_from="job_src", idempotency_key="idem", reason=None, result='{"status":"solved"}',
                    finished_at=1700000100.5, started_at=1700000001.125, owner="w1", adapter_round=1)
    k = st.k_job(rec.id)
    st.r.hset(k, mapping=rec.to_redis())
    assert st.r.hget(k, "epoch") == b"4" and st.r.hget(k, "reason") == b""  # "" is how the hash says none
    assert JobRecord.from_redis(st.r.hgetall(k)) == rec
    changed = rec.model_copy(update={"status": "running", "owner": None})
    st.r.hset(k, mapping=changed.to_redis("status", "owner"))
    assert st.get_job(rec.id) == changed
    st.r.hset(k, "added_by_a_newer_version", "x")
    assert st.get_job(rec.id) == changed
    assert JobRecord.from_redis({}) is None


def test_a_submitted_record_reads_back_typed(settings):
    st = _store(settings)
    req = _request()
    sub = st.submit(req, api_key_id="k", max_active=5)
    job = st.get_job(sub.id)
    assert (job.status, job.attempts_used, job.epoch, job.api_key) == ("queued", 0, 0, "k")
    assert job.fingerprint is None and job.started_at is None and isinstance(job.created_at, float)
    assert job.solve_request() == req and not job.is_final


# ---- the embedded Redis -----------------------------------------------------------------------------------


def test_embedded_redis_has_streams_and_the_same_store(tmp_path, settings):
    from service.schemas import SolveRequest
    from service.store import Store

    st = Store.from_settings(settings.model_copy(update={"redis_url": None, "embedded_redis_dir": tmp_path}))
    assert st.r.info("server")["redis_version"].startswith("6.2")
    st.ensure_group()
    sub = st.submit(SolveRequest.model_validate(job_body()), api_key_id="k", max_active=5)
    assert st.read_new("w", 100)[1] == sub.id
    time.sleep(0.05)
    assert st.autoclaim("w2", 10)[1] == sub.id and st.deliveries(st.r.xrange(st.queue)[0][0].decode()) == 2
    assert st.get_job(sub.id).status == "queued"
    with pytest.raises(redis.ResponseError):  # a real server: unknown commands are refused, not faked
        st.r.execute_command("NOT_A_COMMAND")
