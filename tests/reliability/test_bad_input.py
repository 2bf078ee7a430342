"""Bad input against a running `tta serve`: each case of the table in bad_input.py gets its
expected status, error code and message, always in our error shape; and none of them leaves
anything behind in Redis."""

from __future__ import annotations

import pytest

from tests.reliability.bad_input import CASES, problems, send


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_input_gets_its_status_and_message(api_server, case):
    r = send(api_server.http, case)
    assert not problems(case, r), (problems(case, r), r.text[:500])


def test_rejected_requests_write_nothing(api_server):
    """A refused submit leaves no job, queue entry or idempotency key behind."""
    r = api_server.redis.client()
    ns = f"{api_server.namespace}:v1"
    before = {k for k in r.scan_iter(match=f"{ns}:*")}
    queue = r.xlen(f"{ns}:queue") if r.exists(f"{ns}:queue") else 0
    for case in CASES:
        if case.method == "POST" and case.path == "/v1/jobs" and case.status != 202:
            body = dict(case.json_body, idempotency_key=f"bad-{case.name}") if case.json_body else None
            send(api_server.http, case if body is None else type(case)(**{**case.__dict__, "json_body": body}))
    after = {k for k in r.scan_iter(match=f"{ns}:*")}
    assert after == before and (r.xlen(f"{ns}:queue") if r.exists(f"{ns}:queue") else 0) == queue
