"""Feedback text per kind, against golden files (regenerate with TTA_UPDATE_GOLDEN=1)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from sandbox.feedback import (
    FEEDBACK_BUDGET,
    format_feedback,
    harness_feedback,
    math_feedback,
)
from sandbox.harness import CaseResult, HarnessResult

GOLDEN = Path(__file__).parent / "golden"
TRACE = 'Traceback (most recent call last):\n  File "solution.py", line 3, in solve\n    return a // b\nZeroDivisionError: integer division or modulo by zero'

CASES = {
    "wrong_answer": (
        HarnessResult(
            total=4,
            cases=[
                CaseResult(0, "passed", "1 2", "3", "3"),
                CaseResult(1, "wrong_answer", "10 20 30 40 50", "150\n", "160\n"),
                CaseResult(2, "wrong_answer", "5 5", "11", "10"),
                CaseResult(3, "wrong_answer", "7 " * 400, "x" * 600, "y"),
            ],
        ),
        False,
        False,
    ),
    "runtime_error": (HarnessResult(total=3, cases=[CaseResult(0, "passed"), CaseResult(1, "runtime_error", "4 0", error=TRACE)]), False, False),
    "timeout": (HarnessResult(total=2, cases=[CaseResult(0, "timeout", "[1, 2, 3]\n1000000000")]), False, False),
    "memory": (HarnessResult(total=2, cases=[CaseResult(0, "memory", "100000")]), False, False),
    "compile_error": (HarnessResult(total=2, compile_error='File "solution.py", line 1\n    def f(:\nSyntaxError: invalid syntax'), False, False),
    "assert_wrong": (
        HarnessResult(total=1, cases=[CaseResult(0, "wrong_answer", line="assert candidate([1, 2]) == 3", error="AssertionError")]),
        True,
        False,
    ),
    "assert_runtime": (
        HarnessResult(
            total=1,
            cases=[CaseResult(0, "runtime_error", line="assert candidate([]) == 0", error=TRACE)],
        ),
        True,
        False,
    ),
    "truncated": (HarnessResult(total=2, compile_error='File "solution.py", line 9\nSyntaxError: unexpected EOF while parsing'), False, True),
}


def _check(name: str, text: str) -> None:
    path = GOLDEN / f"{name}.txt"
    if os.environ.get("TTA_UPDATE_GOLDEN") == "1":
        path.write_text(text + "\n", encoding="utf-8")
    assert text + "\n" == path.read_text(encoding="utf-8"), f"{name}: feedback changed (TTA_UPDATE_GOLDEN=1 to accept)"
    assert len(text) <= FEEDBACK_BUDGET


@pytest.mark.parametrize("name", sorted(CASES))
def test_harness_feedback_golden(name):
    result, assert_style, truncated = CASES[name]
    kind, text = harness_feedback(result, assert_style=assert_style, truncated=truncated)
    assert kind == {"assert_wrong": "wrong_answer", "assert_runtime": "runtime_error"}.get(name, name)
    _check(name, text)


def test_format_and_math_golden():
    _check("format", format_feedback(truncated=False)[1])
    _check("math_wrong", math_feedback("\\frac{1}{3}", truncated=False)[1])
    _check("math_missing", math_feedback(None, truncated=False)[1])


def test_budget_and_field_limits():
    huge = HarnessResult(
        total=50, cases=[CaseResult(i, "wrong_answer", "i" * 5000, "o" * 5000, "e" * 5000) for i in range(50)]
    )
    _kind, text = harness_feedback(huge, assert_style=False)
    assert len(text) <= FEEDBACK_BUDGET
    assert text.count("Wrong Answer") == 2  # at most two cases shown
    assert "i" * 300 not in text  # each field clipped
    assert text.endswith("Passed 0/50 test cases.")


def test_deterministic():
    result, a, t = CASES["wrong_answer"]
    assert harness_feedback(result, assert_style=a, truncated=t) == harness_feedback(result, assert_style=a, truncated=t)
