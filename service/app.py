"""The HTTP API (docs/architecture.md §6), routes only: the store, the worker, the guards, the error
mapping and the OpenAI translation live in their own modules.

    app = create_app(settings)                        # API only; workers elsewhere (`tta worker`)
    app = create_app(settings, embedded_worker=True)  # one process: API + a worker thread

Routes run as plain `def` in the thread pool (the store is synchronous); blocking waits
(`?wait=true`, chat completions, SSE) hold a thread each, so the pool is widened at start.
"""

from __future__ import annotations

import json
import logging
import re
import time
from contextlib import asynccontextmanager
from typing import Callable

from fastapi import APIRouter, Depends, FastAPI, Header, Query
from fastapi.responses import JSONResponse, Response, StreamingResponse

from service import http_errors
from service.admission import check_against_model
from service.api_schemas import (
    ERRORS,
    AttemptsPage,
    CancelResult,
    ChatCompletionRequest,
    ErrorBody,
    JobAccepted,
    JobCreate,
    JobView,
)
from service.errors import AdapterNotFound, InvalidRequest, JobNotFound
from service.events import DoneEvent
from service.guards import ApiKeys, BodySizeLimit
from service.metrics import Metrics
from service.schemas import SolveResult
from service.settings import Settings
from service.store import JobRecord, Store, fingerprint

log = logging.getLogger(__name__)

_EVENT_ID = re.compile(r"^\d+-\d+$")
# Past Redis's 64-bit integers LRANGE refuses the offset (a 500, found by fuzzing); no job
# holds more attempts than a budget allows (4096), so this bound loses nothing.
MAX_ATTEMPT_OFFSET = 1_000_000


def _valid_event_id(eid: str) -> bool:
    """A stream entry id Redis accepts: two unsigned 64-bit integers (a larger one broke the
    SSE stream after its 200 had been sent)."""
    return bool(_EVENT_ID.match(eid)) and all(int(part) < 2**64 for part in eid.split("-"))
THREADS = 256


def create_app(settings: Settings, *, store: Store | None = None, embedded_worker: bool = False,
               deps_factory: Callable[[], object] | None = None) -> FastAPI:
    """Build the app. Raises `ServiceMisconfigured` (auth on, no keys) before serving anything.

    `store`: default `Store.from_settings(settings)` (TTA_REDIS_URL, else an embedded Redis).
    `embedded_worker`: also run a worker thread in this process (loads the model; /readyz
    waits for it). `deps_factory` overrides how that worker builds its SolverDeps."""
    keys = ApiKeys(settings)
    store = store or Store.from_settings(settings)
    metrics = Metrics(store)
    worker = None
    if embedded_worker:
        from service.worker import Worker

        if deps_factory is None:
            from service.wiring import build_solver_deps

            deps_factory = lambda: build_solver_deps(settings)  # noqa: E731
        worker = Worker(settings, store, deps_factory)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        import anyio.to_thread

        anyio.to_thread.current_default_thread_limiter().total_tokens = THREADS
        if worker is not None:
            worker.start_thread()
        yield
        if worker is not None:
            # The job in hand is not finished here: its lease runs out and another worker
            # (or this one, restarted) resumes it from its last checkpoint.
            worker.stop.set()

    app = FastAPI(
        title="tta: test-time SDPO solving service", version="1", lifespan=lifespan,
        description="Submit a problem and a verifier; the service samples attempts, verifies them and, with "
        "`strategy: sdpo`, trains a per-job LoRA on the failures between rounds until an attempt passes or the "
        "budget is spent. Authenticate with `Authorization: Bearer <key>`. Every error has the shape "
        '`{"error": {"code", "message", "details"}}`.',
    )
    app.state.store, app.state.worker, app.state.settings = store, worker, settings
    http_errors.install(app)
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_request_bytes)

    app.add_middleware(_Timing, histogram=metrics.request_seconds)

    v1 = APIRouter(prefix="/v1", dependencies=[Depends(keys)], responses=ERRORS)

    # -- helpers ---------------------------------------------------------------------------------
    def view(job: JobRecord, status_code: int = 200) -> Response:
        """The JobView of a store record, as a JSON response."""
        req = job.solve_request()
        body = JobView(
            **job.model_dump(include=set(JobView.model_fields) - {"request", "result"}),
            strategy=req.strategy, max_attempts=req.budget.max_attempts, request=req,
            result=SolveResult.model_validate_json(job.result) if job.result else None,
            cancel_requested=not job.is_final and store.cancel_requested(job.id),
        )
        return Response(body.model_dump_json(), status_code=status_code, media_type="application/json")

    def submit(body: JobCreate, kid: str):
        req = body.solve_request()
        check_against_model(req, settings.model)
        src = body.init_adapter_from
        if src:
            if req.strategy != "sdpo":
                raise InvalidRequest("init_adapter_from: only the sdpo strategy has an adapter to warm-start",
                                     details={"strategy": req.strategy})
            try:
                store.get_job(src)
            except JobNotFound:
                raise JobNotFound(f"init_adapter_from: no job {src!r} (unknown, or expired)", details={"id": src}) from None
            if store.latest_adapter(src) is None:
                raise InvalidRequest(f"init_adapter_from: job {src} has no stored adapter (not an sdpo job, no round "
                                     "finished yet, or its snapshots expired)", details={"id": src})
        fp = fingerprint(settings.model, settings.engine, req, src)
        return store.submit(req, api_key_id=kid, max_active=settings.max_active_jobs_per_key,
                            idempotency_key=body.idempotency_key, init_adapter_from=src, fingerprint_=fp,
                            use_cache=body.cache)

    # -- jobs ------------------------------------------------------------------------------------
    @v1.post("/jobs", status_code=202, response_model=JobAccepted | JobView,
             summary="Submit a job",
             responses={200: {"model": JobView, "description": "?wait=true and the job finished in time"}})
    def create_job(
        body: JobCreate,
        kid: str = Depends(keys),
        wait: bool = Query(False, description="Block until the job is final (bounded by wait_s)."),
        wait_s: float = Query(60.0, gt=0, le=300, description="Longest wait, seconds (also capped by TTA_MAX_WAIT_S)."),
    ):
        """Queue a job (202 `{id, status}`). With `?wait=true`, answer the job view once it is final
        (200), or as it stands when `wait_s` runs out (202). An identical finished request is answered
        from the result cache (`cached_from` set, zero new attempts)."""
        sub = submit(body, kid)
        if not wait:
            return JSONResponse(JobAccepted(id=sub.id, status=sub.status, created=sub.created,
                                            cached_from=sub.cached_from).model_dump(), status_code=202)
        job = store.wait_final(sub.id, min(wait_s, settings.max_wait_s))
        return view(job, status_code=200 if job.is_final else 202)

    @v1.get("/jobs/{job_id}", response_model=None, summary="A job's status (and result once final)",
            responses={200: {"model": JobView}})
    def get_job(job_id: str):
        return view(store.get_job(job_id))

    @v1.get("/jobs/{job_id}/attempts", response_model=AttemptsPage, summary="The attempts, in order")
    def get_attempts(job_id: str, offset: int = Query(0, ge=0, le=MAX_ATTEMPT_OFFSET,
                                                      description="Index of the first attempt returned."),
                     limit: int = Query(1000, ge=1, le=10_000)):
        attempts = store.attempts(job_id, offset, limit)
        return {"id": job_id, "offset": offset, "total": store.attempts_count(job_id), "attempts": attempts}

    @v1.get("/jobs/{job_id}/events", summary="Live progress (Server-Sent Events)",
            response_class=StreamingResponse,
            responses={200: {"content": {"text/event-stream": {}},
                             "description": "`id:` = stream entry id, `event:` = type, `data:` = JSON; ends after `done`"}})
    def get_events(job_id: str, last_event_id: str | None = Header(None, description="Resume after this event id.")):
        """Events from the job's Redis stream: queued, claimed, round_start, verified, training, trained,
        checkpoint, cancel_requested, done. Reconnect with `Last-Event-ID` to continue where you were."""
        store.get_job(job_id)
        if last_event_id is not None and not _valid_event_id(last_event_id):
            raise InvalidRequest("Last-Event-ID: expected a stream entry id like 1700000000000-0")
        return StreamingResponse(_sse(store, job_id, last_event_id or "0-0"), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    @v1.delete("/jobs/{job_id}", response_model=CancelResult, status_code=202, summary="Cancel a job",
               responses={409: {"model": ErrorBody, "description": "The job has already finished"}})
    def cancel_job(job_id: str):
        """A queued job is cancelled at once; a running one stops within one round (its worker polls the
        flag between phases) and ends `cancelled`. A finished job cannot be cancelled (409)."""
        status = store.cancel(job_id)
        return JSONResponse({"id": job_id, "status": status, "cancel_requested": True}, status_code=202)

    @v1.get("/jobs/{job_id}/adapter", summary="The learned LoRA (safetensors)",
            response_class=Response, responses={200: {"content": {"application/octet-stream": {}}}})
    def get_adapter(job_id: str):
        """The latest adapter snapshot: safetensors bytes, PEFT state-dict keys plus the EMA teacher under
        `ema::`, LoRA settings in the header metadata."""
        job = store.get_job(job_id)
        got = store.latest_adapter(job_id)
        if got is None:
            strategy = job.solve_request().strategy
            why = (f"strategy {strategy} trains no adapter" if strategy != "sdpo"
                   else "no training round has been checkpointed (yet), or the snapshot expired")
            raise AdapterNotFound(f"job {job_id} has no adapter snapshot: {why}", details={"id": job_id})
        rnd, blob = got
        return Response(blob, media_type="application/octet-stream", headers={
            "Content-Disposition": f'attachment; filename="{job_id}-round{rnd}.safetensors"',
            "X-TTA-Adapter-Round": str(rnd)})

    # -- OpenAI-compatible -------------------------------------------------------------------------
    @v1.post("/chat/completions", summary="OpenAI-compatible: solve and answer")
    def chat_completions(body: ChatCompletionRequest, kid: str = Depends(keys)):
        """`model` = `<strategy>:<model>`; the verifier (and optional budget, sampling, sdpo) come in the
        extra body. Runs the job to completion (bounded wait) and answers with the solution; the job
        is in `tta`."""
        from service.openai_compat import to_completion, to_job

        sub = submit(to_job(body, settings.model), kid)
        job = store.wait_final(sub.id, min(body.wait_s or settings.max_wait_s, settings.max_wait_s))
        tail = [] if job.result else store.attempts(sub.id, max(0, job.attempts_used - 1), 1)
        return to_completion(job, body.model, tail)

    @v1.get("/models", summary="OpenAI-compatible: the strategy:model names served")
    def list_models():
        from service.openai_compat import served_models

        return {"object": "list", "data": [{"id": m, "object": "model", "created": 0, "owned_by": "tta"}
                                           for m in served_models(settings.model)]}

    app.include_router(v1)

    # -- operations --------------------------------------------------------------------------------
    @app.get("/healthz", summary="Liveness")
    def healthz():
        return {"status": "ok"}

    @app.get("/readyz", summary="Readiness: Redis reachable, model loaded (with an in-process worker)",
             responses={503: {"model": ErrorBody}})
    def readyz():
        checks = {"redis": store.ping()}
        if worker is not None:
            checks["model_loaded"] = worker.ready.is_set()
        if all(checks.values()):
            return {"status": "ready", "checks": checks}
        why = ("the job store (Redis) is unreachable" if not checks["redis"]
               else f"the worker's model is not loaded{': ' + worker.error if worker.error else ' yet'}")
        return http_errors.error_response(503, "not_ready", why, {"checks": checks})

    @app.get("/metrics", summary="Prometheus metrics", response_class=Response)
    def prometheus():
        body, ctype = metrics.render()
        return Response(body, media_type=ctype)

    return app


def _sse(store: Store, job_id: str, after: str):
    """SSE frames from the job's event stream; returns after the `done` event (or when the
    job is final and its stream has nothing more)."""
    last, quiet = after, 0
    yield "retry: 2000\n\n"
    while True:
        events = store.events(job_id, last, block_ms=1000)
        if not events:
            quiet += 1
            if quiet % 5 == 0:
                yield ": keep-alive\n\n"
                if store.get_job(job_id).is_final and not store.events(job_id, last):
                    return
            continue
        quiet = 0
        for eid, ev in events:
            last = eid
            yield f"id: {eid}\nevent: {ev.type}\ndata: {json.dumps(ev.model_dump(mode='json'))}\n\n"
            if isinstance(ev, DoneEvent):
                return


class _Timing:
    """Request latency per route template (pure ASGI: no buffering of streamed bodies)."""

    def __init__(self, app, histogram) -> None:
        self.app, self.histogram = app, histogram

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        t = time.perf_counter()
        status = {"code": 500}

        async def send_(msg) -> None:
            if msg["type"] == "http.response.start":
                status["code"] = msg["status"]
                route = scope.get("route")
                self.histogram.labels(scope["method"], getattr(route, "path", "unmatched"),
                                      str(msg["status"])).observe(time.perf_counter() - t)
            await send(msg)

        await self.app(scope, receive, send_)
