"""Verifier specifications: the `verifier` object of a problem (HTTP API and problem files).

A spec says how an attempt is judged. It is a discriminated union on `type`:

  python_tests  run the code in the attempt against tests (assert / stdio / functional)
  math          compare the attempt's final answer with a gold answer (math-verify)
  exact         compare the whole attempt (or its final line) with a string
  regex         match the attempt against a regular expression
  http          ask the client's own verifier over HTTP (off unless the operator enables it)

All models forbid unknown fields so a typo fails loudly instead of being ignored.
"""

from __future__ import annotations

import json
import re
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    HttpUrl,
    field_validator,
    model_validator,
)


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


MAX_VALUE_DEPTH = 64


def _depth(value: Any) -> int:
    """Nesting depth of lists/dicts in a JSON value (a scalar is 0), without recursion."""
    deepest, stack = 0, [(value, 0)]
    while stack:
        v, d = stack.pop()
        if isinstance(v, (list, tuple)):
            children = v
        elif isinstance(v, dict):
            children = v.values()
        else:
            deepest = max(deepest, d)
            continue
        deepest = max(deepest, d + 1)
        if deepest > MAX_VALUE_DEPTH:
            return deepest
        stack.extend((c, d + 1) for c in children)
    return deepest


class TestCase(_Spec):
    """One input/expected-output pair of a stdio or functional test."""

    __test__ = False  # not a pytest test class, despite the name

    input: Any = Field(
        description="stdio: the text fed to standard input. functional: the argument list as a JSON array "
        "(e.g. [[1, 2], 3]), or a string of newline-separated JSON values, one per argument "
        "(LiveCodeBench style: '[1, 2]\\n3')."
    )
    output: Any = Field(
        description="stdio: the expected standard output (compared whitespace-normalised). functional: the "
        "expected return value as a JSON value, or a string holding its JSON text. Values nest at most "
        f"{MAX_VALUE_DEPTH} levels deep."
    )

    @field_validator("input", "output")
    @classmethod
    def _shallow(cls, value: Any) -> Any:
        # Free JSON values are serialised again downstream (pydantic refuses past ~255 levels,
        # which surfaced as a 500); real test data nests a few levels, so refuse early, by name.
        if _depth(value) > MAX_VALUE_DEPTH:
            raise ValueError(f"value nested more than {MAX_VALUE_DEPTH} levels deep")
        return value


def parse_functional_args(value: Any) -> list[Any]:
    """Normalises a functional case input to a list of positional arguments.

    Accepts a JSON array (the arguments), or a string that is either a JSON array
    text or newline-separated JSON values (one per argument, LiveCodeBench style).
    Raises ValueError with a message naming the problem otherwise.
    """
    if isinstance(value, list):
        return value
    if not isinstance(value, str):
        raise ValueError(f"functional case input must be a JSON array of arguments or a string, got {type(value).__name__}")
    lines = [ln for ln in value.split("\n") if ln.strip()]
    args = []
    for n, line in enumerate(lines, 1):
        try:
            args.append(json.loads(line))
        except json.JSONDecodeError as exc:
            raise ValueError(f"functional case input line {n} is not JSON ({exc.msg}): {line[:80]!r}") from None
    return args


def parse_functional_output(value: Any) -> Any:
    """The expected value of a functional case: JSON text in a string is decoded, anything else kept."""
    if isinstance(value, str):
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            return value  # a plain string return value given without JSON quotes
    return value


class PythonTestsSpec(_Spec):
    """Run the Python code found in the attempt against tests, all cases in one sandboxed process."""

    type: Literal["python_tests"] = Field(description='Discriminator: "python_tests".')
    format: Literal["assert", "stdio", "functional"] = Field(
        description='"assert": `tests` defines check(candidate) (HumanEval style) and is called with `entry_point`. '
        '"stdio": the program reads `cases[i].input` on stdin; its stdout must match `cases[i].output`. '
        '"functional": `fn_name(*input)` (or `Solution().fn_name(*input)` when a class Solution exists) must '
        "return `output`."
    )
    tests: str | None = Field(
        None, description="assert format only: test code that defines `check(candidate)`; may define helpers/METADATA."
    )
    entry_point: str | None = Field(None, description="assert format only: the name of the function passed to check().")
    fn_name: str | None = Field(None, description="functional format only: the function or Solution method to call.")
    cases: list[TestCase] = Field(
        default_factory=list, description="stdio/functional formats: the test cases, in the order they are run."
    )
    float_tolerance: float | None = Field(
        None,
        ge=0,
        description="If set, numbers match when |got - expected| <= tol or <= tol * |expected| (stdio: per token).",
    )
    time_limit_s: float = Field(4.0, gt=0, le=60, description="Wall-clock limit per case, in seconds.")
    total_time_limit_s: float = Field(
        20.0, gt=0, le=600, description="Wall-clock limit for all cases of one attempt together, in seconds."
    )
    run_all_cases: bool = Field(
        False, description="Run every case even after a failure (default: stop at the first runtime error or timeout)."
    )

    @field_validator("entry_point", "fn_name")
    @classmethod
    def _identifier(cls, v: str | None) -> str | None:
        if v is not None and not v.isidentifier():
            raise ValueError(f"{v!r} is not a Python identifier")
        return v

    @model_validator(mode="after")
    def _consistent(self) -> PythonTestsSpec:
        if self.format == "assert":
            if not self.tests or not self.tests.strip():
                raise ValueError('format "assert" needs non-empty `tests` (code defining check(candidate))')
            if not self.entry_point:
                raise ValueError('format "assert" needs `entry_point` (the function passed to check)')
            if self.cases:
                raise ValueError('format "assert" takes its tests from `tests`; `cases` must be empty')
            try:
                compile(self.tests, "tests.py", "exec")
            except SyntaxError as exc:
                raise ValueError(f"`tests` is not valid Python: {exc.msg} (line {exc.lineno})") from None
            return self
        if not self.cases:
            raise ValueError(f'format "{self.format}" needs at least one entry in `cases`')
        if self.tests is not None or self.entry_point is not None:
            raise ValueError(f'`tests` and `entry_point` belong to format "assert", not "{self.format}"')
        if self.format == "stdio":
            if self.fn_name is not None:
                raise ValueError('`fn_name` belongs to format "functional", not "stdio"')
            for i, case in enumerate(self.cases):
                if not isinstance(case.input, str) or not isinstance(case.output, str):
                    raise ValueError(f"stdio case {i}: `input` and `output` must be strings")
        else:
            if not self.fn_name:
                raise ValueError('format "functional" needs `fn_name`')
            for i, case in enumerate(self.cases):
                try:
                    parse_functional_args(case.input)
                except ValueError as exc:
                    raise ValueError(f"functional case {i}: {exc}") from None
        return self


class MathSpec(_Spec):
    """Compare the attempt's final answer (last \\boxed{...}, else the last expression) with `answer`."""

    type: Literal["math"] = Field(description='Discriminator: "math".')
    answer: str = Field(min_length=1, description="The gold answer, LaTeX or plain (e.g. '\\frac{1}{2}', '0.5', 'x^2+1').")


class ExactSpec(_Spec):
    """The attempt (after optional stripping) must equal `answer`."""

    type: Literal["exact"] = Field(description='Discriminator: "exact".')
    answer: str = Field(description="The expected text.")
    case_sensitive: bool = Field(True, description="Compare letter case too.")
    strip: bool = Field(True, description="Strip surrounding whitespace of both sides before comparing.")


class RegexSpec(_Spec):
    """The attempt must match `pattern` (Python `re` syntax), compiled once at validation."""

    type: Literal["regex"] = Field(description='Discriminator: "regex".')
    pattern: str = Field(min_length=1, description="A Python regular expression.")
    fullmatch: bool = Field(False, description="Require the whole (stripped) attempt to match, not just a substring.")
    flags: list[Literal["IGNORECASE", "MULTILINE", "DOTALL", "VERBOSE"]] = Field(
        default_factory=list, description="re flags by name."
    )
    requirement: str | None = Field(
        None,
        max_length=1000,
        description="The required form in words (e.g. 'a JSON array of 8 integers on one line'); shown to the "
        "model in the feedback of a non-matching attempt. Without it the feedback only says the form is wrong.",
    )

    @model_validator(mode="after")
    def _compiles(self) -> RegexSpec:
        try:
            self.compiled()
        except re.error as exc:
            raise ValueError(f"`pattern` is not a valid regular expression: {exc}") from None
        return self

    def compiled(self) -> re.Pattern[str]:
        flags = 0
        for name in self.flags:
            flags |= getattr(re, name)
        return re.compile(self.pattern, flags)


class HttpSpec(_Spec):
    """POST the attempt to the client's verifier and use its verdict (see verifiers.HttpPolicy)."""

    type: Literal["http"] = Field(description='Discriminator: "http".')
    url: HttpUrl = Field(description="http(s) URL receiving POST {response, truncated, sent_at}; must return JSON "
                                     "{verdict: 'pass'|'fail' or passed: bool, score?: float, feedback?: str}.")
    timeout_s: float = Field(10.0, gt=0, le=120, description="Timeout of one request, in seconds.")
    retries: int = Field(2, ge=0, le=5, description="Extra attempts after a connection error, timeout or 5xx.")


VerifierSpec = Annotated[
    PythonTestsSpec | MathSpec | ExactSpec | RegexSpec | HttpSpec,
    Field(discriminator="type", description="How an attempt is judged; chosen by `type`."),
]
"""The verifier spec union; validate with `pydantic.TypeAdapter(VerifierSpec)` or as a model field."""

__all__ = [
    "ExactSpec",
    "HttpSpec",
    "MathSpec",
    "PythonTestsSpec",
    "RegexSpec",
    "TestCase",
    "VerifierSpec",
    "parse_functional_args",
    "parse_functional_output",
]
