"""LiveCodeBench-format problems (JSON or JSONL) -> our `python_tests` problem mappings.

A record, as LiveCodeBench's `code_generation_lite` release writes it:

    question_title, question_id, question_content, platform, difficulty, contest_date,
    starter_code           ("" for stdin problems; a `class Solution: def f(...)` stub otherwise)
    public_test_cases      JSON text of [{"input": str, "output": str, "testtype": "stdin"|"functional"}]
    private_test_cases     the same list: JSON text, or base64(zlib(pickle(JSON text))) in releases
    metadata               JSON text (or a mapping) with "func_name" for functional problems

`stdin` cases become our stdio format (input on stdin, stdout compared whitespace-normalised);
`functional` cases our functional format (`Solution().func_name(*args)`, arguments as
newline-separated JSON values, the expected value as JSON text; sandbox/specs.py parses both).

Not guaranteed: LiveCodeBench's own grader prepends `from typing import *` and other imports to
a solution; our sandbox does not, so the prompt asks the model to write its imports itself.
Compressed private tests are unpickled with an unpickler that refuses every global, so only
plain str/list/dict data loads (a pickle that names a class or function raises).
"""

from __future__ import annotations

import base64
import io
import json
import pickle
import zlib
from pathlib import Path
from typing import Any, Iterable, Literal

STDIN_INSTRUCTION = (
    "You will be given a programming problem. Write a Python 3 program that reads the input from "
    "standard input, solves the problem and writes the answer to standard output. Put the whole "
    "program in one ```python code block.\n\n### Problem\n{question}\n"
)
FUNCTIONAL_INSTRUCTION = (
    "You will be given a programming problem and starter code. Complete the starter code so that it "
    "solves the problem, and return the whole class, with any imports it needs (for example "
    "`from typing import List`), in one ```python code block.\n\n### Problem\n{question}\n\n"
    "### Starter code\n```python\n{starter}\n```\n"
)


class _NoGlobals(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:  # pragma: no cover - exercised on hostile input
        raise pickle.UnpicklingError(f"refusing to load {module}.{name} from test data")


def decode_cases(value: Any) -> list[dict[str, Any]]:
    """A test-case field as a list of {input, output, testtype}: accepts a list, JSON text, or
    LiveCodeBench's compressed form base64(zlib(pickle(JSON text)))."""
    if value is None or value == "":
        return []
    if isinstance(value, list):
        return value
    if not isinstance(value, str):
        raise ValueError(f"test cases must be a list or a string, got {type(value).__name__}")
    try:
        out = json.loads(value)
    except json.JSONDecodeError:
        try:
            raw = zlib.decompress(base64.b64decode(value))
            out = _NoGlobals(io.BytesIO(raw)).load()
        except Exception as exc:
            raise ValueError(f"test cases are neither JSON nor base64(zlib(pickle)) data: {exc}") from None
        if isinstance(out, (str, bytes)):
            out = json.loads(out)
    if not isinstance(out, list):
        raise ValueError("test cases must decode to a list")
    return out


def _metadata(record: dict[str, Any]) -> dict[str, Any]:
    meta = record.get("metadata") or {}
    if isinstance(meta, str):
        meta = json.loads(meta) if meta.strip() else {}
    return meta


def lcb_request(
    record: dict[str, Any],
    *,
    tests: Literal["all", "public"] = "all",
    max_cases: int | None = None,
    time_limit_s: float = 4.0,
    total_time_limit_s: float = 60.0,
) -> dict[str, Any]:
    """One LiveCodeBench record as a problem-file mapping (question, verifier, meta).
    Raises ValueError naming the problem when the record cannot be converted."""
    name = str(record.get("question_id") or record.get("question_title") or "?")
    try:
        cases = decode_cases(record.get("public_test_cases"))
        if tests == "all":
            cases += decode_cases(record.get("private_test_cases"))
        if max_cases is not None:
            cases = cases[:max_cases]
        if not cases:
            raise ValueError("no test cases")
        kinds = {c.get("testtype", "stdin") for c in cases}
        if len(kinds) != 1:
            raise ValueError(f"mixed test types {sorted(kinds)}")
        kind = kinds.pop()
        question = record["question_content"]
        base = {"type": "python_tests", "time_limit_s": time_limit_s, "total_time_limit_s": total_time_limit_s}
        if kind == "stdin":
            verifier = {**base, "format": "stdio",
                        "cases": [{"input": c["input"], "output": c["output"]} for c in cases]}
            text = STDIN_INSTRUCTION.format(question=question.strip())
        elif kind == "functional":
            fn = _metadata(record).get("func_name")
            if not fn:
                raise ValueError("functional tests but no metadata.func_name")
            verifier = {**base, "format": "functional", "fn_name": fn,
                        "cases": [{"input": c["input"], "output": c["output"]} for c in cases]}
            text = FUNCTIONAL_INSTRUCTION.format(question=question.strip(),
                                                 starter=(record.get("starter_code") or "").rstrip())
        else:
            raise ValueError(f"unknown testtype {kind!r}")
    except (KeyError, ValueError, TypeError) as exc:
        msg = f"missing field {exc}" if isinstance(exc, KeyError) else str(exc)
        raise ValueError(f"LiveCodeBench problem {name}: {msg}") from None
    return {
        "question": text,
        "verifier": verifier,
        "meta": {
            "name": name,
            "title": record.get("question_title"),
            "platform": record.get("platform"),
            "difficulty": record.get("difficulty"),
            "contest_date": record.get("contest_date"),
            "source": "LiveCodeBench format",
        },
    }


def read_records(path: Path) -> list[dict[str, Any]]:
    """Records of a .jsonl file (one per line) or a .json file (a list, or {"problems": [...]})."""
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".jsonl":
        return [json.loads(ln) for ln in text.splitlines() if ln.strip()]
    data = json.loads(text)
    if isinstance(data, dict):
        data = data.get("problems", [data])
    return list(data)


def is_lcb_record(record: dict[str, Any]) -> bool:
    return "question_content" in record


def load_lcb(
    path: Path,
    *,
    difficulty: Iterable[str] | None = None,
    limit: int | None = None,
    **kwargs: Any,
) -> list[dict[str, Any]]:
    """All (optionally: of these difficulties, the first `limit`) problems of a LiveCodeBench file."""
    wanted = {d.lower() for d in difficulty} if difficulty else None
    out = []
    for rec in read_records(path):
        if wanted and str(rec.get("difficulty", "")).lower() not in wanted:
            continue
        out.append(lcb_request(rec, **kwargs))
        if limit is not None and len(out) >= limit:
            break
    return out
