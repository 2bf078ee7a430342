"""`tta`: the command line. Thin: parses, calls the library, renders."""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

from service.errors import TTAError

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Test-time SDPO solving service.")
err = Console(stderr=True)


@app.callback()
def _root() -> None:
    """Test-time SDPO solving service: solve hard problems by learning on them."""


def _quiet_libraries() -> None:
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never reach for a hub
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import warnings

    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=UserWarning, module="peft")


def _fail(message: str, code: int = 2) -> None:
    err.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


@app.command()
def solve(
    file: Path = typer.Argument(..., help="Problem file (YAML or JSON); see examples/."),
    strategy: Optional[str] = typer.Option(None, help="sdpo | best_of_k | multi_turn (default: the file's, else sdpo)."),
    max_attempts: Optional[int] = typer.Option(None, help="Attempt budget (default: the file's, else 32)."),
    seed: Optional[int] = typer.Option(None, help="Random seed (default: the file's, else 0)."),
    as_json: bool = typer.Option(False, "--json", help="Print the full result as JSON on stdout."),
) -> None:
    """Solve one problem file with the configured model (TTA_MODEL), showing live progress."""
    _quiet_libraries()
    from pydantic import ValidationError

    from service.problem_file import describe, load_problem_file
    from service.progress import SolveProgress
    from service.schemas import SolveRequest

    try:
        pf = load_problem_file(file)
        overrides = {k: v for k, v in {"strategy": strategy, "seed": seed}.items() if v is not None}
        data = pf.model_dump(exclude={"meta"}) | overrides
        if max_attempts is not None:
            data["budget"]["max_attempts"] = max_attempts
        req = SolveRequest.model_validate(data)
    except TTAError as exc:
        _fail(exc.message)
    except ValidationError as exc:
        _fail(f"option: {describe(exc)}")

    from service.runtime import build_solver_deps
    from service.settings import get_settings
    from service.solver import Solver

    settings = get_settings()
    progress = SolveProgress(req, title=pf.meta.get("name", file.stem), console=err)
    try:
        with progress.loading(settings.model):
            deps = build_solver_deps(settings)
        with progress:
            result = Solver(deps).solve(req, on_event=progress.on_event)
    except TTAError as exc:
        _fail(exc.message)
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
    from service.runtime import build_verifier
    from service.settings import get_settings

    try:
        pf = load_problem_file(problem_file)
        answer = answer_file.read_text(encoding="utf-8")
    except TTAError as exc:
        _fail(exc.message)
    except (OSError, UnicodeDecodeError) as exc:
        _fail(f"{answer_file}: cannot read as UTF-8 text: {exc}")
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

    from sandbox import SandboxLimits, create_app
    from service.settings import get_settings

    limits = SandboxLimits(mode=get_settings().sandbox)
    uvicorn.run(create_app(limits, max_parallel=parallel), host=host, port=port, log_level="info")


def main() -> None:
    logging.basicConfig(level=os.environ.get("TTA_LOG_LEVEL", "WARNING"), format="%(levelname)s %(name)s: %(message)s")
    app()


if __name__ == "__main__":
    main()
