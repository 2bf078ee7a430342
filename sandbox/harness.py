"""Runs one attempt's code against a `python_tests` spec: all cases in ONE sandboxed process.

Protocol. The host starts a one-line bootstrap in the sandbox and sends it, on stdin,
`marshal.dumps((driver code object, {"JOB": job}))`: `_driver.py` compiled once per
host process, and the job: the code, the case inputs (never the expected outputs of
stdio/functional cases), limits, and a fresh random nonce. Marshal goes host ->
sandbox only (the host never unmarshals anything the sandbox wrote), and both ends
are the same interpreter, so its format always matches. The driver writes JSON-line records
({start}, {compile}, {load}, {case i}, {done}) to a dedicated pipe (not stdout),
each tagged with the nonce; the host ignores untagged lines and compares outputs
with the expected values itself.

What this resists: code printing fake result JSON (stdout is not the channel);
code exiting early with status 0 (`sys.exit`, `os._exit`: no "done" record means
failure, never a pass); for stdio/functional, ANY in-process tampering, because the
sandbox never sees what the right output is, so a forged record still has to carry
the right answer.
What it does NOT guarantee: assert-style tests (HumanEval) run `check` inside the
sandbox, in the same interpreter as the candidate, so a deliberately malicious
candidate can find the channel fd and the nonce in its own memory and forge a pass.
For those, a pass is "the tests passed unless the code attacked the harness".
"""

from __future__ import annotations

import json
import marshal
import math
import secrets
import signal
from dataclasses import dataclass, field
from functools import cache, lru_cache
from importlib import resources
from typing import Any, Literal

from sandbox.check_split import case_count
from sandbox.errors import SandboxUnavailable
from sandbox.runner import Runner, RunResult
from sandbox.specs import (
    PythonTestsSpec,
    parse_functional_args,
    parse_functional_output,
)

CaseStatus = Literal["passed", "wrong_answer", "runtime_error", "timeout", "memory"]
_STARTUP_SLACK_S = 5.0  # interpreter start and teardown, on top of the spec's total time


@dataclass(frozen=True)
class CaseResult:
    """One case as judged on the host. `index` is -1 for a failure while loading the code."""

    index: int
    status: CaseStatus
    input: str | None = None  # displayable input; None for assert tests and load failures
    output: str | None = None
    expected: str | None = None
    error: str | None = None  # traceback tail (runtime errors) or a short reason
    line: str | None = None  # assert tests: the test line that failed
    elapsed_s: float = 0.0


@dataclass(frozen=True)
class HarnessResult:
    """All that ran of one attempt. `cases` holds only cases that ran, in order."""

    total: int
    cases: list[CaseResult] = field(default_factory=list)
    compile_error: str | None = None
    run: RunResult | None = None

    @property
    def passed(self) -> int:
        return sum(c.status == "passed" for c in self.cases)

    @property
    def failures(self) -> list[CaseResult]:
        return [c for c in self.cases if c.status != "passed"]

    @property
    def all_passed(self) -> bool:
        return self.compile_error is None and self.passed == self.total


# Runs inside the sandbox: executes the pre-compiled driver with the job in its globals.
BOOTSTRAP = "import marshal,sys;c,g=marshal.loads(sys.stdin.buffer.read());exec(c,g)"


@cache
def driver_source() -> str:
    # check_split.py first: the driver splits assert checks with the code the host counts with
    files = resources.files("sandbox")
    return "\n\n".join(files.joinpath(name).read_text(encoding="utf-8") for name in ("check_split.py", "_driver.py"))


@lru_cache(maxsize=256)
def _assert_cases(tests: str) -> int:
    return case_count(tests)


def case_total(spec: PythonTestsSpec) -> int:
    """The cases an attempt is scored on: the spec's cases, or the assert statements of its check()."""
    return _assert_cases(spec.tests or "") if spec.format == "assert" else len(spec.cases)


@cache
def _driver_code() -> Any:
    # dont_inherit: without it the driver, and through its own compile() the candidate's
    # code, would inherit this module's `from __future__ import annotations`, and an
    # undefined name in an annotation would pass here and fail anywhere else
    return compile(driver_source(), "_driver.py", "exec", dont_inherit=True)


def run_tests(runner: Runner, spec: PythonTestsSpec, code: str) -> HarnessResult:
    """Runs `code` against `spec` in one sandboxed process and judges every case that ran.

    Raises SandboxUnavailable when the sandbox itself failed (bwrap setup, driver did
    not start); anything the code does wrong is a result, not an exception.
    """
    nonce = secrets.token_hex(16)
    if spec.format == "stdio":
        inputs: list[Any] = [c.input for c in spec.cases]
    elif spec.format == "functional":
        inputs = [parse_functional_args(c.input) for c in spec.cases]
    else:
        inputs = []
    job = {
        "nonce": nonce,
        "format": spec.format,
        "code": code,
        "inputs": inputs,
        "tests": spec.tests,
        "entry_point": spec.entry_point,
        "fn_name": spec.fn_name,
        "time_limit_s": spec.time_limit_s,
        "total_time_s": spec.total_time_limit_s,
        "run_all": spec.run_all_cases,
    }
    run = runner.run_python(
        ["-c", BOOTSTRAP],
        stdin=marshal.dumps((_driver_code(), {"__name__": "__tta_driver__", "JOB": job})),
        channel=True,
        wall_timeout_s=spec.total_time_limit_s + _STARTUP_SLACK_S,
        warm=True,
    )
    records = _records(run.channel, nonce)
    total = case_total(spec)
    if not any(r.get("t") == "start" for r in records):
        if run.timed_out:
            # the interpreter never got going within the wall limit: the machine is overloaded
            raise SandboxUnavailable(f"the test driver did not start within {run.wall_s:.1f}s")
        raise SandboxUnavailable(f"the test driver did not start (exit {run.exit_code}): {run.stderr.strip()[:500]}")
    cases: list[CaseResult] = []
    for rec in records:
        kind = rec.get("t")
        if kind == "compile":
            return HarnessResult(total=total, compile_error=str(rec.get("error", "")), run=run)
        if kind == "load":
            cases.append(_failure_case(-1, rec, None))
        elif kind == "case":
            case = _judge(spec, inputs, rec, total)
            # an assert check that fails after its last case reports that case again: the later verdict holds
            cases = [c for c in cases if c.index != case.index]
            cases.append(case)
    if not any(r.get("t") == "done" for r in records):
        # The process died mid-case (limit, crash, or the code exiting/killing itself).
        ran = {c.index for c in cases}
        nxt = next((i for i in range(total) if i not in ran), None)
        if nxt is not None and not (cases and cases[-1].status != "passed" and not spec.run_all_cases):
            cases.append(_death_case(spec, inputs, nxt, run))
    return HarnessResult(total=total, cases=cases, run=run)


def _records(channel: bytes, nonce: str) -> list[dict[str, Any]]:
    out = []
    for line in channel.splitlines():
        try:
            rec = json.loads(line)
        except (json.JSONDecodeError, UnicodeDecodeError):
            continue
        if isinstance(rec, dict) and rec.get("n") == nonce:
            out.append(rec)
    return out


def _display_input(spec: PythonTestsSpec, inputs: list[Any], i: int) -> str | None:
    if spec.format == "stdio":
        return str(inputs[i])
    if spec.format == "functional":
        return "\n".join(json.dumps(a) for a in inputs[i])
    return None


def _display_expected(spec: PythonTestsSpec, i: int) -> str | None:
    if spec.format == "stdio":
        return str(spec.cases[i].output)
    if spec.format == "functional":
        return json.dumps(parse_functional_output(spec.cases[i].output))
    return None


def _failure_case(i: int, rec: dict[str, Any], shown_input: str | None) -> CaseResult:
    status = {"timeout": "timeout", "memory": "memory", "assert": "wrong_answer"}.get(rec.get("status", ""), "runtime_error")
    return CaseResult(
        index=i,
        status=status,  # type: ignore[arg-type]
        input=shown_input,
        output=rec.get("output"),
        error=rec.get("error"),
        line=rec.get("line"),
        elapsed_s=float(rec.get("elapsed", 0.0)),
    )


def _judge(spec: PythonTestsSpec, inputs: list[Any], rec: dict[str, Any], total: int) -> CaseResult:
    i = int(rec.get("i", 0))
    if not 0 <= i < total:
        return CaseResult(index=i, status="runtime_error", error="harness record for an unknown case")
    shown = _display_input(spec, inputs, i)
    if rec.get("status") != "ok":
        return _failure_case(i, rec, shown)
    elapsed = float(rec.get("elapsed", 0.0))
    if spec.format == "assert":
        return CaseResult(index=i, status="passed", elapsed_s=elapsed)
    output = str(rec.get("output", ""))
    expected = spec.cases[i].output
    if spec.format == "stdio":
        ok = stdio_match(output, str(expected), spec.float_tolerance) and not rec.get("output_truncated")
    else:
        ok = bool(rec.get("json")) and values_match(json.loads(output), parse_functional_output(expected), spec.float_tolerance)
    return CaseResult(
        index=i,
        status="passed" if ok else "wrong_answer",
        input=shown,
        output=output,
        expected=_display_expected(spec, i),
        elapsed_s=elapsed,
    )


def _death_case(spec: PythonTestsSpec, inputs: list[Any], i: int, run: RunResult) -> CaseResult:
    shown = _display_input(spec, inputs, i)
    if run.timed_out:
        return CaseResult(index=i, status="timeout", input=shown)
    if run.memory_exceeded:
        return CaseResult(index=i, status="memory", input=shown)
    if run.killed_by_signal is not None:
        name = signal.Signals(run.killed_by_signal).name if run.killed_by_signal in signal.valid_signals() else str(run.killed_by_signal)
        reason = f"the process was killed by signal {name}"
        if run.killed_by_signal == signal.SIGSEGV:
            reason += " (segmentation fault, e.g. recursion too deep)"
    else:
        reason = f"the program exited (code {run.exit_code}) before the tests finished"
    tail = "\n".join(run.stderr.strip().splitlines()[-6:])
    return CaseResult(index=i, status="runtime_error", input=shown, error=f"{tail}\n{reason}".strip())


def _num_close(a: float, b: float, tol: float) -> bool:
    return math.isclose(a, b, rel_tol=tol, abs_tol=tol)


def stdio_match(output: str, expected: str, tol: float | None) -> bool:
    """Whitespace-normalised comparison (token by token); numeric tokens within `tol` if given."""
    got, want = output.split(), expected.split()
    if got == want:
        return True
    if tol is None or len(got) != len(want):
        return False
    for g, w in zip(got, want, strict=True):
        if g == w:
            continue
        try:
            if not _num_close(float(g), float(w), tol):
                return False
        except ValueError:
            return False
    return True


def values_match(got: Any, want: Any, tol: float | None) -> bool:
    """Structural equality of JSON values; bools are not numbers; floats within `tol` if given."""
    if isinstance(got, bool) or isinstance(want, bool):
        return type(got) is type(want) and got == want
    if isinstance(got, (int, float)) and isinstance(want, (int, float)):
        return got == want or (tol is not None and _num_close(float(got), float(want), tol))
    if isinstance(got, list) and isinstance(want, list):
        return len(got) == len(want) and all(values_match(g, w, tol) for g, w in zip(got, want, strict=True))
    if isinstance(got, dict) and isinstance(want, dict):
        return got.keys() == want.keys() and all(values_match(got[k], want[k], tol) for k in got)
    return bool(got == want)
