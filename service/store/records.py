"""What the store keeps about a job, and the ids it derives from a request: the job
record, the result-cache fingerprint, the API key id."""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Mapping
from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, Field

from service.schemas import JobStatus, SolveRequest, SolveResult
from service.store.keys import SCHEMA

FINAL = ("solved", "exhausted", "cancelled", "failed")


def as_text(v: bytes | str | None) -> str | None:
    return v.decode() if isinstance(v, bytes) else v


def new_job_id() -> str:
    return "job_" + uuid.uuid4().hex[:20]


def key_id(api_key: str | None) -> str:
    """A stable, non-secret id for an API key (what the store keys are scoped by)."""
    return "anonymous" if not api_key else hashlib.sha256(api_key.encode()).hexdigest()[:16]


def fingerprint(model: str, engine: str, req: SolveRequest, init_adapter_from: str | None) -> str:
    """The result-cache key: sha256 over everything that decides a job's outcome."""
    body = {"schema": SCHEMA, "model": model, "engine": engine,
            "request": req.model_dump(mode="json"), "init_adapter_from": init_adapter_from}
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def cacheable(result: SolveResult, req: SolveRequest) -> bool:
    # Only outcomes that the same request reproduces: solved, or a spent budget that is not
    # a wall-clock deadline. Cancelled and failed jobs are never cached.
    return result.status == "solved" or (result.status == "exhausted" and req.budget.deadline_s is None)


class JobRecord(BaseModel):
    """The job hash `P:job:{id}`, typed. Redis keeps every value as a string: `from_redis`
    parses them, for every reader alike; `to_redis` is what HSET writes."""

    model_config = ConfigDict(extra="ignore")  # a field a newer version added is not ours to read

    id: str
    status: JobStatus
    request: str = Field(description="The SolveRequest as submitted, JSON.")
    created_at: float
    attempts_used: int = 0
    rounds_done: int = 0
    epoch: int = Field(0, description="The lease fence: every claim bumps it, and so does `fail`.")
    deliveries: int = 0
    api_key: str = Field(description="The submitter's key id (`key_id`), not the key.")
    fingerprint: str | None = None
    init_adapter_from: str | None = None
    idempotency_key: str | None = None
    reason: str | None = None
    result: str | None = Field(None, description="The SolveResult JSON, once final.")
    cached_from: str | None = None
    finished_at: float | None = None
    started_at: float | None = None
    owner: str | None = None
    adapter_round: int | None = None

    @property
    def is_final(self) -> bool:
        return self.status in FINAL

    def solve_request(self) -> SolveRequest:
        return SolveRequest.model_validate_json(self.request)

    @classmethod
    def from_redis(cls, raw: Mapping[bytes | str, bytes | str]) -> JobRecord | None:
        """The record of an HGETALL reply; None for an empty one (no such job). An empty
        string is how the hash says "none"."""
        if not raw:
            return None
        return cls.model_validate({as_text(k): as_text(v) for k, v in raw.items() if v not in (b"", "")})

    def to_redis(self, *names: str) -> dict[str, str | int | float]:
        """The fields `names` (default: all) as HSET takes them, None as ''."""
        return {n: "" if (v := getattr(self, n)) is None else v for n in names or type(self).model_fields}


@dataclass
class Submitted:
    id: str
    status: str
    created: bool  # False: an existing job (idempotency key) was returned
    cached_from: str | None = None
