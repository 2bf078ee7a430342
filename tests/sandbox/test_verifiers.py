"""math, exact and regex verifiers, and python_tests formats end to end."""

from __future__ import annotations

import uuid
from pathlib import Path

from pydantic import TypeAdapter

from sandbox import VerifierSpec, verify, verify_many

SPEC = TypeAdapter(VerifierSpec)


def test_math_equivalent_forms():
    spec = SPEC.validate_python({"type": "math", "answer": "0.5"})
    assert verify(spec, "So the result is \\boxed{1/2}.").verdict == "pass"
    assert verify(spec, "Thus $x = \\frac{1}{2}$, i.e. \\boxed{\\frac{1}{2}}").verdict == "pass"
    assert verify(spec, "The answer is 0.5").verdict == "pass"


def test_math_wrong_answer_does_not_reveal_gold():
    spec = SPEC.validate_python({"type": "math", "answer": "\\frac{7}{13}"})
    result = verify(spec, "Therefore \\boxed{3}")
    assert result.verdict == "fail" and result.kind == "wrong_answer"
    assert "3" in result.feedback and "7" not in result.feedback and "13" not in result.feedback


def test_math_no_answer():
    spec = SPEC.validate_python({"type": "math", "answer": "2"})
    result = verify(spec, "I am not sure how to proceed.")
    assert result.kind == "format" and "\\boxed{}" in result.feedback
    assert verify(spec, "Let me think", truncated=True).kind == "truncated"


def test_math_does_not_eval_text():
    spec = SPEC.validate_python({"type": "math", "answer": "2"})
    marker = Path(f"/tmp/tta_math_eval_{uuid.uuid4().hex}")
    assert verify(spec, f"__import__('os').system('touch {marker}')").verdict == "fail"
    assert not marker.exists()


def test_exact():
    spec = SPEC.validate_python({"type": "exact", "answer": "Paris", "case_sensitive": False})
    assert verify(spec, "  paris\n").verdict == "pass"
    assert verify(spec, "London").verdict == "fail"
    strict = SPEC.validate_python({"type": "exact", "answer": "Paris", "strip": False})
    assert verify(strict, " Paris").verdict == "fail"


def test_regex():
    spec = SPEC.validate_python({"type": "regex", "pattern": r"answer:\s*\d+", "flags": ["IGNORECASE"]})
    assert verify(spec, "... ANSWER: 42").verdict == "pass"
    full = SPEC.validate_python({"type": "regex", "pattern": r"\d+", "fullmatch": True})
    assert verify(full, " 42 ").verdict == "pass"
    assert verify(full, "42 apples").verdict == "fail"


def test_stdio_float_tolerance(runner):
    spec = SPEC.validate_python(
        {"type": "python_tests", "format": "stdio", "float_tolerance": 1e-6, "cases": [{"input": "3\n", "output": "0.333333333\n"}]}
    )
    assert verify(spec, "```python\nprint(1 / int(input()))\n```", runner=runner).verdict == "pass"
    assert verify(spec, "```python\nprint(0.3)\n```", runner=runner).kind == "wrong_answer"


def test_functional_solution_class_and_wrong_answer(runner):
    spec = SPEC.validate_python(
        {
            "type": "python_tests",
            "format": "functional",
            "fn_name": "twoSum",
            "cases": [
                {"input": "[2, 7, 11, 15]\n9", "output": "[0, 1]"},
                {"input": [[3, 2, 4], 6], "output": [1, 2]},
            ],
        }
    )
    good = (
        "```python\nclass Solution:\n    def twoSum(self, nums, target):\n        seen = {}\n"
        "        for i, x in enumerate(nums):\n            if target - x in seen:\n                return [seen[target - x], i]\n"
        "            seen[x] = i\n```"
    )
    assert verify(spec, good, runner=runner).verdict == "pass"
    bad = verify(spec, "```python\ndef twoSum(nums, target):\n    return [0, 1]\n```", runner=runner)
    assert bad.verdict == "fail" and bad.passed == 1 and bad.score == 0.5
    assert "Test Case 2: Wrong Answer" in bad.feedback and "Expected: [1, 2]" in bad.feedback


def test_runtime_error_feedback(runner):
    spec = SPEC.validate_python({"type": "python_tests", "format": "stdio", "cases": [{"input": "4 0\n", "output": "x\n"}]})
    result = verify(spec, "```python\na, b = map(int, input().split())\nprint(a // b)\n```", runner=runner)
    assert result.kind == "runtime_error"
    assert "ZeroDivisionError" in result.feedback and "Last Executed Input: 4 0" in result.feedback


def test_no_code_and_truncated(runner):
    spec = SPEC.validate_python({"type": "python_tests", "format": "stdio", "cases": [{"input": "", "output": "1"}]})
    assert verify(spec, "I would print one.", runner=runner).kind == "format"
    cut = verify(spec, "```python\nprint(", truncated=True, runner=runner)
    assert cut.kind == "truncated" and "cut off" in cut.feedback


def test_verify_many_keeps_order(runner):
    spec = SPEC.validate_python({"type": "python_tests", "format": "stdio", "cases": [{"input": "", "output": "1"}]})
    results = verify_many(spec, ["```python\nprint(1)\n```", "```python\nprint(2)\n```", "nothing"], runner=runner)
    assert [r.verdict for r in results] == ["pass", "fail", "fail"]
    assert [r.kind for r in results] == ["passed", "wrong_answer", "format"]


SQUARES = """
METADATA = {}


def check(candidate):
    assert candidate(1) == 1
    assert candidate(2) == 4
    for x in (3, 4):
        assert candidate(x) == x * x, f"wrong for {x}"
    assert candidate(5) == 25
    assert True, "HumanEval's debugging line: not a case"
"""


def _squares(**extra):
    return SPEC.validate_python({"type": "python_tests", "format": "assert", "tests": SQUARES, "entry_point": "sq", **extra})


def _sq(body: str) -> str:
    return f"```python\ndef sq(x):\n{body}\n```"


def test_assert_check_is_scored_per_assert_statement(runner):
    spec = _squares()
    assert verify(spec, _sq("    return x * x"), runner=runner).model_dump(include={"verdict", "passed", "total", "score"}) == {
        "verdict": "pass", "passed": 4, "total": 4, "score": 1.0}
    # right up to 3, then wrong: the loop is one case and fails on 4; the next case still runs
    partial = verify(spec, _sq("    return x * x if x < 4 else 0"), runner=runner)
    assert (partial.verdict, partial.kind, partial.passed, partial.total, partial.score) == ("fail", "wrong_answer", 2, 4, 0.5)
    # the feedback names the first failed statement only, as when check() stopped there
    assert partial.feedback == 'Wrong Answer: assertion failed: assert candidate(x) == x * x, f"wrong for {x}"\nAssertionError: wrong for 4'
    wrong_first = verify(spec, _sq("    return x * x if x != 1 else 0"), runner=runner)
    assert (wrong_first.passed, wrong_first.total) == (3, 4)
    assert wrong_first.feedback == "Wrong Answer: assertion failed: assert candidate(1) == 1"
    # a format failure is scored on the same cases
    assert verify(spec, "no code here", runner=runner).total == 4


def test_assert_check_stops_at_a_runtime_error_unless_run_all(runner):
    boom = _sq("    if x == 2:\n        raise ValueError('two')\n    return x * x")
    stopped = verify(_squares(), boom, runner=runner)
    assert (stopped.kind, stopped.passed, stopped.total) == ("runtime_error", 1, 4)
    assert "ValueError: two" in stopped.feedback and "Last Executed Test: assert candidate(2) == 4" in stopped.feedback
    every = verify(_squares(run_all_cases=True), boom, runner=runner)
    assert (every.kind, every.passed, every.total) == ("runtime_error", 3, 4)


def test_assert_check_times_out_in_the_case_that_loops(runner):
    loops = _sq("    while x == 4:\n        pass\n    return x * x")
    result = verify(_squares(time_limit_s=1, total_time_limit_s=2), loops, runner=runner)
    assert (result.kind, result.passed, result.total) == ("timeout", 2, 4)


def test_assert_check_failing_outside_its_cases_fails_the_attempt(runner):
    # every assert passes, then a line between cases raises: check() would have failed
    tests = "def check(candidate):\n    assert candidate(1) == 1\n    candidate(None) + 1\n"
    spec = SPEC.validate_python({"type": "python_tests", "format": "assert", "tests": tests, "entry_point": "sq"})
    result = verify(spec, _sq("    return x"), runner=runner)
    assert (result.verdict, result.kind, result.passed, result.total) == ("fail", "runtime_error", 0, 1)


def test_a_check_without_assert_statements_is_one_case(runner):
    tests = "def check(candidate):\n    if candidate(2) != 4:\n        raise AssertionError('2')\n"
    spec = SPEC.validate_python({"type": "python_tests", "format": "assert", "tests": tests, "entry_point": "sq"})
    good = verify(spec, _sq("    return x * x"), runner=runner)
    bad = verify(spec, _sq("    return x"), runner=runner)
    assert (good.verdict, good.total, bad.verdict, bad.total, bad.passed) == ("pass", 1, "fail", 1, 0)
