"""Judging attempts: `verify(spec, response)` -> `Verification`.

Verdicts: "pass"; "fail" (the attempt is wrong in any way, including code that
crashes, loops or attacks the sandbox); "error" (the verifier itself could not
decide: sandbox unavailable, HTTP verifier refused or unreachable). An "error" is not
evidence about the attempt and must not be trained on as a failure.
"""

from __future__ import annotations

import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from functools import lru_cache
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from sandbox.errors import (
    HttpVerifierRefused,
    SandboxError,
    SandboxUnavailable,
    VerifierUnreachable,
)
from sandbox.extract import extract_code
from sandbox.feedback import (
    TRUNCATED_MESSAGE,
    Kind,
    format_feedback,
    harness_feedback,
    math_feedback,
    text_feedback,
)
from sandbox.harness import case_total, run_tests
from sandbox.http_verifier import HttpPolicy, call_http_verifier
from sandbox.limits import SandboxLimits
from sandbox.runner import Runner
from sandbox.specs import (
    ExactSpec,
    HttpSpec,
    MathSpec,
    PythonTestsSpec,
    RegexSpec,
    VerifierSpec,
)


class Verification(BaseModel):
    """The judgement of one attempt (the public result record)."""

    model_config = ConfigDict(extra="forbid")

    verdict: Literal["pass", "fail", "error"] = Field(description='"pass", "fail", or "error" (the verifier could not decide; not the attempt\'s fault).')
    kind: Kind = Field(
        description="Why: passed, wrong_answer, runtime_error, timeout, memory, compile_error, format "
        "(no code/answer found), truncated (the generation was cut off), error (verifier failure)."
    )
    score: float = Field(ge=0.0, le=1.0, description="Fraction of tests passed (1.0 on pass; 0 on error).")
    passed: int = Field(ge=0, description="Test cases passed.")
    total: int = Field(ge=0, description="Test cases in the spec: its cases, the assert statements of an assert-style check(), 1 for non-test verifiers.")
    feedback: str = Field(description="Text for the model (docs/architecture.md §7); empty on pass for non-test verifiers.")
    timings: dict[str, float] = Field(default_factory=dict, description="Seconds spent, by phase (e.g. run, total).")


def _error(message: str, started: float) -> Verification:
    return Verification(
        verdict="error", kind="error", score=0.0, passed=0, total=0, feedback=message,
        timings={"total": time.monotonic() - started},
    )


@lru_cache(maxsize=16)
def _runner_for(limits: SandboxLimits) -> Runner:
    # one Runner per limits so bubblewrap is probed once, not per attempt
    return Runner(limits)


def verify(
    spec: VerifierSpec,
    response: str,
    *,
    truncated: bool = False,
    limits: SandboxLimits | None = None,
    http_policy: HttpPolicy | None = None,
    runner: Runner | None = None,
) -> Verification:
    """Judges one attempt. Never raises for anything the attempt does; sandbox and HTTP
    verifier failures come back as verdict "error" with the reason in `feedback`.

    `runner` overrides the runner built from `limits` (tests, custom bwrap paths).
    """
    started = time.monotonic()
    try:
        if isinstance(spec, PythonTestsSpec):
            result = _python_tests(spec, response, truncated, runner or _runner_for(limits or SandboxLimits()))
        elif isinstance(spec, MathSpec):
            result = _math(spec, response, truncated)
        elif isinstance(spec, ExactSpec):
            result = _exact(spec, response, truncated)
        elif isinstance(spec, RegexSpec):
            result = _regex(spec, response, truncated)
        elif isinstance(spec, HttpSpec):
            result = _http(spec, response, truncated, http_policy or HttpPolicy())
        else:  # pragma: no cover - the union is closed
            raise TypeError(f"unknown verifier spec {type(spec).__name__}")
    except (SandboxUnavailable, HttpVerifierRefused, VerifierUnreachable) as exc:
        return _error(f"Verifier error: {exc}", started)
    except SandboxError as exc:  # pragma: no cover - any other typed failure is still the verifier's
        return _error(f"Verifier error: {exc}", started)
    result.timings["total"] = time.monotonic() - started
    return result


def verify_many(
    spec: VerifierSpec,
    responses: list[str],
    truncated: list[bool] | None = None,
    *,
    limits: SandboxLimits | None = None,
    http_policy: HttpPolicy | None = None,
    runner: Runner | None = None,
    max_parallel: int = 2,
) -> list[Verification]:
    """`verify` for each response, at most `max_parallel` at a time; results in input order."""
    flags = truncated if truncated is not None else [False] * len(responses)
    if len(flags) != len(responses):
        raise ValueError(f"{len(responses)} responses but {len(flags)} truncated flags")

    def one(i: int) -> Verification:
        return verify(spec, responses[i], truncated=flags[i], limits=limits, http_policy=http_policy, runner=runner)

    if max_parallel <= 1 or len(responses) <= 1:
        return [one(i) for i in range(len(responses))]
    with ThreadPoolExecutor(max_workers=max_parallel, thread_name_prefix="tta-verify") as pool:
        return list(pool.map(one, range(len(responses))))


# ---- python_tests -------------------------------------------------------------------------


def _python_tests(spec: PythonTestsSpec, response: str, truncated: bool, runner: Runner) -> Verification:
    total = case_total(spec)
    code = extract_code(response)
    if code is None:
        kind, text = format_feedback(truncated=truncated)
        return Verification(verdict="fail", kind=kind, score=0.0, passed=0, total=total, feedback=text)
    t0 = time.monotonic()
    result = run_tests(runner, spec, code)
    run_s = time.monotonic() - t0
    passed = result.all_passed
    kind, text = harness_feedback(result, assert_style=spec.format == "assert", truncated=truncated and not passed)
    return Verification(
        verdict="pass" if passed else "fail",
        kind="passed" if passed else kind,
        score=1.0 if passed else result.passed / max(result.total, 1),
        passed=result.passed,
        total=result.total,
        feedback=text,
        timings={"run": run_s},
    )


# ---- math -----------------------------------------------------------------------------------

# Only the LaTeX extractor is used on text from the model or the client: math-verify's
# plain-expression extractor hands the text to sympy.parse_expr, which calls eval().
_NUMBER = re.compile(r"(?<![\w.])[-+]?\d[\d,]*(?:\.\d+)?(?:\s*/\s*\d+)?(?![\w.])")


def _math_parse(text: str) -> list[Any]:
    from math_verify import LatexExtractionConfig, parse

    timeout = 5 if threading.current_thread() is threading.main_thread() else None
    parsed = parse(text, extraction_config=[LatexExtractionConfig()], parsing_timeout=timeout)
    if parsed:
        return parsed
    numbers = _NUMBER.findall(text)  # "The answer is 0.5": the last number in the text
    if numbers:
        return parse(f"${numbers[-1].replace(',', '')}$", extraction_config=[LatexExtractionConfig()], parsing_timeout=timeout)
    return []


def _math(spec: MathSpec, response: str, truncated: bool) -> Verification:
    from math_verify import verify as math_equal

    gold = _math_parse(spec.answer) or _math_parse(f"${spec.answer}$")
    if not gold:
        raise VerifierUnreachable(f"the gold answer {spec.answer!r} cannot be parsed")
    pred = _math_parse(response)
    timeout = 5 if threading.current_thread() is threading.main_thread() else None
    if pred and math_equal(gold, pred, timeout_seconds=timeout):
        return Verification(verdict="pass", kind="passed", score=1.0, passed=1, total=1, feedback="Correct.")
    extracted = str(pred[-1]) if pred else None
    kind, text = math_feedback(extracted, truncated=truncated)
    return Verification(verdict="fail", kind=kind, score=0.0, passed=0, total=1, feedback=text)


# ---- exact / regex -------------------------------------------------------------------------


def _exact(spec: ExactSpec, response: str, truncated: bool) -> Verification:
    got, want = response, spec.answer
    if spec.strip:
        got, want = got.strip(), want.strip()
    if not spec.case_sensitive:
        got, want = got.casefold(), want.casefold()
    if got == want:
        return Verification(verdict="pass", kind="passed", score=1.0, passed=1, total=1, feedback="Correct.")
    kind, text = text_feedback(what="is not the expected answer", truncated=truncated)
    return Verification(verdict="fail", kind=kind, score=0.0, passed=0, total=1, feedback=text)


def _regex(spec: RegexSpec, response: str, truncated: bool) -> Verification:
    pattern = spec.compiled()
    text_in = response.strip()
    ok = pattern.fullmatch(text_in) if spec.fullmatch else pattern.search(response)
    if ok:
        return Verification(verdict="pass", kind="passed", score=1.0, passed=1, total=1, feedback="Correct.")
    what = "does not have the required form"
    if spec.requirement:
        what += f" (required: {spec.requirement})"
    kind, text = text_feedback(what=what, truncated=truncated)
    return Verification(verdict="fail", kind=kind, score=0.0, passed=0, total=1, feedback=text)


# ---- http ------------------------------------------------------------------------------------


def _http(spec: HttpSpec, response: str, truncated: bool, policy: HttpPolicy) -> Verification:
    answer = call_http_verifier(
        str(spec.url), {"response": response, "truncated": truncated}, policy=policy,
        timeout_s=spec.timeout_s, retries=spec.retries,
    )
    ok = answer.is_pass
    feedback = answer.feedback[:2000]
    if truncated and not ok:
        feedback = f"{TRUNCATED_MESSAGE}\n\n{feedback}".strip()
    score = answer.score if answer.score is not None else (1.0 if ok else 0.0)
    return Verification(
        verdict="pass" if ok else "fail",
        kind="passed" if ok else ("truncated" if truncated else "wrong_answer"),
        score=score, passed=int(ok), total=1, feedback=feedback,
    )
