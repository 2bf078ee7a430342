"""`tta bench`: the benchmark's commands. Registered with `tta` through the entry-point group
`tta.commands` (pyproject.toml), so that the service never imports this package."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from service.console import err, fail, quiet_libraries
from service.errors import TTAError

bench_app = typer.Typer(no_args_is_help=False)
BEST_OF_K_FROM_HELP = ("Also estimate best-of-k from the base samples in this rates file (unbiased pass@k; "
                      "e.g. bench/results/humaneval_rates.jsonl), as strategy best_of_k_estimated.")


@bench_app.callback(invoke_without_command=True)
def bench(
    ctx: typer.Context,
    set_: Optional[str] = typer.Option(None, "--set", help="examples | quick | math-small | humaneval-edge | "
                                       "humaneval:ID,ID | lcb:PATH | PATH (default: examples)."),
    strategies: Optional[str] = typer.Option(None, help="Comma-separated (default: sdpo,best_of_k,multi_turn)."),
    k: Optional[int] = typer.Option(None, "--k", help="Attempt budget K per run (default 32)."),
    seeds: Optional[int] = typer.Option(None, "--seeds", help="Seeds S per problem and strategy (default 3)."),
    n: Optional[int] = typer.Option(None, "--n", help="Attempts per round (default 8)."),
    max_new_tokens: Optional[int] = typer.Option(None, help="Per attempt (default 512)."),
    temperature: Optional[float] = typer.Option(None, help="Sampling temperature (default 1.0)."),
    lr: Optional[float] = typer.Option(None, help="SDPO learning rate (default: SdpoOptions)."),
    steps: Optional[int] = typer.Option(None, help="SDPO steps per failed round."),
    alpha: Optional[float] = typer.Option(None, help="SDPO divergence interpolation (0 fwd KL, 1 rev KL)."),
    rank: Optional[int] = typer.Option(None, help="LoRA rank (alpha = 2 x rank)."),
    replay_rounds: Optional[int] = typer.Option(None, help="SDPO replay of earlier rounds' failures."),
    teacher_ema: Optional[float] = typer.Option(None, help="SDPO teacher EMA rate."),
    sdpo: Optional[str] = typer.Option(None, help='Other SdpoOptions overrides as JSON, e.g. \'{"top_k": 20}\'.'),
    out: Optional[Path] = typer.Option(None, help="Run directory (default: bench/runs/<set>-<model>-k..-n..-t..-m..)."),
    quick: bool = typer.Option(False, "--quick", help="Preset: set quick, K=8, n=4, 1 seed, 256 tokens (<= 11 min, 2 cores)."),
    max_runs: Optional[int] = typer.Option(None, help="Stop after this many runs (resume later)."),
    baselines_from: Optional[Path] = typer.Option(
        None, help="Reuse best_of_k/multi_turn runs from this run directory (same settings but SDPO)."),
    no_report: bool = typer.Option(False, "--no-report", help="Skip the report at the end."),
    best_of_k_from: Optional[Path] = typer.Option(None, help=BEST_OF_K_FROM_HELP),
) -> None:
    """Run sdpo, best_of_k and multi_turn on a problem set on equal terms, checkpointing each
    (problem, strategy, seed) to RUN_DIR/results.jsonl (a rerun resumes), then report.
    `tta bench report RUN_DIR` reports an existing run."""
    if ctx.invoked_subcommand is not None:
        return
    quiet_libraries()
    from pydantic import ValidationError

    from bench.command import run_bench, sdpo_overrides
    from bench.runner import ConfigMismatch
    from bench.sets import SetError

    try:
        overrides = sdpo_overrides(sdpo, rank=rank, lr=lr, steps=steps, alpha=alpha,
                                   replay_rounds=replay_rounds, teacher_ema=teacher_ema)
        opts = dict(set=set_, strategies=strategies, k=k, seeds=seeds, n=n, max_new_tokens=max_new_tokens,
                    temperature=temperature, sdpo=overrides or None)
        run_bench(opts, quick, out, report=not no_report, max_runs=max_runs, console=err,
                  baselines_from=baselines_from, best_of_k_from=best_of_k_from)
    except (SetError, ConfigMismatch, TTAError) as exc:
        fail(getattr(exc, "message", None) or str(exc))
    except ValidationError as exc:
        from service.problem_file import describe

        fail(f"option: {describe(exc)}")
    except (ValueError, FileNotFoundError) as exc:
        fail(str(exc))


@bench_app.command("report")
def bench_report(
    run_dir: Path = typer.Argument(..., help="A run directory (holds results.jsonl)."),
    best_of_k_from: Optional[Path] = typer.Option(None, help=BEST_OF_K_FROM_HELP),
) -> None:
    """Print the tables of a run and write its summary.json and discovery_*.png."""
    from bench.report import report

    try:
        report(run_dir, console=err, best_of_k_from=best_of_k_from)
    except (FileNotFoundError, ValueError) as exc:
        fail(str(exc))


@bench_app.command("publish")
def bench_publish(
    run_dir: Path = typer.Argument(..., help="A reported run directory."),
    dest: Path = typer.Option(Path("bench/results"), help="Where <set>-<model>-<date>/ is created."),
    name: str | None = typer.Option(None, help="Folder name instead of <set>-<model>-<date>."),
) -> None:
    """Copy a run's small files (results, summary.json/.md, plots) to DEST/<set>-<model>-<date>/ for git."""
    from bench.report import publish

    try:
        err.print(f"published to {publish(run_dir, dest, name=name)}", highlight=False)
    except (FileNotFoundError, ValueError) as exc:
        fail(str(exc))
