"""50 jobs submitted at once to `tta serve --workers 2`: every job ends in the status its
verifier implies, and every count agrees (API, attempts list, Redis, /metrics)."""

from __future__ import annotations

import pytest

from tests.reliability.load import LOAD_JOBS, run_load

pytestmark = pytest.mark.slow


def test_fifty_concurrent_jobs_all_end_and_counts_agree(stack):
    attempts_before = stack.metric("tta_attempts_total")
    run = run_load(stack.url, stack.api_keys[0], LOAD_JOBS)
    for job, expected in zip(run.jobs, run.expected):
        assert job["status"] == expected, (job["status"], job["reason"])
        stack.check_record(job)
    reported = sum(j["attempts_used"] for j in run.jobs)
    assert stack.metric("tta_attempts_total") - attempts_before == reported
    assert stack.metric('tta_jobs{status="running"}') == 0 and stack.metric('tta_jobs{status="queued"}') == 0
    assert stack.metric('tta_queue_depth{state="waiting"}') == 0
    assert stack.metric('tta_queue_depth{state="in_progress"}') == 0
