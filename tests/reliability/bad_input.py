"""Bad input, as a table: each case is one HTTP request and the answer it must get (status,
error code, words of the message). The test (test_bad_input.py) and `bench/reliability.py`
send the same table to a running `tta serve`.

Cases that need a job to exist (cancelling a finished job) create it in `prepare`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Callable

import httpx

GOOD = {"problem": {"question": "Say hi."}, "verifier": {"type": "regex", "pattern": "hi"}, "strategy": "best_of_k",
        "budget": {"max_attempts": 1}, "sampling": {"n": 1, "max_new_tokens": 4}}


def _with(**parts) -> dict:
    body = json.loads(json.dumps(GOOD))
    for dotted, value in parts.items():
        *path, last = dotted.split("__")
        node = body
        for p in path:
            node = node.setdefault(p, {})
        node[last] = value
    return body


def _nested(depth: int) -> list:
    value: list = []
    for _ in range(depth - 1):
        value = [value]
    return value


@dataclass(frozen=True)
class BadInput:
    name: str
    method: str
    path: str
    status: int
    code: str
    message: tuple[str, ...]  # each must occur in error.message
    json_body: dict | None = None
    content: bytes | None = None
    headers: dict[str, str] = field(default_factory=dict)
    prepare: Callable[[httpx.Client], str] | None = None  # returns a job id, put into `path` as {id}


def _finished_job(http: httpx.Client) -> str:
    """A job that is final: queued, then cancelled (works with or without workers)."""
    jid = http.post("/v1/jobs", json=_with(seed=7, cache=False)).json()["id"]
    http.delete(f"/v1/jobs/{jid}")
    return jid


JSON = {"content-type": "application/json"}
CASES: tuple[BadInput, ...] = (
    BadInput("empty question", "POST", "/v1/jobs", 422, "invalid_request",
             ("body.problem.question", "at least 1 character"), _with(problem__question="")),
    BadInput("oversized question (over its 100 000-character limit)", "POST", "/v1/jobs", 422, "invalid_request",
             ("body.problem.question", "at most 100000 characters"), _with(problem__question="x" * 100_001)),
    BadInput("oversized body (over TTA_MAX_REQUEST_BYTES)", "POST", "/v1/jobs", 413, "payload_too_large",
             ("larger than the limit",), _with(problem__question="x" * 2_000_000)),
    BadInput("unknown verifier type", "POST", "/v1/jobs", 422, "invalid_request",
             ("body.verifier", "'magic'", "python_tests"), _with(verifier={"type": "magic"})),
    BadInput("malformed test case (no input/output)", "POST", "/v1/jobs", 422, "invalid_request",
             ("body.verifier.python_tests.cases.0.input", "Field required"),
             _with(verifier={"type": "python_tests", "format": "stdio", "cases": [{"in": "1"}]})),
    BadInput("malformed test cases (not a list)", "POST", "/v1/jobs", 422, "invalid_request",
             ("body.verifier.python_tests.cases", "valid list"),
             _with(verifier={"type": "python_tests", "format": "stdio", "cases": "1 2 3"})),
    BadInput("malformed functional case (input not JSON)", "POST", "/v1/jobs", 422, "invalid_request",
             ("functional case 0", "not JSON"),
             _with(verifier={"type": "python_tests", "format": "functional", "fn_name": "f",
                             "cases": [{"input": "[1, 2", "output": 3}]})),
    BadInput("stdio tests with no cases", "POST", "/v1/jobs", 422, "invalid_request",
             ("needs at least one entry in `cases`",), _with(verifier={"type": "python_tests", "format": "stdio"})),
    BadInput("invalid regular expression", "POST", "/v1/jobs", 422, "invalid_request",
             ("not a valid regular expression",), _with(verifier={"type": "regex", "pattern": "(unclosed"})),
    BadInput("negative budget", "POST", "/v1/jobs", 422, "invalid_request",
             ("body.budget.max_attempts", "greater than or equal to 1"), _with(budget__max_attempts=-5)),
    BadInput("huge budget", "POST", "/v1/jobs", 422, "invalid_request",
             ("body.budget.max_attempts", "less than or equal to 4096"), _with(budget__max_attempts=10**12)),
    BadInput("huge deadline", "POST", "/v1/jobs", 422, "invalid_request",
             ("body.budget.deadline_s", "less than or equal to 86400"), _with(budget__deadline_s=1e300)),
    BadInput("negative tokens", "POST", "/v1/jobs", 422, "invalid_request",
             ("body.sampling.max_new_tokens", "greater than or equal to 1"), _with(sampling__max_new_tokens=-1)),
    BadInput("unknown strategy", "POST", "/v1/jobs", 422, "invalid_request",
             ("body.strategy", "'sdpo', 'best_of_k' or 'multi_turn'"), _with(strategy="genetic")),
    BadInput("unknown field", "POST", "/v1/jobs", 422, "invalid_request",
             ("body.priority", "Extra inputs are not permitted"), _with(priority=1)),
    BadInput("non-UTF-8 body", "POST", "/v1/jobs", 400, "bad_request", ("not valid UTF-8", "0xff"),
             content=b'{"problem": {"question": "caf\xff"}, "verifier": {"type": "regex", "pattern": "x"}}',
             headers=JSON),
    BadInput("not JSON at all", "POST", "/v1/jobs", 422, "invalid_request", ("JSON decode error",),
             content=b"{problem: question?", headers=JSON),
    BadInput("deeply nested JSON (past the parser)", "POST", "/v1/jobs", 400, "bad_request", ("nested too deeply",),
             content=b"[" * 100_000 + b"]" * 100_000, headers=JSON),
    BadInput("deeply nested JSON (inside a test case)", "POST", "/v1/jobs", 422, "invalid_request",
             ("cases.0.input", "nested more than 64 levels"),
             _with(verifier={"type": "python_tests", "format": "functional", "fn_name": "f",
                             "cases": [{"input": [_nested(500)], "output": 1}]})),
    BadInput("unknown job id", "GET", "/v1/jobs/job_doesnotexist", 404, "job_not_found",
             ("no job 'job_doesnotexist'",)),
    BadInput("unknown job id (attempts)", "GET", "/v1/jobs/job_doesnotexist/attempts", 404, "job_not_found",
             ("job_doesnotexist",)),
    BadInput("unknown job id (cancel)", "DELETE", "/v1/jobs/job_doesnotexist", 404, "job_not_found",
             ("job_doesnotexist",)),
    BadInput("wrong API key", "GET", "/v1/jobs/job_doesnotexist", 401, "unauthorized", ("invalid API key",),
             headers={"Authorization": "Bearer wrong-key"}),
    BadInput("missing API key", "POST", "/v1/jobs", 401, "unauthorized", ("missing API key",), GOOD,
             headers={"Authorization": ""}),
    BadInput("cancelling a finished job", "DELETE", "/v1/jobs/{id}", 409, "job_conflict",
             ("already finished (cancelled)", "nothing to cancel"), prepare=_finished_job),
    BadInput("bad Last-Event-ID", "GET", "/v1/jobs/{id}/events", 422, "invalid_request", ("Last-Event-ID",),
             headers={"Last-Event-ID": "yesterday"}, prepare=_finished_job),
    BadInput("negative attempts offset", "GET", "/v1/jobs/{id}/attempts?offset=-1", 422, "invalid_request",
             ("query.offset",), prepare=_finished_job),
    BadInput("attempts offset past Redis's 64-bit integers", "GET", "/v1/jobs/{id}/attempts?offset=44776962498414495399936",
             422, "invalid_request", ("query.offset", "less than or equal to 1000000"), prepare=_finished_job),
    BadInput("Last-Event-ID past Redis's 64-bit integers", "GET", "/v1/jobs/{id}/events", 422, "invalid_request",
             ("Last-Event-ID",), headers={"Last-Event-ID": "18446744073709551616-0"}, prepare=_finished_job),
    BadInput("chat: model not served", "POST", "/v1/chat/completions", 404, "model_not_found", ("gpt-4",),
             {"model": "sdpo:gpt-4", "messages": [{"role": "user", "content": "hi"}],
              "verifier": {"type": "exact", "answer": "x"}}),
    BadInput("chat: no messages", "POST", "/v1/chat/completions", 422, "invalid_request", ("body.messages",),
             {"model": "sdpo:tiny", "messages": [], "verifier": {"type": "exact", "answer": "x"}}),
)


def send(http: httpx.Client, case: BadInput) -> httpx.Response:
    path = case.path
    if case.prepare is not None:
        path = path.replace("{id}", case.prepare(http))
    # request headers override the client's (an empty Authorization is "no key")
    return http.request(case.method, path, json=case.json_body, content=case.content, headers=case.headers)


def problems(case: BadInput, r: httpx.Response) -> list[str]:
    """What differs from the expected answer ([] when it is exactly what the table says)."""
    from tests.reliability.fuzz import error_shape_problem

    found = []
    if r.status_code != case.status:
        found.append(f"status {r.status_code}, expected {case.status}")
    shape = error_shape_problem(r.status_code, r.content, r.headers.get("content-type", ""))
    if shape:
        return found + [f"not our error shape: {shape}"]
    err = r.json()["error"]
    if err["code"] != case.code:
        found.append(f"code {err['code']!r}, expected {case.code!r}")
    found += [f"message lacks {words!r}: {err['message']!r}" for words in case.message if words not in err["message"]]
    return found
