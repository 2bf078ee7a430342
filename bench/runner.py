"""The benchmark runner: every (problem, strategy, seed) of a set, one solve each, on equal terms.

All strategies get the same model, sampling (n, temperature, top_p, max_new_tokens), attempt
budget K and seeds; the problems' own sampling/budget/sdpo settings are ignored. Each finished
run is appended as one JSON line to RUN_DIR/results.jsonl (flushed and fsynced), its full
`SolveResult` to RUN_DIR/traces/; a rerun with the same comparability settings skips every key
already recorded there (a `failed` run is retried), so an interrupted benchmark resumes. Runs
go seed-major, then problem, then strategy, so that a partial run holds all strategies of the
problems it reached.

The runner takes any `solve(req, on_event=...) -> SolveResult` callable, so it is tested without
a model; `model_solver` builds the real one lazily (no model is loaded when nothing is pending).

Not guaranteed: identical timings across runs (wall-clock phases depend on the machine's load).
"""

from __future__ import annotations

import json
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

from pydantic import BaseModel, ConfigDict, Field

from bench.host import host_label
from bench.sets import BenchProblem, join_specs
from service.events import SolverEvent
from service.schemas import SdpoOptions, SolveRequest, SolveResult

STRATEGIES = ("sdpo", "best_of_k", "multi_turn")
RESULTS = "results.jsonl"
CONFIG = "config.json"
RECORD_VERSION = 1

SolveFn = Callable[..., SolveResult]


class BenchConfig(BaseModel):
    """What a benchmark run holds fixed. `fingerprint()` is what a resumed run must match;
    the set, strategies and seeds may grow between reruns (more keys), the rest may not."""

    model_config = ConfigDict(extra="forbid")

    set: str = Field(description="Problem set name or path (bench/sets.py).")
    strategies: list[str] = Field(default_factory=lambda: list(STRATEGIES))
    k: int = Field(32, ge=1, description="Attempt budget per run.")
    seeds: list[int] = Field(default_factory=lambda: [0, 1, 2])
    n: int = Field(8, ge=1, description="Attempts per round.")
    temperature: float = 1.0
    top_p: float = 1.0
    max_new_tokens: int = 512
    sdpo: dict[str, Any] = Field(default_factory=dict, description="Overrides of SdpoOptions (lr, steps, ...).")
    multi_turn_mode: str = "feedback_only"
    model: str = Field("default", description="TTA_MODEL as configured (recorded, part of the fingerprint).")
    engine: str = Field("auto", description="TTA_ENGINE as configured.")
    # `sdpo` holds only the overrides; the defaults under them can change between versions
    # (token_level did), so the run records the options it actually ran with.
    sdpo_resolved: dict[str, Any] | None = Field(None, description="All SdpoOptions in effect (recorded).")

    def fingerprint(self) -> dict[str, Any]:
        return self.model_dump(exclude={"set", "strategies", "seeds", "sdpo_resolved"})

    def resolved(self) -> dict[str, Any]:
        return self.sdpo_options().model_dump(mode="json")

    def sdpo_options(self) -> SdpoOptions:
        return SdpoOptions.model_validate(self.sdpo)


def run_key(problem: str, strategy: str, seed: int) -> str:
    return f"{problem}|{strategy}|{seed}"


def build_request(bp: BenchProblem, strategy: str, seed: int, cfg: BenchConfig) -> SolveRequest:
    pf = bp.problem
    return SolveRequest(
        problem=pf.problem,
        verifier=pf.verifier,
        strategy=strategy,
        budget={"max_attempts": cfg.k},
        sampling={"n": cfg.n, "temperature": cfg.temperature, "top_p": cfg.top_p,
                  "max_new_tokens": cfg.max_new_tokens},
        sdpo=cfg.sdpo_options(),
        multi_turn_mode=cfg.multi_turn_mode,
        seed=seed,
    )


def validate(problems: list[BenchProblem], cfg: BenchConfig) -> None:
    """Raise ValueError (unknown strategy) or pydantic's ValidationError (sampling, budget,
    SDPO options) for a configuration no run could start with, before anything is loaded."""
    unknown = [s for s in cfg.strategies if s not in STRATEGIES]
    if unknown:
        raise ValueError(f"unknown strategies {unknown}; choose from {', '.join(STRATEGIES)}")
    for bp in problems[:1]:
        for strategy in cfg.strategies:
            build_request(bp, strategy, cfg.seeds[0] if cfg.seeds else 0, cfg)


def compact(problem: str, result: SolveResult, k: int) -> dict[str, Any]:
    """The checkpoint line of one run: what the metrics need, without attempt texts."""
    return {
        "v": RECORD_VERSION,
        "key": run_key(problem, result.strategy, result.seed),
        "problem": problem, "strategy": result.strategy, "seed": result.seed, "k": k,
        "status": result.status, "reason": result.reason,
        "solved_attempt": result.solved_attempt, "attempts_used": result.attempts_used,
        "attempts": [{"round": a.round, "tokens": a.tokens, "verdict": a.verdict, "kind": a.kind,
                      "truncated": a.truncated} for a in result.attempts],
        "rounds": [{"round": r.round, "n": len(r.attempts), "passes": r.passes,
                    "generate_s": round(r.timings.generate_s, 4), "verify_s": round(r.timings.verify_s, 4),
                    "train_s": round(r.timings.train_s, 4),
                    "train": None if r.train is None else {
                        "loss_before": r.train.loss_before, "loss_after": r.train.loss_after,
                        "kept_step": r.train.kept_step, "collapsed": r.train.collapsed}}
                   for r in result.rounds],
        "tokens_generated": result.tokens_generated, "wall_s": round(result.wall_s, 3),
        "model": result.model, "engine": result.engine, "host": host_label(),
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }


def failed_record(problem: str, strategy: str, seed: int, k: int, reason: str) -> dict[str, Any]:
    return {"v": RECORD_VERSION, "key": run_key(problem, strategy, seed), "problem": problem,
            "strategy": strategy, "seed": seed, "k": k, "status": "failed", "reason": reason,
            "solved_attempt": None, "attempts_used": 0, "attempts": [], "rounds": [],
            "tokens_generated": 0, "wall_s": 0.0, "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S")}


def read_results(run_dir: Path) -> list[dict[str, Any]]:
    """All complete lines of RUN_DIR/results.jsonl; a torn last line (a crash mid-write) is skipped."""
    path = Path(run_dir) / RESULTS
    if not path.exists():
        return []
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return out


def done_keys(records: Iterable[dict[str, Any]]) -> set[str]:
    """Keys whose latest record is a finished run (solved/exhausted/cancelled, not failed)."""
    last: dict[str, str] = {}
    for r in records:
        last[r["key"]] = r.get("status", "")
    return {k for k, s in last.items() if s != "failed"}


class ConfigMismatch(ValueError):
    """A resumed run whose comparability settings differ from the recorded ones."""


def _differences(then: dict[str, Any], now: dict[str, Any]) -> str:
    keys = [k for k in dict.fromkeys([*then, *now]) if then.get(k) != now.get(k)]
    return ", ".join(f"{k}: {then.get(k)!r} there, {now.get(k)!r} now" for k in keys)


def prepare_run_dir(run_dir: Path, cfg: BenchConfig) -> None:
    """Create RUN_DIR with config.json, or check a resumed one against it. Strategies, seeds
    and problems recorded earlier are merged in (they only add keys)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / CONFIG
    if path.exists():
        old = BenchConfig.model_validate(json.loads(path.read_text()))
        if old.fingerprint() != cfg.fingerprint():
            raise ConfigMismatch(
                f"{run_dir} was run with other settings ({_differences(old.fingerprint(), cfg.fingerprint())}); "
                "results would not be comparable: use another --out, or the recorded settings"
            )
        if old.sdpo_resolved is not None and old.sdpo_resolved != cfg.resolved():
            raise ConfigMismatch(
                f"{run_dir} was run with other SDPO options ({_differences(old.sdpo_resolved, cfg.resolved())}); "
                "the SDPO defaults changed since it started, so new runs would not be comparable: use another --out"
            )
        cfg = cfg.model_copy(update={
            "strategies": list(dict.fromkeys(old.strategies + cfg.strategies)),
            "seeds": sorted(set(old.seeds) | set(cfg.seeds)),
            "set": join_specs(old.set, cfg.set),
        })
    cfg = cfg.model_copy(update={"sdpo_resolved": cfg.resolved()})
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(cfg.model_dump(), indent=2) + "\n")
    tmp.replace(path)


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name)[:120]


def append_record(run_dir: Path, rec: dict[str, Any]) -> None:
    path = run_dir / RESULTS
    torn = False
    if path.exists() and path.stat().st_size:
        with path.open("rb") as f:
            f.seek(-1, os.SEEK_END)
            torn = f.read(1) != b"\n"  # a crash mid-write left a partial line: end it first
    with path.open("a", encoding="utf-8") as f:
        f.write(("\n" if torn else "") + json.dumps(rec) + "\n")
        f.flush()
        os.fsync(f.fileno())


def baseline_source(src_dir: Path, cfg: BenchConfig) -> list[dict[str, Any]]:
    """The records of another run directory whose baselines this run may reuse; raises
    FileNotFoundError / ConfigMismatch when it is not one.

    best_of_k and multi_turn never read the SDPO options, so a run that differs only in them
    (the usual case when trying an SDPO setting on a set already run) can reuse its
    baselines instead of spending a third or more of the time on them again. Everything else
    that makes runs comparable (model, engine, K, n, sampling) must match, as for a resume.
    The pairing of random streams is exact only when both ran with the same llama.cpp build
    on the same kind of CPU; elsewhere the comparison stays fair but is noisier."""
    src_dir = Path(src_dir)
    cfg_path = src_dir / CONFIG
    if not cfg_path.exists():
        raise FileNotFoundError(f"--baselines-from {src_dir}: no {CONFIG} there (not a benchmark run directory)")
    src = BenchConfig.model_validate(json.loads(cfg_path.read_text()))
    then, now = ({k: v for k, v in c.fingerprint().items() if k != "sdpo"} for c in (src, cfg))
    if then != now:
        raise ConfigMismatch(
            f"--baselines-from {src_dir} ran with other settings ({_differences(then, now)}); "
            "its baselines are not comparable with this run")
    return read_results(src_dir)


def import_baselines(src_records: list[dict[str, Any]], src_dir: Path, run_dir: Path,
                     problems: Sequence[BenchProblem], cfg: BenchConfig) -> int:
    """Append to RUN_DIR the finished non-sdpo runs of `src_records` that this run plans and
    has not finished yet, marked `imported_from`; returns how many."""
    wanted = {run_key(bp.name, st, s) for bp in problems for st in cfg.strategies if st != "sdpo" for s in cfg.seeds}
    have = done_keys(read_results(run_dir))
    copied = 0
    for key, rec in {r["key"]: r for r in src_records}.items():
        if key in wanted and key not in have and rec.get("status") != "failed":
            append_record(run_dir, {**rec, "imported_from": str(src_dir)})
            copied += 1
    return copied


@dataclass
class RunPlan:
    todo: list[tuple[BenchProblem, str, int]]
    skipped: int
    total: int


def plan(problems: Sequence[BenchProblem], cfg: BenchConfig, done: set[str]) -> RunPlan:
    order = [(bp, st, s) for s in cfg.seeds for bp in problems for st in cfg.strategies]
    todo = [t for t in order if run_key(t[0].name, t[1], t[2]) not in done]
    return RunPlan(todo=todo, skipped=len(order) - len(todo), total=len(order))


@dataclass
class Progress:
    """Callbacks the runner reports to (the CLI draws a rich bar from them)."""

    start: Callable[[RunPlan], None] = lambda plan: None
    run_start: Callable[[str, str, int], None] = lambda problem, strategy, seed: None
    event: Callable[[SolverEvent], None] = lambda e: None
    run_done: Callable[[dict], None] = lambda rec: None


@dataclass
class RunOutcome:
    run_dir: Path
    ran: int = 0
    skipped: int = 0  # already done (imported ones included)
    imported: int = 0  # baselines copied from --baselines-from
    failed: int = 0
    records: list[dict[str, Any]] = field(default_factory=list)


def run(
    problems: Sequence[BenchProblem],
    cfg: BenchConfig,
    run_dir: Path,
    solve: SolveFn,
    progress: Progress | None = None,
    keep_traces: bool = True,
    max_runs: int | None = None,
    baselines_from: Path | None = None,
) -> RunOutcome:
    """Solve every pending (problem, strategy, seed), checkpointing each as it finishes.
    `solve(req, on_event=cb)` is called once per run; an exception it raises is recorded
    as a `failed` run (retried on the next rerun) and the benchmark goes on.
    `baselines_from`: a run directory whose baselines to reuse (see baseline_source)."""
    validate(problems, cfg)
    run_dir = Path(run_dir)
    src = baseline_source(baselines_from, cfg) if baselines_from else []  # checked before RUN_DIR is made
    prepare_run_dir(run_dir, cfg)
    imported = import_baselines(src, baselines_from, run_dir, problems, cfg) if baselines_from else 0
    p = plan(problems, cfg, done_keys(read_results(run_dir)))
    todo = p.todo[:max_runs] if max_runs is not None else p.todo
    progress = progress or Progress()
    progress.start(RunPlan(todo=todo, skipped=p.skipped, total=p.total))
    out = RunOutcome(run_dir=run_dir, skipped=p.skipped, imported=imported)
    traces = run_dir / "traces"
    for bp, st, seed in todo:
        progress.run_start(bp.name, st, seed)
        req = build_request(bp, st, seed, cfg)
        try:
            result = solve(req, on_event=progress.event)
            rec = compact(bp.name, result, cfg.k)
            if keep_traces:
                traces.mkdir(exist_ok=True)
                (traces / f"{_safe(bp.name)}__{st}__{seed}.json").write_text(result.model_dump_json())
        except KeyboardInterrupt:
            raise
        except Exception as exc:  # one broken run must not end the benchmark
            rec = failed_record(bp.name, st, seed, cfg.k, f"{type(exc).__name__}: {exc}")
        append_record(run_dir, rec)
        out.ran += 1
        out.failed += rec["status"] == "failed"
        out.records.append(rec)
        progress.run_done(rec)
    return out


def model_solver(settings: Any, on_load: Callable[[], Any] | None = None) -> SolveFn:
    """A `solve` callable backed by the configured model, loaded on first use."""
    state: dict[str, Any] = {}

    def solve(req: SolveRequest, on_event: Callable[[SolverEvent], None] | None = None) -> SolveResult:
        if "solver" not in state:
            from service.solver import Solver
            from service.wiring import build_solver_deps

            ctx = on_load() if on_load else None
            if ctx is not None:
                with ctx:
                    state["solver"] = Solver(build_solver_deps(settings))
            else:
                state["solver"] = Solver(build_solver_deps(settings))
        return state["solver"].solve(req, on_event=on_event)

    return solve
