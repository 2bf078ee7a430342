"""`tta`: the command line. Thin: parses, calls the library, renders."""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path
from typing import Optional

import typer

from service.console import err, fail, quiet_libraries
from service.errors import TTAError

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Test-time SDPO solving service.")


@app.callback()
def _root() -> None:
    """Test-time SDPO solving service: solve hard problems by learning on them."""


@app.command()
def solve(
    file: Path = typer.Argument(..., help="Problem file (YAML or JSON); see examples/."),
    strategy: Optional[str] = typer.Option(None, help="sdpo | best_of_k | multi_turn (default: the file's, else best_of_k)."),
    max_attempts: Optional[int] = typer.Option(None, help="Attempt budget (default: the file's, else 32)."),
    seed: Optional[int] = typer.Option(None, help="Random seed (default: the file's, else 0)."),
    as_json: bool = typer.Option(False, "--json", help="Print the full result as JSON on stdout."),
) -> None:
    """Solve one problem file with the configured model (TTA_MODEL), showing live progress."""
    quiet_libraries()
    from pydantic import ValidationError

    from service.admission import check_against_model
    from service.problem_file import describe, load_problem_file
    from service.progress import SolveProgress
    from service.schemas import SolveRequest
    from service.settings import get_settings

    settings = get_settings()
    try:
        pf = load_problem_file(file)
        overrides = {k: v for k, v in {"strategy": strategy, "seed": seed}.items() if v is not None}
        data = pf.model_dump(exclude={"meta"}) | overrides
        if max_attempts is not None:
            data["budget"]["max_attempts"] = max_attempts
        req = SolveRequest.model_validate(data)
        check_against_model(req, settings.model)
    except TTAError as exc:
        fail(exc.message)
    except ValidationError as exc:
        fail(f"option: {describe(exc)}")

    from service.solver import Solver
    from service.wiring import build_solver_deps
    progress = SolveProgress(req, title=pf.meta.get("name", file.stem), console=err)
    try:
        with progress.loading(settings.model):
            deps = build_solver_deps(settings)
        with progress:
            result = Solver(deps).solve(req, on_event=progress.on_event)
            progress.ended(result.status)
    except TTAError as exc:
        fail(exc.message)
    if as_json:
        sys.stdout.write(result.model_dump_json(indent=2) + "\n")
    else:
        progress.summary(result)
    raise typer.Exit(0 if result.status == "solved" else 1)


@app.command()
def verify(
    problem_file: Path = typer.Argument(..., help="Problem file whose `verifier` to apply."),
    answer_file: Path = typer.Argument(..., help="A text file holding the answer, as a model would write it."),
    truncated: bool = typer.Option(False, help="Treat the answer as cut off at the token limit."),
    as_json: bool = typer.Option(False, "--json", help="Print the verification record as JSON."),
) -> None:
    """Check one answer against a problem's verifier: prints verdict and feedback.
    Exit code 0 on pass, 1 on fail, 2 on a bad file or a verifier error."""
    from service.problem_file import load_problem_file
    from service.settings import get_settings
    from service.wiring import build_verifier

    try:
        pf = load_problem_file(problem_file)
        answer = answer_file.read_text(encoding="utf-8")
    except TTAError as exc:
        fail(exc.message)
    except (OSError, UnicodeDecodeError) as exc:
        fail(f"{answer_file}: cannot read as UTF-8 text: {exc}")
    v = build_verifier(get_settings())(pf.verifier, [answer], [truncated])[0]
    if as_json:
        sys.stdout.write(v.model_dump_json(indent=2) + "\n")
    else:
        colour = {"pass": "green", "fail": "red"}.get(v.verdict, "yellow")
        err.print(f"[bold {colour}]{v.verdict.upper()}[/] ({v.kind}; {v.passed}/{v.total} cases, score {v.score:.2f})")
        if v.feedback:
            print(v.feedback)
    raise typer.Exit({"pass": 0, "fail": 1}.get(v.verdict, 2))


sandbox_app = typer.Typer(no_args_is_help=True, help="The sandbox as its own service.")
app.add_typer(sandbox_app, name="sandbox")


@sandbox_app.command("serve")
def sandbox_serve(
    host: str = typer.Option("127.0.0.1", help="Bind address (Compose: 0.0.0.0 on an internal network)."),
    port: int = typer.Option(8081),
    parallel: int = typer.Option(2, help="Attempts verified at once."),
) -> None:
    """Serve POST /v1/verify, so that workers keep untrusted code out of their process
    (point them at it with TTA_SANDBOX_URL)."""
    import uvicorn

    from sandbox import create_app
    from service.settings import get_settings

    settings = get_settings()
    limits = settings.sandbox_limits
    uvicorn.run(create_app(limits, settings.http_policy, max_parallel=parallel), host=host, port=port,
                log_level="info")

# ---- the HTTP service, its workers, and a client ----------------------------------------------


@app.command()
def serve(
    host: str = typer.Option("127.0.0.1", help="Bind address."),
    port: int = typer.Option(8080),
    workers: int = typer.Option(0, help="Extra `tta worker` processes to start beside the API."),
    no_worker: bool = typer.Option(False, "--no-worker", help="API only: no worker thread in this process."),
    log_level: str = typer.Option("info", help="uvicorn log level."),
) -> None:
    """Serve the HTTP API (/docs), with a worker thread in-process unless --no-worker. Without
    TTA_REDIS_URL an embedded Redis is started (single-machine mode) and handed to --workers."""
    quiet_libraries()
    import signal
    import subprocess

    import uvicorn

    from service.app import create_app
    from service.settings import get_settings

    settings = get_settings()
    if not settings.redis_url:
        from service.embedded_redis import start_embedded_redis

        url = start_embedded_redis(settings.embedded_redis_dir or settings.cache_dir / "redis")
        settings = settings.model_copy(update={"redis_url": url})
        err.print(f"embedded Redis at [bold]{url}[/] (set TTA_REDIS_URL to use a real one)")
    try:
        api = create_app(settings, embedded_worker=not no_worker)
    except TTAError as exc:
        fail(exc.message)
    env = dict(os.environ, TTA_REDIS_URL=settings.redis_url)
    procs = [subprocess.Popen([sys.executable, "-m", "service.cli", "worker"], env=env) for _ in range(workers)]
    # uvicorn re-raises the SIGTERM it caught once it has shut down; with the default handler the
    # process would die right there, leaving the worker processes and the embedded Redis behind.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(0))
    try:
        uvicorn.run(api, host=host, port=port, log_level=log_level)
    finally:
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()


@app.command()
def worker(name: Optional[str] = typer.Option(None, help="Consumer name (default: TTA_WORKER_NAME, else host-pid).")) -> None:
    """Run queued jobs from TTA_REDIS_URL until stopped (SIGTERM/Ctrl-C: finish the job in hand;
    twice: stop now; an unfinished job is resumed by another worker from its last round)."""
    quiet_libraries()
    import signal

    from service.settings import get_settings
    from service.store import Store
    from service.wiring import build_solver_deps
    from service.worker import Worker

    settings = get_settings()
    if not settings.redis_url:
        fail("tta worker needs TTA_REDIS_URL (the Redis the API uses); an embedded Redis is private to `tta serve`")
    store = Store.from_settings(settings)
    if not store.ping():
        from service.store import redacted_url

        fail(f"cannot reach Redis at {redacted_url(settings.redis_url)}")
    w = Worker(settings, store, lambda: build_solver_deps(settings), name=name)

    def stop(signum, frame):
        if w.stop.is_set():
            raise KeyboardInterrupt
        err.print("stopping after the current job (again to stop now)")
        w.stop.set()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        with err.status(f"worker {w.name}: loading model [bold]{settings.model}[/]…"):
            w.load()
    except TTAError as exc:
        fail(exc.message)
    err.print(f"worker [bold]{w.name}[/] ready (model {settings.model}, lease {settings.lease_s:g} s)")
    try:
        w.run()
    except KeyboardInterrupt:
        pass


def _client():
    from service.client import Client

    return Client()


def _api_call(fn):
    import httpx

    from service.client import ApiError

    try:
        return fn()
    except ApiError as exc:
        fail(f"{exc.message} ({exc.status} {exc.code})")
    except httpx.HTTPError as exc:
        fail(f"cannot reach the service: {exc}")


@app.command()
def submit(
    file: Path = typer.Argument(..., help="Problem file (YAML or JSON), as for `tta solve`."),
    wait: bool = typer.Option(False, help="Wait for the result (bounded by --wait-s)."),
    wait_s: float = typer.Option(300.0, help="Longest wait, seconds."),
    idempotency_key: Optional[str] = typer.Option(None, help="Same key, same job."),
    init_adapter_from: Optional[str] = typer.Option(None, help="Warm-start from this job's adapter."),
    no_cache: bool = typer.Option(False, "--no-cache", help="Run even if the result is cached."),
) -> None:
    """Submit a problem file to the service at TTA_URL (key: TTA_API_KEY); prints the job as JSON."""
    from service.problem_file import load_problem_file

    try:
        pf = load_problem_file(file)
    except TTAError as exc:
        fail(exc.message)
    body = pf.model_dump(mode="json", exclude={"meta"})
    body.update({k: v for k, v in {"idempotency_key": idempotency_key, "init_adapter_from": init_adapter_from}.items() if v})
    if no_cache:
        body["cache"] = False
    res = _api_call(lambda: _client().submit(body, wait=wait, wait_s=wait_s))
    sys.stdout.write(json.dumps(res, indent=2) + "\n")


@app.command()
def status(job_id: str = typer.Argument(...), as_json: bool = typer.Option(False, "--json", help="The full job view.")) -> None:
    """A job's status (and its result when final)."""
    job = _api_call(lambda: _client().job(job_id))
    if as_json:
        sys.stdout.write(json.dumps(job, indent=2) + "\n")
        return
    line = f"{job['id']}: [bold]{job['status']}[/] — {job['attempts_used']}/{job['max_attempts']} attempts, {job['rounds_done']} round(s)"
    if job.get("reason"):
        line += f" — {job['reason']}"
    if job.get("cached_from"):
        line += f" (from the cache: {job['cached_from']})"
    err.print(line, highlight=False)
    if job.get("result") and job["result"].get("solution") is not None:
        print(job["result"]["solution"])


@app.command()
def watch(job_id: str = typer.Argument(...)) -> None:
    """Follow a job's live progress (SSE) until it ends; exit 0 if solved."""
    from service.events import parse_event
    from service.progress import SolveProgress
    from service.schemas import SolveRequest, SolveResult

    c = _client()
    job = _api_call(lambda: c.job(job_id))
    progress = SolveProgress(SolveRequest.model_validate(job["request"]), title=job_id, console=err)

    def follow():
        with progress:
            for ev in c.events(job_id):
                progress.on_event(parse_event({"type": ev.type, **ev.data}))

    _api_call(follow)
    job = _api_call(lambda: c.job(job_id))
    if job.get("result"):
        progress.summary(SolveResult.model_validate(job["result"]))
    else:
        err.print(f"{job['status']}: {job.get('reason') or ''}")
    raise typer.Exit(0 if job["status"] == "solved" else 1)


@app.command()
def cancel(job_id: str = typer.Argument(...)) -> None:
    """Cancel a job (a running one stops within one round)."""
    res = _api_call(lambda: _client().cancel(job_id))
    err.print(f"{job_id}: {res['status']}" + (" (cancel requested; stops within one round)" if res["status"] == "running" else ""))


# ---- subcommands of other packages ---------------------------------------------------------
# `tta bench` belongs to the bench package, which registers it under the entry-point group
# `tta.commands` (pyproject.toml): the service never imports bench, and an image without it
# simply has no `tta bench`.


def _register_commands() -> None:
    from importlib.metadata import entry_points

    for ep in entry_points(group="tta.commands"):
        try:
            app.add_typer(ep.load(), name=ep.name)
        except ImportError as exc:  # an installed plugin whose own dependencies are missing
            logging.getLogger(__name__).warning("tta %s is unavailable: %s", ep.name, exc)


_register_commands()


def main() -> None:
    from pydantic import ValidationError

    from service.settings import get_settings

    try:
        level = get_settings().log_level
    except ValidationError as exc:  # a bad TTA_* variable: name it, no traceback
        from service.problem_file import describe

        err.print(f"[bold red]error:[/] settings: {describe(exc)}", highlight=False, soft_wrap=True)
        sys.exit(2)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    app()


if __name__ == "__main__":
    main()
