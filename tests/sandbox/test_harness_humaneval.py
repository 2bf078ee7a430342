"""All 164 HumanEval canonical solutions pass our assert harness, every case of them; stubs fail readably."""

from __future__ import annotations

from pydantic import TypeAdapter

from sandbox import SandboxLimits, VerifierSpec, verify_many

SPEC = TypeAdapter(VerifierSpec)
LIMITS = SandboxLimits(wall_timeout_s=30)


def _spec(problem: dict[str, str]) -> VerifierSpec:
    return SPEC.validate_python(
        {
            "type": "python_tests",
            "format": "assert",
            "tests": problem["test"],
            "entry_point": problem["entry_point"],
            # generous: CI machines are shared and a few canonical solutions take ~1 s
            "time_limit_s": 15,
            "total_time_limit_s": 20,
        }
    )


def _fenced(code: str) -> str:
    return f"Here is my solution:\n```python\n{code}\n```\n"


def test_canonical_solutions_pass_and_stubs_fail(humaneval, runner):
    failures = []
    multi = 0
    for task_id, p in humaneval.items():
        spec = _spec(p)
        good, stub = verify_many(
            spec,
            [_fenced(p["prompt"] + p["canonical_solution"]), _fenced(p["prompt"] + "    return None\n")],
            limits=LIMITS,
            max_parallel=2,
        )
        if good.verdict != "pass" or good.score != 1.0 or good.passed != good.total:
            failures.append((task_id, "canonical", good.kind, good.feedback))
        if stub.total != good.total or stub.passed >= stub.total:
            failures.append((task_id, "stub cases", stub.passed, stub.total))
        multi += good.total > 1
        if stub.verdict != "fail" or stub.kind not in {"wrong_answer", "runtime_error", "timeout"}:
            failures.append((task_id, "stub", stub.kind, stub.feedback))
        elif not stub.feedback.startswith(("Wrong Answer: assertion failed: ", "Runtime Error", "Time Limit")):
            failures.append((task_id, "stub feedback", stub.kind, stub.feedback))
        elif len(stub.feedback) > 2000 or "tests.py" not in stub.feedback and "assert" not in stub.feedback:
            failures.append((task_id, "stub feedback unreadable", stub.kind, stub.feedback))
    assert not failures, failures[:5]
    # scored per assert statement: a failed attempt can earn partial credit on nearly all of them
    assert multi >= 150, multi
