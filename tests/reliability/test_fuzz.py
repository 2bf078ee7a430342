"""Schemathesis against the live OpenAPI schema of a running `tta serve`: at least 200
generated requests (bench/reliability.py sends 1000+), no 5xx, every 4xx in our error shape."""

from __future__ import annotations

from tests.reliability.bad_input import GOOD
from tests.reliability.fuzz import fuzz

MIN_REQUESTS = 200


def test_fuzzed_requests_get_no_5xx_and_errors_in_our_shape(api_server):
    known = []
    for seed in range(3):  # finished jobs, so generated ids also reach the handlers of real jobs
        jid = api_server.http.post("/v1/jobs", json={**GOOD, "seed": seed, "cache": False}).json()["id"]
        api_server.http.delete(f"/v1/jobs/{jid}")
        known.append(jid)
    report = fuzz(api_server.url, api_server.api_keys[0], examples=25, seed=1, known_ids=tuple(known))
    assert report.requests >= MIN_REQUESTS, report.summary()
    assert not report.server_errors, "\n\n".join(report.server_errors[:5])
    assert not report.bad_shape, "\n\n".join(report.bad_shape[:5])
    statuses = report.summary()["by_status"]
    assert {"200", "202", "401", "404", "409", "422"} <= set(statuses), statuses  # the paths were reached
