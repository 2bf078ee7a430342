"""Faults injected into the running stack (`tta serve --workers 2`, `tta sandbox serve`, a
Redis with AOF): the scenarios of faults.py, each with its checks; the stack is healed
after each (a killed worker replaced, Redis and the sandbox up)."""

from __future__ import annotations

import pytest

from tests.reliability import faults

pytestmark = pytest.mark.slow


@pytest.fixture(autouse=True)
def healed(stack):
    yield
    stack.heal()


def test_worker_sigkill_mid_round_resumes_and_counts_nothing_twice(stack):
    faults.worker_sigkill_mid_round(stack)


def test_redis_restart_mid_job_with_aof(stack):
    faults.redis_restart_mid_job(stack)


def test_redis_unreachable_at_submit_is_503_and_nothing_is_written(stack):
    faults.redis_unreachable_at_submit(stack)


def test_sandbox_killed_mid_verification_job_goes_on(stack):
    faults.sandbox_killed_mid_verification(stack)


def test_client_dropping_sse_connections_leaves_the_job_unaffected(stack):
    faults.sse_clients_drop(stack)


def test_deadline_passing_ends_exhausted_with_the_reason(stack):
    faults.deadline_passes(stack)
