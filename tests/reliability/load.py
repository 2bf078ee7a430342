"""The load scenario: many jobs submitted at once to `tta serve` with its workers, all of
which must end, with stored attempts equal to reported ones. Shared by test_load.py (50
jobs) and bench/reliability.py (the same 50, plus status-read latencies)."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import httpx

from tests.service.conftest import ANYTHING, IMPOSSIBLE, TINY_SDPO

LOAD_JOBS = 50


def load_body(i: int) -> tuple[dict, str]:
    """Job i of the mix and the status it must end in: mostly best_of_k (some solved at once,
    some spending their budget), every fifth an sdpo job that trains a step between its two
    rounds, every tenth a multi_turn conversation. Seeds differ, so no answer comes from the
    result cache."""
    solved = i % 2 == 0
    body = {"problem": {"question": f"Name a number bigger than {i}."}, "verifier": ANYTHING if solved else IMPOSSIBLE,
            "strategy": "best_of_k", "budget": {"max_attempts": 2}, "sampling": {"n": 2, "max_new_tokens": 4},
            "seed": i, "cache": False}
    if i % 5 == 1:
        body.update(strategy="sdpo", budget={"max_attempts": 4}, sdpo=TINY_SDPO)
    elif i % 10 == 3:
        body.update(strategy="multi_turn", budget={"max_attempts": 2}, sampling={"n": 1, "max_new_tokens": 4})
    return body, "solved" if solved else "exhausted"


@dataclass
class LoadRun:
    ids: list[str]
    expected: list[str]
    jobs: list[dict] = field(default_factory=list)
    status_latency_s: list[float] = field(default_factory=list)  # every GET /v1/jobs/{id} while waiting
    submit_latency_s: list[float] = field(default_factory=list)
    drain_s: float = 0.0  # first submit to last job final


def run_load(url: str, api_key: str, n: int = LOAD_JOBS, poll_s: float = 0.5, timeout_s: float = 600.0) -> LoadRun:
    """`n` clients at once, each submitting one job and polling its status every `poll_s`
    until it is final (every poll's latency is kept)."""
    headers = {"Authorization": f"Bearer {api_key}"}
    bodies = [load_body(i) for i in range(n)]
    start = threading.Barrier(n)
    latencies: list[float] = []
    submitted: list[float] = []

    def client(body: dict) -> tuple[str, dict]:
        with httpx.Client(base_url=url, headers=headers, timeout=60) as c:
            start.wait()  # all submits at once
            t = time.perf_counter()
            r = c.post("/v1/jobs", json=body)
            submitted.append(time.perf_counter() - t)
            assert r.status_code == 202, r.text
            jid = r.json()["id"]
            deadline = time.monotonic() + timeout_s
            while True:
                t = time.perf_counter()
                job = c.get(f"/v1/jobs/{jid}").json()
                latencies.append(time.perf_counter() - t)
                if job["status"] in ("solved", "exhausted", "cancelled", "failed"):
                    return jid, job
                assert time.monotonic() < deadline, f"job {jid} not final after {timeout_s} s: {job['status']}"
                time.sleep(poll_s)

    t0 = time.monotonic()
    with ThreadPoolExecutor(n) as pool:
        done = list(pool.map(client, [b for b, _ in bodies]))
    return LoadRun(ids=[j for j, _ in done], expected=[e for _, e in bodies], jobs=[job for _, job in done],
                   status_latency_s=latencies, submit_latency_s=submitted, drain_s=time.monotonic() - t0)
