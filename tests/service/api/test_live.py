"""The service as deployed: uvicorn + two worker processes on the tiny model, a real Redis,
real HTTP clients (httpx, the openai client). Tests run in file order; the crash test is
last because it kills a worker."""

from __future__ import annotations

import os
import signal
import time

import httpx
import pytest

from tests.service.api.conftest import wait_status
from tests.service.conftest import ANYTHING, IMPOSSIBLE, KEY, job_body

pytestmark = pytest.mark.slow


def sse(http: httpx.Client, jid: str, last_event_id: str | None = None) -> list[dict]:
    from service.client import parse_sse

    headers = {"Last-Event-ID": last_event_id} if last_event_id else {}
    out = []
    with http.stream("GET", f"/v1/jobs/{jid}/events", headers=headers, timeout=httpx.Timeout(30, read=120)) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        for ev in parse_sse(r.iter_lines()):
            out.append({"id": ev.id, "type": ev.type, **ev.data})
    return out


def test_sse_progress_to_done_and_resume_with_last_event_id(stack):
    jid = stack.http.post("/v1/jobs", json=job_body("Name a colour.", seed=1)).json()["id"]
    events = sse(stack.http, jid)  # blocks until `done`
    types = [e["type"] for e in events]
    assert types[0] == "queued" and types[-1] == "done" and "claimed" in types
    assert {"round_start", "verified", "training", "trained", "checkpoint"} <= set(types)
    assert events[-1]["status"] == "exhausted" and events[-1]["attempts_used"] == 4
    ids = [e["id"] for e in events]
    assert ids == sorted(ids, key=lambda i: tuple(map(int, i.split("-"))))
    resumed = sse(stack.http, jid, last_event_id=ids[2])
    assert [e["id"] for e in resumed] == ids[3:]
    job = stack.http.get(f"/v1/jobs/{jid}").json()
    assert job["status"] == "exhausted" and job["attempts_used"] == 4 and "attempt budget" in job["reason"]
    assert job["result"]["attempts_used"] == 4


def test_openai_client_chat_completions(stack):
    from openai import OpenAI

    oa = OpenAI(base_url=stack.url + "/v1", api_key=KEY, timeout=120)
    body = {"verifier": ANYTHING, "budget": {"max_attempts": 2}, "sampling": {"n": 2}}
    r = oa.chat.completions.create(
        model="best_of_k:tiny", max_tokens=8, seed=3, extra_body=body,
        messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Say yes."}])
    assert r.choices[0].finish_reason == "stop" and r.choices[0].message.role == "assistant"
    tta = r.model_extra["tta"]
    assert tta["status"] == "solved" and tta["attempts_used"] == 2
    job = stack.http.get(f"/v1/jobs/{tta['job_id']}").json()
    assert r.choices[0].message.content == job["result"]["solution"]
    assert job["request"]["problem"] == {"question": "Say yes.", "system_prompt": "Be brief."}
    # unsolved: the last attempt, and finish_reason says why
    r = oa.chat.completions.create(model="sdpo:tiny", max_tokens=8, messages=[{"role": "user", "content": "Say no."}],
                                   extra_body={**body, "verifier": IMPOSSIBLE, "sdpo": job_body()["sdpo"]})
    assert r.choices[0].finish_reason == "exhausted" and r.model_extra["tta"]["attempts_used"] == 2
    from openai import NotFoundError

    with pytest.raises(NotFoundError) as e:
        oa.chat.completions.create(model="sdpo:gpt-4", messages=[{"role": "user", "content": "x"}], extra_body=body)
    assert e.value.body["code"] == "model_not_found" or "model_not_found" in str(e.value)
    assert [m.id for m in oa.models.list()] == ["sdpo:tiny", "best_of_k:tiny", "multi_turn:tiny"]


def test_cancel_running_job_then_cancel_again_is_409(stack):
    jid = stack.http.post("/v1/jobs", json=job_body("Count to ten.", strategy="best_of_k", max_attempts=200)).json()["id"]
    for ev in _events_until(stack, jid, "verified"):
        pass
    r = stack.http.delete(f"/v1/jobs/{jid}")
    assert r.status_code == 202 and r.json() == {"id": jid, "status": "running", "cancel_requested": True}
    job = wait_status(stack.http, jid, timeout=60)
    assert job["status"] == "cancelled" and job["reason"] == "cancelled by request"
    assert job["attempts_used"] <= 3 * 2  # effective within a round or so
    r = stack.http.delete(f"/v1/jobs/{jid}")
    assert r.status_code == 409
    assert r.json()["error"]["code"] == "job_conflict" and "already finished (cancelled)" in r.json()["error"]["message"]


def _events_until(stack, jid, kind, timeout=90):
    from service.client import Client

    c = Client(stack.url, KEY)
    deadline = time.monotonic() + timeout
    for ev in c.events(jid):
        yield ev
        if ev.type == kind:
            return
        assert time.monotonic() < deadline, f"no {kind} event within {timeout} s"


def test_result_cache_answers_identical_request_with_zero_new_attempts(stack):
    body = job_body("Pick a number.", ANYTHING, strategy="best_of_k", max_attempts=2, seed=5)
    first = stack.http.post("/v1/jobs?wait=true&wait_s=90", json=body)
    assert first.status_code == 200 and first.json()["status"] == "solved"
    before = _attempts_total(stack)
    second = stack.http.post("/v1/jobs", json=body)
    assert second.status_code == 202
    acc = second.json()
    assert acc["cached_from"] == first.json()["id"] and acc["status"] == "solved" and acc["id"] != first.json()["id"]
    job = stack.http.get(f"/v1/jobs/{acc['id']}").json()
    assert job["attempts_used"] == 0 and job["cached_from"] == first.json()["id"]
    assert job["result"]["solution"] == first.json()["result"]["solution"]
    assert stack.http.get(f"/v1/jobs/{acc['id']}/attempts").json()["total"] == 0
    assert _attempts_total(stack) == before
    # opting out runs it again
    again = stack.http.post("/v1/jobs?wait=true&wait_s=90", json={**body, "cache": False}).json()
    assert again["cached_from"] is None and again["attempts_used"] == 2


def _attempts_total(stack) -> float:
    for line in stack.http.get("/metrics").text.splitlines():
        if line.startswith("tta_attempts_total "):
            return float(line.split()[1])
    return 0.0


def test_adapter_download_and_init_adapter_from(stack):
    from adapters.lifecycle import read_snapshot

    src = stack.http.post("/v1/jobs?wait=true&wait_s=120", json=job_body("Write a haiku.", seed=2)).json()
    assert src["status"] == "exhausted" and src["adapter_round"] == 1
    r = stack.http.get(f"/v1/jobs/{src['id']}/adapter")
    assert r.status_code == 200 and r.headers["content-type"] == "application/octet-stream"
    meta, tensors = read_snapshot(r.content)  # valid safetensors with our format marker
    assert meta["lora"]["rank"] == 4 and any("lora_A" in k for k in tensors) and int(meta["version"]) == 1

    warm = stack.http.post("/v1/jobs?wait=true&wait_s=120",
                           json=job_body("Write a haiku.", seed=9, max_attempts=2, init_adapter_from=src["id"])).json()
    assert warm["status"] == "exhausted" and warm["init_adapter_from"] == src["id"]
    assert warm["result"]["rounds"][0]["adapter_version"] == 1  # started from the source's trained adapter

    bok = stack.http.post("/v1/jobs?wait=true", json=job_body("Hi.", ANYTHING, strategy="best_of_k", seed=4)).json()
    r = stack.http.get(f"/v1/jobs/{bok['id']}/adapter")
    assert r.status_code == 404 and "trains no adapter" in r.json()["error"]["message"]
    r = stack.http.post("/v1/jobs", json=job_body(init_adapter_from=bok["id"]))
    assert r.status_code == 422 and "has no stored adapter" in r.json()["error"]["message"]
    r = stack.http.post("/v1/jobs", json=job_body(init_adapter_from="job_nope"))
    assert r.status_code == 404 and r.json()["error"]["code"] == "job_not_found"


def test_worker_sigkill_mid_job_resumes_on_the_other_worker(stack):
    """Kill the worker running a job right after its first checkpoint: the other worker claims
    the job after the lease, resumes from the checkpoint, and no attempt is lost or doubled."""
    jid = stack.http.post("/v1/jobs", json=job_body("Explain gravity.", max_attempts=8, seed=11)).json()["id"]
    for ev in _events_until(stack, jid, "checkpoint"):
        pass
    owner = stack.http.get(f"/v1/jobs/{jid}").json()["owner"]
    victim = stack.workers[owner]
    os.kill(victim.pid, signal.SIGKILL)
    victim.wait(10)
    job = wait_status(stack.http, jid, timeout=150)
    survivor = next(n for n in stack.workers if n != owner)
    assert job["status"] == "exhausted", job["reason"]
    assert job["owner"] == survivor and job["deliveries"] == 2
    res = job["result"]
    page = stack.http.get(f"/v1/jobs/{jid}/attempts").json()
    assert job["attempts_used"] == res["attempts_used"] == page["total"] == len(page["attempts"]) == 8
    assert sum(len(r["attempts"]) for r in res["rounds"]) == 8 and len(res["rounds"]) == 4
    assert [a["index"] for a in page["attempts"]] == list(range(8))
    assert [a["text"] for a in page["attempts"]] == [a["text"] for a in res["attempts"]]
    events = sse(stack.http, jid)
    claims = [e for e in events if e["type"] == "claimed"]
    assert [c["worker"] for c in claims] == [owner, survivor] and claims[1]["resumed_from_round"] >= 1
