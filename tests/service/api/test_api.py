"""The HTTP contract without a model: auth, limits, the error shape, idempotency, cancel of
queued jobs, SSE framing, an unreachable Redis (real Redis: a private redis-server). The
store's own mechanics are in tests/service/test_store.py, the worker's in test_worker.py."""

from __future__ import annotations

import json
import time

import pytest

from tests.service.conftest import KEY, OTHER_KEY, free_port, job_body


def assert_error(r, status: int, code: str, *, contains: str = "") -> dict:
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message", "details"}, body
    assert body["error"]["code"] == code, body
    assert contains in body["error"]["message"], body
    return body["error"]


# ---- auth ------------------------------------------------------------------------------------


def test_auth_missing_or_wrong_key_is_401_in_our_shape(client):
    r = client.post("/v1/jobs", json=job_body(), headers={"Authorization": ""})
    assert_error(r, 401, "unauthorized", contains="missing API key")
    assert r.headers["www-authenticate"] == "Bearer"
    assert_error(client.get("/v1/jobs/x", headers={"Authorization": "Bearer wrong"}), 401, "unauthorized",
                 contains="invalid API key")
    assert_error(client.get("/v1/jobs/x", headers={"Authorization": "Basic abc"}), 401, "unauthorized")
    assert client.get("/healthz").json() == {"status": "ok"}  # probes carry no key
    assert client.post("/v1/jobs", json=job_body(), headers={"Authorization": f"Bearer {OTHER_KEY}"}).status_code == 202


def test_no_keys_refuses_to_start_unless_auth_is_off(settings):
    from fastapi.testclient import TestClient

    from service.app import create_app
    from service.errors import ServiceMisconfigured

    with pytest.raises(ServiceMisconfigured, match="TTA_API_KEYS.*TTA_AUTH=off"):
        create_app(settings.model_copy(update={"api_keys": ""}))
    with TestClient(create_app(settings.model_copy(update={"api_keys": "", "auth": "off"}))) as c:
        assert c.post("/v1/jobs", json=job_body()).status_code == 202


# ---- the error shape -------------------------------------------------------------------------


def test_validation_errors_are_422_naming_the_field(client):
    bad = job_body()
    bad["budget"]["max_attempts"] = 0
    err = assert_error(client.post("/v1/jobs", json=bad), 422, "invalid_request", contains="body.budget.max_attempts")
    assert err["details"]["errors"][0]["loc"] == ["body", "budget", "max_attempts"]
    assert_error(client.post("/v1/jobs", json={**job_body(), "bogus": 1}), 422, "invalid_request", contains="body.bogus")
    assert_error(client.post("/v1/jobs", json={**job_body(), "verifier": {"type": "nope"}}), 422, "invalid_request",
                 contains="body.verifier")
    assert_error(client.post("/v1/jobs", content=b"{not json", headers={"content-type": "application/json"}), 422,
                 "invalid_request")
    assert_error(client.post("/v1/jobs?wait=true&wait_s=301", json=job_body()), 422, "invalid_request",
                 contains="query.wait_s")


def test_unknown_job_route_and_method(client):
    assert_error(client.get("/v1/jobs/job_nope"), 404, "job_not_found", contains="job_nope")
    for path in ("/attempts", "/adapter", "/events"):
        assert_error(client.get(f"/v1/jobs/job_nope{path}"), 404, "job_not_found")
    assert_error(client.delete("/v1/jobs/job_nope"), 404, "job_not_found")
    assert_error(client.get("/v1/nothing"), 404, "not_found", contains="/v1/nothing")
    assert_error(client.put("/v1/jobs/x"), 405, "method_not_allowed", contains="PUT")


def test_request_size_limit_is_413(client):
    big = job_body("x" * 70_000)  # limit in these tests: 64 KiB
    assert_error(client.post("/v1/jobs", json=big), 413, "payload_too_large", contains="65536 bytes")

    def chunks():  # no Content-Length: counted as it arrives
        data = json.dumps(big).encode()
        for i in range(0, len(data), 8192):
            yield data[i : i + 8192]

    r = client.post("/v1/jobs", content=chunks(), headers={"content-type": "application/json"})
    assert_error(r, 413, "payload_too_large")


def test_per_key_concurrency_limit_is_429(client):
    ids = [client.post("/v1/jobs", json=job_body(seed=i)).json()["id"] for i in range(3)]
    err = assert_error(client.post("/v1/jobs", json=job_body(seed=9)), 429, "too_many_jobs", contains="3 queued or running")
    assert err["details"] == {"limit": 3}
    other = client.post("/v1/jobs", json=job_body(seed=9), headers={"Authorization": f"Bearer {OTHER_KEY}"})
    assert other.status_code == 202  # the limit is per key
    assert client.delete(f"/v1/jobs/{ids[0]}").json()["status"] == "cancelled"
    assert client.post("/v1/jobs", json=job_body(seed=9)).status_code == 202


def test_idempotency_key_returns_the_same_job_per_api_key(client):
    body = job_body(idempotency_key="req-1")
    a = client.post("/v1/jobs", json=body).json()
    b = client.post("/v1/jobs", json={**body, "seed": 5}).json()  # same key: the first job, unchanged
    assert a["created"] and not b["created"] and a["id"] == b["id"]
    c = client.post("/v1/jobs", json=body, headers={"Authorization": f"Bearer {OTHER_KEY}"}).json()
    assert c["id"] != a["id"]  # keys are scoped per API key
    assert client.get(f"/v1/jobs/{a['id']}").json()["request"]["seed"] == 0


# ---- cancel and events without a worker ----------------------------------------------------------


def test_cancel_queued_job_then_409_and_sse_resume(client):
    from service.client import parse_sse

    jid = client.post("/v1/jobs", json=job_body()).json()["id"]
    r = client.delete(f"/v1/jobs/{jid}")
    assert r.status_code == 202 and r.json() == {"id": jid, "status": "cancelled", "cancel_requested": True}
    job = client.get(f"/v1/jobs/{jid}").json()
    assert job["status"] == "cancelled" and "before it started" in job["reason"] and job["attempts_used"] == 0
    assert_error(client.delete(f"/v1/jobs/{jid}"), 409, "job_conflict", contains="already finished (cancelled)")
    assert_error(client.get(f"/v1/jobs/{jid}/adapter"), 404, "adapter_not_found", contains="no adapter snapshot")

    with client.stream("GET", f"/v1/jobs/{jid}/events") as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        events = list(parse_sse(r.iter_lines()))
    assert [e.type for e in events] == ["queued", "done"] and events[1].data["status"] == "cancelled"
    with client.stream("GET", f"/v1/jobs/{jid}/events", headers={"Last-Event-ID": events[0].id}) as r:
        assert [e.id for e in parse_sse(r.iter_lines())] == [events[1].id]
    assert_error(client.get(f"/v1/jobs/{jid}/events", headers={"Last-Event-ID": "nope"}), 422, "invalid_request",
                 contains="Last-Event-ID")


def test_wait_returns_current_state_when_not_done(client):
    t = time.monotonic()
    r = client.post("/v1/jobs?wait=true&wait_s=0.5", json=job_body())
    assert r.status_code == 202 and r.json()["status"] == "queued" and time.monotonic() - t < 5


# ---- Redis unreachable -----------------------------------------------------------------------------


def test_redis_unreachable_at_submit_is_503(settings):
    from fastapi.testclient import TestClient

    from service.app import create_app

    s = settings.model_copy(update={"redis_url": f"redis://127.0.0.1:{free_port()}/0"})
    with TestClient(create_app(s), headers={"Authorization": f"Bearer {KEY}"}) as c:
        assert_error(c.post("/v1/jobs", json=job_body()), 503, "store_unavailable", contains="nothing was submitted")
        assert_error(c.get("/v1/jobs/job_x"), 503, "store_unavailable")
        assert_error(c.get("/readyz"), 503, "not_ready", contains="Redis")
        assert c.get("/healthz").status_code == 200
        assert "tta_store_up 0.0" in c.get("/metrics").text


# ---- docs and metrics ---------------------------------------------------------------------------------


def test_openapi_has_examples_and_metrics_are_prometheus(client):
    spec = client.get("/openapi.json").json()
    assert spec["components"]["schemas"]["JobCreate"]["examples"][0]["verifier"]["type"] == "python_tests"
    assert "/v1/chat/completions" in spec["paths"] and client.get("/docs").status_code == 200
    client.post("/v1/jobs", json=job_body())
    text = client.get("/metrics").text
    for needle in ('tta_jobs{status="queued"} 1.0', "tta_attempts_total", 'tta_phase_seconds_total{phase="train"}',
                   'tta_queue_depth{state="waiting"} 1.0', "tta_active_adapters", "tta_workers",
                   'tta_http_request_seconds_count{method="POST",route="/v1/jobs",status="202"}'):
        assert needle in text, needle
