"""A stand-alone verification server, so untrusted code runs on another host/container.

`create_app(limits, http_policy)` exposes:
  POST /v1/verify  body VerifyRequest -> list[Verification] (same order as `responses`)
  GET  /healthz    liveness, plus whether bubblewrap isolation works here

The server has no authentication of its own: run it on an internal network only
(docker-compose puts it on one), never on a public interface.
"""

from __future__ import annotations

from fastapi import FastAPI
from pydantic import BaseModel, ConfigDict, Field, model_validator

from sandbox.errors import SandboxUnavailable
from sandbox.http_verifier import HttpPolicy
from sandbox.limits import SandboxLimits
from sandbox.runner import Runner
from sandbox.specs import VerifierSpec
from sandbox.verifiers import Verification, verify_many

MAX_RESPONSES = 256


class VerifyRequest(BaseModel):
    """One verification batch: the same spec for every response."""

    model_config = ConfigDict(extra="forbid")

    spec: VerifierSpec = Field(description="How to judge the responses.")
    responses: list[str] = Field(max_length=MAX_RESPONSES, description="The attempts (full model outputs).")
    truncated: list[bool] | None = Field(
        None, description="Per response: the generation hit the token limit. Defaults to all false."
    )

    @model_validator(mode="after")
    def _lengths(self) -> VerifyRequest:
        if self.truncated is not None and len(self.truncated) != len(self.responses):
            raise ValueError("`truncated` must have one entry per response")
        return self


def create_app(
    limits: SandboxLimits | None = None, http_policy: HttpPolicy | None = None, *, max_parallel: int = 2
) -> FastAPI:
    """The FastAPI app; `limits` and `http_policy` apply to every request."""
    limits = limits or SandboxLimits()
    policy = http_policy or HttpPolicy()
    runner = Runner(limits)
    app = FastAPI(title="tta sandbox", version="1")

    @app.get("/healthz")
    def healthz() -> dict[str, object]:
        isolated = limits.mode == "bwrap"
        detail = "ok"
        if isolated:
            try:
                runner.run_python(["-c", "pass"])
            except SandboxUnavailable as exc:
                isolated, detail = False, str(exc)
        return {"status": "ok", "mode": limits.mode, "isolation": isolated, "detail": detail}

    # a plain `def`: FastAPI runs it in its thread pool, so slow verifications don't block the loop
    @app.post("/v1/verify", response_model=list[Verification])
    def verify_endpoint(request: VerifyRequest) -> list[Verification]:
        return verify_many(
            request.spec, request.responses, request.truncated,
            limits=limits, http_policy=policy, runner=runner, max_parallel=max_parallel,
        )

    return app
