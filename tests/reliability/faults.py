"""Fault scenarios on a running `Stack`. Each injects one fault, checks what must hold
(raising AssertionError with the first thing that does not) and returns what it observed,
for the figures. test_faults.py runs them; bench/reliability.py runs them and tabulates.
Each leaves the stack to be healed with `stack.heal()`.

The kill of tests/service/api/test_live.py lands right after a checkpoint (between rounds);
here it lands inside a round, when the round's attempts exist only in the worker."""

from __future__ import annotations

import os
import re
import signal
import socket
import time

from tests.reliability.live import Stack
from tests.service.conftest import ANYTHING, IMPOSSIBLE, TINY_SDPO


def sdpo_job(question: str, *, attempts: int, seed: int) -> dict:
    return {"problem": {"question": question}, "verifier": IMPOSSIBLE, "strategy": "sdpo",
            "budget": {"max_attempts": attempts}, "sampling": {"n": 2, "max_new_tokens": 8}, "sdpo": TINY_SDPO,
            "seed": seed, "cache": False}


def worker_sigkill_mid_round(stack: Stack) -> dict:
    before = stack.metric("tta_attempts_total")
    jid = stack.submit(sdpo_job("Explain the tides.", attempts=6, seed=21))
    # `training` of round 1: its two attempts are verified but held only by the worker (the
    # checkpoint that stores them comes after training): a crash here could lose them or,
    # on resume, count them twice
    for ev in stack.events(jid):
        if ev["type"] == "training" and ev["round"] == 1:
            break
    victim = stack.http.get(f"/v1/jobs/{jid}").json()["owner"]
    os.kill(stack.worker_pid(victim), signal.SIGKILL)
    killed_at = time.monotonic()

    job = stack.wait_final(jid)
    claims = [e for e in stack.events(jid) if e["type"] == "claimed"]
    seen = {"status": job["status"], "attempts_used": job["attempts_used"], "deliveries": job["deliveries"],
            "resumed_from_round": claims[-1]["resumed_from_round"], "kill_to_final_s": time.monotonic() - killed_at,
            "attempts_counted": stack.metric("tta_attempts_total") - before}
    assert job["status"] == "exhausted", job["reason"]
    assert job["owner"] != victim and job["deliveries"] == 2, seen
    stack.check_record(job)
    assert job["attempts_used"] == 6 and [len(r["attempts"]) for r in job["result"]["rounds"]] == [2, 2, 2]
    assert [c["worker"] for c in claims] == [victim, job["owner"]]
    assert seen["resumed_from_round"] == 1, seen  # round 1 died with the worker and was run again
    assert seen["attempts_counted"] == 6, seen  # the lost round was never counted
    return seen


def redis_restart_mid_job(stack: Stack, *, crash: bool = False, down_s: float = 3.0) -> dict:
    """Two jobs running and one queued when Redis goes away for `down_s` and comes back:
    a clean shutdown (SIGTERM: AOF flushed) or, with `crash`, SIGKILL (up to a second of
    writes lost with appendfsync everysec). Every job must end solved/exhausted, or failed
    with its reason, and every record must be whole."""
    before = stack.metric("tta_attempts_total")
    jids = [stack.submit(sdpo_job(f"Describe the colour {c}.", attempts=6, seed=30 + i + 10 * crash))
            for i, c in enumerate(("red", "green", "blue"))]
    for ev in stack.events(jids[0]):
        if ev["type"] == "checkpoint":
            break
    stack.redis.stop(signal.SIGKILL if crash else signal.SIGTERM)
    time.sleep(down_s)  # long enough for a round to end, or a lease to lapse, while Redis is away
    stack.redis.start()
    jobs = [stack.wait_final(j) for j in jids]
    seen = {"statuses": [j["status"] for j in jobs], "reasons": [j["reason"] for j in jobs],
            "deliveries": [j["deliveries"] for j in jobs], "attempts": [j["attempts_used"] for j in jobs],
            "attempts_counted": stack.metric("tta_attempts_total") - before}
    for job in jobs:
        assert job["status"] in ("exhausted", "failed"), job
        if job["status"] == "failed":
            assert job["reason"], job
        stack.check_record(job)
    assert seen["attempts_counted"] == sum(seen["attempts"]), seen
    assert stack.metric('tta_jobs{status="running"}') == 0 and stack.metric('tta_jobs{status="queued"}') == 0
    return seen


def redis_unreachable_at_submit(stack: Stack) -> dict:
    r = stack.redis.client()
    ns = f"{stack.namespace}:v1"

    def state(r) -> tuple:
        return (set(r.scan_iter(match=f"{ns}:job:*")), r.xlen(f"{ns}:queue"), set(r.scan_iter(match=f"{ns}:idem:*")),
                {k: r.smembers(k) for k in r.scan_iter(match=f"{ns}:active:*")})

    before = state(r)
    body = {**sdpo_job("Say yes.", attempts=2, seed=40), "verifier": ANYTHING, "idempotency_key": "submit-in-outage"}
    stack.redis.stop(signal.SIGTERM)
    try:
        t = time.monotonic()
        resp = stack.http.post("/v1/jobs", json=body)
        answer_s = time.monotonic() - t
        ready = stack.http.get("/readyz")
    finally:
        stack.redis.start()
    seen = {"status": resp.status_code, "message": resp.json()["error"]["message"], "answer_s": answer_s}
    assert resp.status_code == 503, resp.text
    err = resp.json()["error"]
    assert err["code"] == "store_unavailable" and "Redis" in err["message"] and "nothing was submitted" in err["message"]
    assert str(stack.redis.port) not in resp.text  # the backend's address stays private
    assert ready.status_code == 503 and ready.json()["error"]["details"]["checks"]["redis"] is False
    assert state(stack.redis.client()) == before  # no record, queue entry, idempotency key or slot
    again = stack.http.post("/v1/jobs", json=body)  # the idempotency key was not half-written either
    assert again.status_code == 202 and again.json()["created"] is True, again.text
    assert stack.wait_final(again.json()["id"])["status"] == "solved"
    return seen


def sandbox_killed_mid_verification(stack: Stack, *, restart_at_once: bool = False) -> dict:
    """Stop the sandbox service, let a verification request reach it, kill it. The worker
    retries; with the sandbox still down it records the attempts as verifier errors (not
    failures of the attempt) and the job goes on; with `restart_at_once` the sandbox comes
    back while the worker retries, and the attempts may be judged after all."""
    os.kill(stack.sandbox.pid, signal.SIGSTOP)
    try:
        jid = stack.submit({"problem": {"question": "Name a planet."}, "verifier": IMPOSSIBLE, "strategy": "best_of_k",
                            "budget": {"max_attempts": 4}, "sampling": {"n": 2, "max_new_tokens": 8},
                            "seed": 50 + restart_at_once, "cache": False})
        deadline = time.monotonic() + 120
        while stack.sandbox_requests_waiting() == 0:  # the request sits in the stopped server's socket
            assert time.monotonic() < deadline, "no verification request reached the sandbox"
            time.sleep(0.05)
    finally:
        os.kill(stack.sandbox.pid, signal.SIGKILL)
        stack.sandbox.wait(10)
    if restart_at_once:
        stack.start_sandbox()
    for ev in stack.events(jid):
        if ev["type"] == "verified" and ev["round"] == 0:
            round0 = ev["kinds"]
            break
    if not restart_at_once:
        stack.start_sandbox()
    job = stack.wait_final(jid)
    attempts = stack.http.get(f"/v1/jobs/{jid}/attempts").json()["attempts"]
    seen = {"status": job["status"], "verdicts": [a["verdict"] for a in attempts], "round0_kinds": round0}
    assert job["status"] == "exhausted" and "attempt budget spent" in job["reason"], job
    stack.check_record(job)
    for a in attempts:
        assert a["verdict"] in ("error", "fail"), a
        if a["verdict"] == "error":
            assert "sandbox server" in a["feedback"] and "unreachable" in a["feedback"], a
    if not restart_at_once:
        assert round0 == ["error", "error"], seen
    later = stack.wait_final(stack.submit({**job["request"], "seed": 60 + restart_at_once, "cache": False}))
    assert {a["verdict"] for a in later["result"]["attempts"]} == {"fail"}  # the restarted sandbox judges again
    return seen


def sse_clients_drop(stack: Stack) -> dict:
    jid = stack.submit(sdpo_job("Name a river.", attempts=4, seed=70))
    request = (f"GET /v1/jobs/{jid}/events HTTP/1.1\r\nHost: x\r\n"
               f"Authorization: Bearer {stack.api_keys[0]}\r\n\r\n").encode()
    seen_bytes = b""
    markers = (b"HTTP/1.1 200", b"event: queued", b"event: claimed", b"event: round_start")
    for marker in markers:
        s = socket.create_connection(("127.0.0.1", stack.api_port), timeout=60)
        s.sendall(request)
        got = b""
        while marker not in got:
            chunk = s.recv(65536)
            assert chunk, got
            got += chunk
        seen_bytes = got
        # drop it hard, mid-stream: RST, no goodbye
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        s.close()
    last_id = re.findall(rb"^id: (\S+)$", seen_bytes, re.M)[-1].decode()
    job = stack.wait_final(jid)
    full = [e["id"] for e in stack.events(jid)]
    resumed = list(stack.events(jid, after=last_id))
    seen = {"dropped_connections": len(markers), "status": job["status"], "attempts_used": job["attempts_used"],
            "resumed_events": len(resumed)}
    assert job["status"] == "exhausted" and job["attempts_used"] == 4, job
    stack.check_record(job)
    assert [e["id"] for e in resumed] == full[full.index(last_id) + 1:] and resumed[-1]["type"] == "done"
    return seen


def deadline_passes(stack: Stack) -> dict:
    jid = stack.submit({"problem": {"question": "Count sheep."}, "verifier": IMPOSSIBLE, "strategy": "best_of_k",
                        "budget": {"max_attempts": 4096, "deadline_s": 2}, "sampling": {"n": 2, "max_new_tokens": 4},
                        "seed": 80, "cache": False})
    job = stack.wait_final(jid)
    seen = {"status": job["status"], "reason": job["reason"], "attempts_used": job["attempts_used"],
            "wall_s": job["result"]["wall_s"] if job["result"] else None}
    assert job["status"] == "exhausted", job
    assert re.fullmatch(r"deadline of 2 s passed after \d+ attempts", job["reason"]), job["reason"]
    assert 0 < job["attempts_used"] < 4096 and job["result"]["wall_s"] >= 2
    stack.check_record(job)
    return seen


SCENARIOS = {
    "worker SIGKILLed mid-round": worker_sigkill_mid_round,
    "Redis restarted mid-job (SIGTERM, AOF)": redis_restart_mid_job,
    "Redis unreachable at submit": redis_unreachable_at_submit,
    "sandbox service killed mid-verification": sandbox_killed_mid_verification,
    "SSE clients drop mid-stream": sse_clients_drop,
    "deadline passes": deadline_passes,
}
