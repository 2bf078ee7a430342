"""Fakes for the benchmark tests: SolveResults built without a model."""

from __future__ import annotations

import pytest

from service.schemas import (
    AttemptRecord,
    RoundRecord,
    RoundTimings,
    SolveRequest,
    SolveResult,
)


def fake_result(req: SolveRequest, solved_at: int | None, tokens: int = 10,
                generate_s: float = 1.0, verify_s: float = 0.5, train_s: float = 2.0) -> SolveResult:
    """What the solver would return if attempt `solved_at` (0-based) passed, rounds of `n`."""
    k, n = req.budget.max_attempts, req.sampling.n
    used = k if solved_at is None else min(k, (solved_at // n + 1) * n)
    attempts, rounds = [], []
    for r, start in enumerate(range(0, used, n)):
        idx = list(range(start, min(start + n, used)))
        for i in idx:
            ok = i == solved_at
            attempts.append(AttemptRecord(
                index=i, round=r, text="x", tokens=tokens, truncated=False, verdict="pass" if ok else "fail",
                score=float(ok), passed_cases=int(ok), total_cases=1, feedback="" if ok else "wrong", kind="passed" if ok else "wrong_answer"))
        last = idx[-1] + 1 >= used
        rounds.append(RoundRecord(round=r, attempts=idx, passes=int(solved_at in idx), timings=RoundTimings(
            generate_s=generate_s, verify_s=verify_s,
            train_s=train_s if (req.strategy == "sdpo" and not last) else 0.0)))
    return SolveResult(
        status="solved" if solved_at is not None else "exhausted", reason=None if solved_at is not None else "budget",
        strategy=req.strategy, model="fake", engine="fake", seed=req.seed,
        solution="x" if solved_at is not None else None, solved_attempt=solved_at, attempts_used=used,
        rounds=rounds, attempts=attempts, templates={}, timings=RoundTimings(), wall_s=0.01,
        tokens_generated=tokens * used)


@pytest.fixture
def make_result():
    return fake_result
