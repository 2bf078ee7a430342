"""HTTP bodies of the v1 API that are not part of the solve contract (`service.schemas`):
job creation extras, job views, errors, and the OpenAI-compatible chat completion."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from sandbox.specs import VerifierSpec
from service.schemas import (
    Budget,
    JobStatus,
    SdpoOptions,
    SolveRequest,
    SolveResult,
    Strategy,
)

EXAMPLE_JOB = {
    "problem": {"question": "Write a Python function `add(a, b)` returning a + b, in a ```python block."},
    "verifier": {"type": "python_tests", "format": "assert", "entry_point": "add",
                 "tests": "def check(candidate):\n    assert candidate(2, 3) == 5\n"},
    "strategy": "sdpo",
    "budget": {"max_attempts": 16},
    "sampling": {"n": 4, "max_new_tokens": 256},
    "idempotency_key": "my-client-request-42",
}


class JobCreate(SolveRequest):
    """POST /v1/jobs: a SolveRequest plus how to submit it."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [EXAMPLE_JOB]})

    idempotency_key: str | None = Field(
        None, min_length=1, max_length=200,
        description="Submitting again with the same key (same API key) returns the same job, not a new one.")
    init_adapter_from: str | None = Field(
        None, min_length=1, max_length=100,
        description="sdpo only: a job id whose learned adapter (its latest snapshot) warm-starts this job.")
    cache: bool = Field(
        True, description="Answer from the result cache when an identical request (same model, engine, problem, "
        "verifier, strategy settings and seed) has already finished; false forces a fresh run.")

    def solve_request(self) -> SolveRequest:
        return SolveRequest.model_validate(self.model_dump(exclude={"idempotency_key", "init_adapter_from", "cache"}))


class JobAccepted(BaseModel):
    id: str = Field(description="The job id.")
    status: JobStatus
    created: bool = Field(True, description="False when an idempotency key returned an existing job.")
    cached_from: str | None = Field(None, description="Set when the result came from the cache: the job that computed it.")


class JobView(BaseModel):
    """GET /v1/jobs/{id}."""

    # in the order the API has always sent them
    id: str
    status: JobStatus
    attempts_used: int = Field(description="Attempts this job has made and stored (0 for a cache hit).")
    rounds_done: int = Field(description="Rounds checkpointed so far.")
    created_at: float
    started_at: float | None = None
    finished_at: float | None = None
    deliveries: int = Field(0, description="How many times the queue handed the job to a worker (>1: resumed).")
    adapter_round: int | None = Field(None, description="Round of the latest stored adapter snapshot, if any.")
    reason: str | None = Field(None, description="Why the job ended (set unless solved).")
    strategy: Strategy
    max_attempts: int
    owner: str | None = Field(None, description="The worker running (or last running) the job.")
    cached_from: str | None = Field(
        None, description="A cache hit: the job whose result this is. `result.attempts_used` counts that job's "
        "attempts; this job made none.")
    init_adapter_from: str | None = None
    cancel_requested: bool = False
    request: SolveRequest = Field(description="The job's solve request, as submitted.")
    result: SolveResult | None = Field(None, description="Present once the job is final (except some failures).")


class AttemptsPage(BaseModel):
    id: str
    offset: int
    total: int
    attempts: list[dict[str, Any]] = Field(description="AttemptRecord objects, in index order.")


class CancelResult(BaseModel):
    id: str
    status: JobStatus
    cancel_requested: bool = Field(description="True: the worker stops at its next phase boundary (within one round).")


class ErrorDetail(BaseModel):
    code: str = Field(description="Stable machine-readable code, e.g. job_not_found, invalid_request.")
    message: str
    details: dict[str, Any] = Field(default_factory=dict)


class ErrorBody(BaseModel):
    error: ErrorDetail


ERRORS = {s: {"model": ErrorBody} for s in (400, 401, 404, 409, 413, 422, 429, 503)}


# ---- OpenAI-compatible chat completions -----------------------------------------------------


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[dict[str, Any]] | None = None

    def text(self) -> str:
        if isinstance(self.content, list):
            return "".join(p.get("text", "") for p in self.content if p.get("type") == "text")
        return self.content or ""


class ChatCompletionRequest(BaseModel):
    """The OpenAI body, plus our fields in the extra body (`extra_body=` of the openai client)."""

    model_config = ConfigDict(extra="ignore", json_schema_extra={"examples": [{
        "model": "sdpo:default",
        "messages": [{"role": "user", "content": "Return the number 42 and nothing else."}],
        "verifier": {"type": "exact", "answer": "42"},
        "budget": {"max_attempts": 8},
    }]})

    model: str = Field(description="`<strategy>:<model>` (e.g. `sdpo:default`, `best_of_k:tiny`) or `<strategy>`.")
    messages: list[ChatMessage] = Field(min_length=1)
    temperature: float | None = Field(None, ge=0.0, le=2.0)
    top_p: float | None = Field(None, gt=0.0, le=1.0)
    max_tokens: int | None = Field(None, ge=1, le=8192, description="Per attempt.")
    max_completion_tokens: int | None = Field(None, ge=1, le=8192)
    seed: int | None = Field(None, ge=0, le=2**31 - 1)
    n: int | None = Field(None, ge=1, le=1, description="Only 1: the job returns one answer.")
    stream: bool | None = Field(None, description="Not supported (use GET /v1/jobs/{id}/events).")
    # ours, from the extra body
    verifier: VerifierSpec
    budget: Budget | None = None
    sampling: dict[str, Any] | None = Field(None, description="Overrides of `sampling` (n = attempts per round, ...).")
    sdpo: SdpoOptions | None = None
    multi_turn_mode: Literal["feedback_only", "conversation"] | None = None
    wait_s: float | None = Field(None, gt=0, description="How long to wait for the job (bounded by TTA_MAX_WAIT_S).")
    idempotency_key: str | None = Field(None, min_length=1, max_length=200)
    init_adapter_from: str | None = None
    cache: bool = True
