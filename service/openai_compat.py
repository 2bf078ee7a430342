"""OpenAI-compatible chat completions on top of jobs.

`model` = `<strategy>:<model>` (`sdpo:default`, `best_of_k:tiny`, ...; a bare strategy means
the served model). The last user message is the question, the system (or developer)
message the system prompt; the verifier and our knobs travel in the extra body. The job
runs to completion (bounded wait); the answer is the solution, or, unsolved, the last
attempt with `finish_reason` = the job's status (`exhausted`, `cancelled`, `failed`, or
`running` when the wait ran out). Every response carries `tta: {job_id, status,
attempts_used, reason}`.

Not supported: streaming, n > 1, tools; earlier assistant turns are ignored (a job is one
question).
"""

from __future__ import annotations

from typing import get_args

from service.api_schemas import ChatCompletionRequest, JobCreate
from service.errors import InvalidRequest, ModelNotServed
from service.schemas import Strategy
from service.store import JobRecord

STRATEGIES = get_args(Strategy)


def served_models(model: str) -> list[str]:
    return [f"{s}:{model}" for s in STRATEGIES]


def to_job(body: ChatCompletionRequest, served_model: str) -> JobCreate:
    strategy, _, model = body.model.partition(":")
    if strategy not in STRATEGIES or (model and model != served_model):
        raise ModelNotServed(
            f"model {body.model!r} is not served here; use one of {', '.join(served_models(served_model))}",
            details={"available": served_models(served_model)})
    if body.stream:
        raise InvalidRequest("stream: streaming is not supported; follow GET /v1/jobs/{id}/events instead")
    user = [m for m in body.messages if m.role == "user"]
    if not user or not user[-1].text().strip():
        raise InvalidRequest("messages: a user message with the question is required")
    system = [m.text() for m in body.messages if m.role in ("system", "developer")]
    sampling = dict(body.sampling or {})
    for ours, theirs in (("temperature", body.temperature), ("top_p", body.top_p),
                         ("max_new_tokens", body.max_completion_tokens or body.max_tokens)):
        if theirs is not None:
            sampling[ours] = theirs
    data = {
        "problem": {"question": user[-1].text(), "system_prompt": "\n\n".join(system) or None},
        "verifier": body.verifier.model_dump(mode="json"),
        "strategy": strategy,
        "sampling": sampling,
        "idempotency_key": body.idempotency_key,
        "init_adapter_from": body.init_adapter_from,
        "cache": body.cache,
    }
    if body.budget is not None:
        data["budget"] = body.budget.model_dump()
    if body.sdpo is not None:
        data["sdpo"] = body.sdpo.model_dump()
    if body.multi_turn_mode is not None:
        data["multi_turn_mode"] = body.multi_turn_mode
    if body.seed is not None:
        data["seed"] = body.seed
    return JobCreate.model_validate(data)


def to_completion(job: JobRecord, model: str, attempts_tail: list[dict]) -> dict:
    """The chat.completion object for a job record."""
    import json

    result = json.loads(job.result) if job.result else None
    status = job.status
    if result and result.get("solution") is not None:
        content, finish = result["solution"], "stop"
    else:
        last = (result["attempts"][-1]["text"] if result and result.get("attempts")
                else attempts_tail[-1]["text"] if attempts_tail else "")
        content, finish = last, status
    tokens = result["tokens_generated"] if result else 0
    return {
        "id": "chatcmpl-" + job.id,
        "object": "chat.completion",
        "created": int(job.created_at),
        "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": finish,
                     "logprobs": None}],
        "usage": {"prompt_tokens": 0, "completion_tokens": tokens, "total_tokens": tokens},
        "tta": {"job_id": job.id, "status": status, "attempts_used": job.attempts_used, "reason": job.reason,
                "cached_from": job.cached_from},
    }
