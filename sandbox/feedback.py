"""The feedback text a model sees about a failed attempt (LeetCode style, docs/architecture.md §7).

Contract: deterministic (same result -> same text, no timings or nonces), at most
FEEDBACK_BUDGET characters, each shown field at most FIELD_BUDGET characters, at most
MAX_CASES failing cases shown (shortest first), only failing cases shown. Expected
values ARE shown for stdio/functional cases (as LeetCode does); the gold answer of a
math problem is NEVER shown.
"""

from __future__ import annotations

from typing import Literal

from sandbox.harness import CaseResult, HarnessResult

FEEDBACK_BUDGET = 2000
FIELD_BUDGET = 250
MAX_CASES = 2

Kind = Literal[
    "passed", "wrong_answer", "runtime_error", "timeout", "memory", "compile_error", "format", "truncated", "error"
]

FORMAT_MESSAGE = "Incorrect Format: Put your code inside a ```python ... ``` block."
TRUNCATED_MESSAGE = "Your response was cut off at the token limit before it was complete; give a shorter answer."

_TITLES = {
    "wrong_answer": "Wrong Answer",
    "runtime_error": "Runtime Error",
    "timeout": "Time Limit Exceeded",
    "memory": "Memory Limit Exceeded",
}


def clip(text: str, limit: int = FIELD_BUDGET) -> str:
    """Keeps the head of `text`, marking a cut."""
    text = text.rstrip("\n")
    return text if len(text) <= limit else text[: limit - 15].rstrip() + " ...(truncated)"


def clip_tail(text: str, limit: int = FIELD_BUDGET) -> str:
    """Keeps the tail of `text` (the useful end of a traceback), marking a cut."""
    text = text.strip("\n")
    if len(text) <= limit:
        return text
    tail = text[-(limit - 16) :]
    if "\n" in tail:
        tail = tail[tail.index("\n") + 1 :]  # start at a whole line
    return "(truncated)...\n" + tail


def _field(label: str, value: str | None) -> str:
    value = clip(value if value is not None else "")
    return f"{label}:\n{value}" if "\n" in value.strip("\n") else f"{label}: {value}"


def _case_text(case: CaseResult, assert_style: bool) -> str:
    title = _TITLES[case.status]
    if assert_style:
        if case.status == "wrong_answer":
            text = f"Wrong Answer: assertion failed: {clip(case.line or 'assert ...')}"
            message = (case.error or "").strip().splitlines()[-1:] if case.error else []
            if message and message[0] not in ("AssertionError", ""):
                text += "\n" + clip(message[0])
            return text
        parts = [title]
        if case.status == "runtime_error" and case.error:
            parts.append(clip_tail(case.error))
        if case.line:
            parts.append(_field("Last Executed Test", case.line))
        return "\n".join(parts)
    if case.index < 0:
        return "Runtime Error (while loading your code)\n" + clip_tail(case.error or "")
    header = f"Test Case {case.index + 1}: {title}"
    if case.status == "wrong_answer":
        return "\n".join([header, _field("Input", case.input), _field("Output", case.output), _field("Expected", case.expected)])
    parts = [header]
    if case.status == "runtime_error" and case.error:
        parts.append(clip_tail(case.error))
    parts.append(_field("Last Executed Input", case.input))
    return "\n".join(parts)


def _size(case: CaseResult) -> int:
    return len(case.input or "") + len(case.expected or "") + len(case.output or "")


def harness_feedback(result: HarnessResult, *, assert_style: bool, truncated: bool = False) -> tuple[Kind, str]:
    """(kind, text) for a finished test run. Kind is that of the first failure in run order."""
    head = [TRUNCATED_MESSAGE] if truncated else []
    footer = "" if assert_style else f"Passed {result.passed}/{result.total} test cases."
    if result.compile_error is not None:
        kind: Kind = "truncated" if truncated else "compile_error"
        body = "Compile Error\n" + clip_tail(result.compile_error)
        return kind, _assemble([*head, body], footer)
    failures = result.failures
    if not failures and result.all_passed:
        return "passed", f"All {result.total} test cases passed." if not assert_style else "All tests passed."
    if not failures:  # ran out before every case ran (total time limit)
        return ("truncated" if truncated else "timeout"), _assemble([*head, "Time Limit Exceeded"], footer)
    kind = failures[0].status  # type: ignore[assignment]
    if assert_style:
        # the first failed assert only, as when check() stopped there (the cases are counted,
        # not shown: this text is what SDPO's teacher reads, and was measured as it is)
        shown = failures[:1]
    else:
        shown = sorted(failures, key=_size)[:MAX_CASES]
        shown.sort(key=lambda c: c.index)
    body = [_case_text(c, assert_style) for c in shown]
    return ("truncated" if truncated else kind), _assemble([*head, *body], footer)


def _assemble(parts: list[str], footer: str) -> str:
    text = "\n\n".join(p for p in parts if p)
    room = FEEDBACK_BUDGET - (len(footer) + 2 if footer else 0)
    if len(text) > room:
        text = text[: room - 15].rstrip() + " ...(truncated)"
    return f"{text}\n\n{footer}" if footer else text


def format_feedback(*, truncated: bool) -> tuple[Kind, str]:
    """(kind, text) when the answer holds no code to run."""
    if truncated:
        return "truncated", f"{TRUNCATED_MESSAGE}\n\n{FORMAT_MESSAGE}"
    return "format", FORMAT_MESSAGE


def math_feedback(extracted: str | None, *, truncated: bool) -> tuple[Kind, str]:
    """(kind, text) for a wrong or missing final answer; never reveals the gold answer."""
    head = f"{TRUNCATED_MESSAGE}\n\n" if truncated else ""
    if extracted is None:
        kind: Kind = "truncated" if truncated else "format"
        return kind, head + "Incorrect Format: no final answer found. Put your final answer in \\boxed{}."
    return ("truncated" if truncated else "wrong_answer"), head + f"Wrong Answer: your final answer {clip(extracted)} is incorrect."


def text_feedback(*, what: str, truncated: bool) -> tuple[Kind, str]:
    """(kind, text) for exact/regex mismatches. Deliberately quotes neither the expected
    answer nor the attempt: SDPO's teacher scores the attempt's own tokens with this text in
    its context, and a verbatim copy there teaches copying. Measured on the default model
    (examples/fibonacci_json.yaml, one round, lr 1e-4): with the attempt quoted, pass rate
    of fresh samples fell from 10/32 to 0/32 while the divergence dropped."""
    head = f"{TRUNCATED_MESSAGE}\n\n" if truncated else ""
    return ("truncated" if truncated else "wrong_answer"), head + f"Wrong Answer: your reply {what}."
