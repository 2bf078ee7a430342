"""What `tta bench` does (service/cli.py only parses the options): resolve the preset and the
options into a `BenchConfig`, run the pending runs with a rich progress bar, then report.

The --quick preset (set `quick`: fibonacci-json and match-parens; K=8, n=4, 1 seed,
max_new_tokens=256, T=1.0, SDPO defaults) is 6 runs of at most 2 rounds: at most 11 min on 2
CPU cores without native bf16, where SDPO trains in fp32 (see QUICK_ESTIMATE). Two seeds took
22 min there, over the 20-minute budget; `--seeds 2` on the same command adds the second.
Explicit options override the preset.
"""

from __future__ import annotations

import re
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Column

from bench import runner
from bench.runner import BenchConfig
from service.events import RoundStartEvent, SolverEvent, TrainingEvent

DEFAULTS: dict[str, Any] = dict(set="examples", k=32, seeds=3, n=8, max_new_tokens=512, temperature=1.0)
QUICK: dict[str, Any] = dict(set="quick", k=8, seeds=1, n=4, max_new_tokens=256, temperature=1.0)
QUICK_ESTIMATE = (
    "6 runs, at most 48 attempts and 2 SDPO rounds; measured when nothing is solved early: 11 min "
    "on 2 CPU cores training in fp32 (AVX2), less with native bf16; `--seeds 2` adds a second seed"
)
RUNS_DIR = Path(__file__).resolve().parent / "runs"  # gitignored


def resolve(opts: dict[str, Any], quick: bool) -> dict[str, Any]:
    """Explicit options (not None) > the --quick preset > the defaults."""
    base = {**DEFAULTS, **(QUICK if quick else {})}
    return {**base, **{k: v for k, v in opts.items() if v is not None}}


def default_run_dir(cfg: BenchConfig) -> Path:
    """Same settings, same directory: rerunning the same command resumes it."""
    from bench.sets import set_slug

    extra = "".join(f"-{k}{v}" for k, v in sorted(cfg.sdpo.items()))
    name = f"{set_slug(cfg.set)}-{cfg.model}-k{cfg.k}-n{cfg.n}-t{cfg.temperature:g}-m{cfg.max_new_tokens}{extra}"
    return RUNS_DIR / re.sub(r"[^A-Za-z0-9._-]+", "_", name)


def make_config(opts: dict[str, Any], quick: bool, settings: Any) -> BenchConfig:
    o = resolve(opts, quick)
    strategies = o.get("strategies") or ",".join(runner.STRATEGIES)
    seeds = o["seeds"]
    return BenchConfig(
        set=o["set"],
        strategies=[s.strip() for s in strategies.split(",") if s.strip()],
        k=o["k"], seeds=list(range(seeds)) if isinstance(seeds, int) else list(seeds),
        n=o["n"], temperature=o["temperature"], max_new_tokens=o["max_new_tokens"],
        sdpo=o.get("sdpo") or {}, model=str(settings.model), engine=str(settings.engine),
    )


def _quiet_loading() -> None:
    """No tqdm bar from transformers while the rich bar is live."""
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
    except ImportError:  # pragma: no cover
        pass


class BenchProgress:
    """A rich bar over runs (with ETA) and a line for the run in hand."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.bar = Progress(
            SpinnerColumn(), TextColumn("[bold]runs[/]"), BarColumn(bar_width=20), MofNCompleteColumn(),
            TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
            TextColumn("{task.description}", table_column=Column(ratio=1, no_wrap=True, overflow="ellipsis")),
            console=console, expand=True,
        )
        self.task = None
        self.current = ""
        self.solved = 0

    def hooks(self) -> runner.Progress:
        return runner.Progress(start=self.start, run_start=self.run_start, event=self.event, run_done=self.run_done)

    def start(self, plan: runner.RunPlan) -> None:
        if plan.skipped:
            self.console.print(f"resuming: {plan.skipped} of {plan.total} runs already done")
        self.bar.start()
        self.task = self.bar.add_task("", total=len(plan.todo))

    def run_start(self, problem: str, strategy: str, seed: int) -> None:
        self.current = f"{problem} · {strategy} · seed {seed}"
        self.bar.update(self.task, description=self.current)

    def event(self, e: SolverEvent) -> None:
        if isinstance(e, RoundStartEvent):
            msg = f"round {e.round + 1}: sampling ({e.attempts_used} attempts so far)"
        elif isinstance(e, TrainingEvent):
            msg = f"round {e.round + 1}: SDPO {e.steps} steps"
        else:
            return
        self.bar.update(self.task, description=f"{self.current}: {msg}")

    def run_done(self, rec: dict) -> None:
        self.bar.advance(self.task)
        if rec["status"] == "solved":
            res = f"[green]solved at attempt {rec['solved_attempt'] + 1}[/]"
        elif rec["status"] == "failed":
            res = f"[red]failed[/]: {rec.get('reason')}"
        else:
            res = f"[yellow]{rec['status']}[/] after {rec['attempts_used']}"
        self.bar.console.print(f"  {self.current}: {res} [dim]({rec.get('wall_s', 0):.0f} s)[/]")

    @contextmanager
    def loading(self, model: str) -> Iterator[None]:
        self.bar.update(self.task, description=f"loading model {model} (first run assembles and verifies it)…")
        t = time.monotonic()
        yield
        self.bar.console.print(f"model [bold]{model}[/] loaded in {time.monotonic() - t:.0f} s")
        self.bar.update(self.task, description=self.current)

    def stop(self) -> None:
        self.bar.stop()


def run_bench(opts: dict[str, Any], quick: bool, out: Path | None, report: bool, max_runs: int | None,
              console: Console, solve: runner.SolveFn | None = None, baselines_from: Path | None = None,
              best_of_k_from: Path | None = None) -> Path:
    """The `tta bench` command. Returns the run directory. Raises SetError, ConfigMismatch,
    ValueError (bad options) for the CLI to turn into one-line errors."""
    from bench.report import report as write_report
    from bench.sets import load_set
    from service.settings import get_settings

    settings = get_settings()
    cfg = make_config(opts, quick, settings)
    problems = load_set(cfg.set)
    runner.validate(problems, cfg)  # bad options fail here, before the model loads
    if best_of_k_from is not None and not Path(best_of_k_from).exists():
        raise FileNotFoundError(f"--best-of-k-from {best_of_k_from}: no such rates file")
    run_dir = out or default_run_dir(cfg)
    if quick:
        console.print(f"--quick: {QUICK_ESTIMATE}", highlight=False)
    console.print(
        f"[bold]{len(problems)}[/] problems × {len(cfg.strategies)} strategies × {len(cfg.seeds)} seeds, "
        f"K={cfg.k}, n={cfg.n}, T={cfg.temperature:g}, max_new_tokens={cfg.max_new_tokens}, "
        f"model={cfg.model} → {run_dir}", highlight=False,
    )

    prog = BenchProgress(console)
    if solve is None:
        _quiet_loading()
        solve = runner.model_solver(settings, on_load=lambda: prog.loading(str(settings.model)))
    t0 = time.monotonic()
    try:
        outcome = runner.run(problems, cfg, run_dir, solve, progress=prog.hooks(), max_runs=max_runs,
                             baselines_from=baselines_from)
    finally:
        prog.stop()
    console.print(f"{outcome.ran} run(s) in {time.monotonic() - t0:.0f} s ({outcome.failed} failed), "
                  f"{outcome.skipped} already done"
                  + (f" ({outcome.imported} baselines imported)" if outcome.imported else "")
                  + f"; results in {run_dir / runner.RESULTS}", highlight=False)
    if report:
        write_report(run_dir, console=console, best_of_k_from=best_of_k_from)
    return run_dir


def sdpo_overrides(extra_json: str | None = None, rank: int | None = None, **flat: Any) -> dict[str, Any]:
    """SdpoOptions overrides from the flat CLI options (None = not given) and a JSON object."""
    import json

    try:
        out: dict[str, Any] = json.loads(extra_json) if extra_json else {}
    except json.JSONDecodeError as exc:
        raise ValueError(f"--sdpo is not valid JSON ({exc}); give an object, e.g. '{{\"top_k\": 20}}'") from None
    if not isinstance(out, dict):
        raise ValueError("--sdpo must be a JSON object, e.g. '{\"top_k\": 20}'")
    out.update({k: v for k, v in flat.items() if v is not None})
    if rank is not None:
        out["lora"] = {**out.get("lora", {}), "rank": rank, "alpha": 2 * rank}
    return out
