"""Scan HumanEval for problems at the edge of the model: per-attempt base pass rates.

    python -m bench.edge_scan --samples 16 --out bench/results/humaneval_rates.jsonl
    python -m bench.edge_scan --samples 16 --tasks 0-39 119      # a part of HumanEval
    python -m bench.edge_scan --select                          # print the selection only
    python -m bench.edge_scan --select --hard                   # the hard set and the scan's progress
    python -m bench.edge_scan --hard                            # the hard regime: 64 samples, rate <= 3.5%
    TTA_MODEL=coder-1.5b python -m bench.edge_scan --hard       # the same for the 1.5B model


Measures like bench/base_rate.py (same sampling: batches of --n at --temperature from the base
model without adapter, seed = --seed + samples so far; same verifier; same JSON row per task,
appended to --out), and resumes: a task already measured there for this model is skipped, and
a task with fewer samples than --samples gets only the missing ones, drawn at the seeds that
follow those already used (so `--samples 64` extends a 16-sample scan without repeating a draw).
A task stops early once its passes alone put it above the edge (more than 30% of --samples
passed: no later failure can bring it back into the set); its row says `"stopped": "above_edge"`
and counts as measured. About half of HumanEval is that easy for the default model, so this
roughly halves the scan. `--full` measures every task to --samples regardless.
`--hard` is the paper's regime (bench.sets.select_hard): --samples 64, and a task stops once its
pooled passes exceed 3.5% of them (3 passes), because it is then out of the hard set; the
likeliest hard tasks go first (`hard_order`), so a scan cut short has looked where they are.
Run it with the default model (TTA_MODEL unset). With --samples 16 the 164 tasks take
roughly 3-4 h on 2 CPU cores (measured 2026-12-01: 89 s per task on average, 45 s for one
stopped early, 120 s for one measured to 16; minutes on a GPU); interrupt (Ctrl-C or `kill`)
and rerun at will: the task in progress keeps the batches it finished as a row of its own.

`--set humaneval-edge` of `tta bench` then takes the tasks that `bench.sets.select_edge`
keeps: pooled over the rows of a task, >= 8 samples, >= 1 pass and a rate in [1%, 30%].
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import time
from pathlib import Path

os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")


def parse_tasks(specs: list[str]) -> list[str]:
    """'0-3', '119', 'HumanEval/7' -> HumanEval/0..3, HumanEval/119, HumanEval/7 (order kept, no repeats)."""
    out: list[str] = []
    for s in specs:
        s = s.removeprefix("HumanEval/")
        if "-" in s:
            a, b = s.split("-", 1)
            out += [f"HumanEval/{i}" for i in range(int(a), int(b) + 1)]
        else:
            out.append(f"HumanEval/{int(s)}")
    return list(dict.fromkeys(out))


def above_edge(passed: int, done: int, target: int, hi: float, min_samples: int) -> bool:
    """True when `passed` of `done` samples already exceed `hi` of the `target` samples, so
    the task is out of the edge set however the rest come out (and `done` is enough samples
    for the set's rule to read the row)."""
    return done >= min_samples and passed > hi * target


def measured(rows: list[dict], model: str, samples: int, full: bool = False,
             hi: float | None = None, min_samples: int = 8) -> set[str]:
    """Tasks that need no more samples: `samples` reached, or (unless `full`) stopped above
    the edge, or (unless `full`, with `hi`) already more than `hi` of `samples` passed."""
    from bench.sets import pooled_rates

    have = pooled_rates(rows, model=model)
    done = {t for t, (_, n) in have.items() if n >= samples}
    if full:
        return done
    done |= {r["problem"] for r in rows if r.get("model") == model and r.get("stopped") == "above_edge"}
    if hi is not None:
        done |= {t for t, (p, n) in have.items() if above_edge(p, n, samples, hi, min_samples)}
    return done


def hard_order(todo: list[str], rows: list[dict], model: str) -> list[str]:
    """The likeliest hard tasks first: those with 1 pass so far for `model`, then 2, then
    none. Within a group, the tasks the default model found hardest go first (lowest pooled
    rate, and at equal rates the one with more samples behind it): for a new model with no
    rows, the 0.5B's scan is the best guess of where its hard tasks are. Stable otherwise."""
    from bench.sets import EDGE_MODEL, pooled_rates

    own = pooled_rates(rows, model=model)
    ref = pooled_rates(rows, model=EDGE_MODEL)

    def key(t: str) -> tuple[int, float, int]:
        group = {1: 0, 2: 1}.get(own.get(t, (0, 0))[0], 2)
        p, n = ref.get(t, (0, 0))
        return (group, p / n if n else 1.0, -n)

    return sorted(todo, key=key)


def print_selection(rows: list[dict], model: str, hard: bool, console) -> None:
    """The tasks the set's rule keeps for `model` (tab-separated: task, passes/samples, rate,
    and the split for --hard), then how far the scan is: tasks measured, the mean of their
    rates (HumanEval pass@1 at the scan's temperature once all 164 are in; the early stop
    barely biases it, since a stopped task's rate is already far from the rule's bounds) and,
    with --hard, the tasks that could still turn out hard."""
    from bench.sets import EDGE_HI, EDGE_LO, HARD_HI, HARD_SAMPLES, hard_split, pooled_rates, select_edge, select_hard

    pooled = pooled_rates(rows, model=model)
    keep = select_hard(rows, model=model) if hard else select_edge(rows, model=model)
    for t in keep:
        p, n = pooled[t]
        print(f"{t}\t{p}/{n}\t{p / n:.1%}" + (f"\t{hard_split(t)}" if hard else ""))
    mean = sum(p / n for p, n in pooled.values()) / len(pooled) if pooled else float("nan")
    rule = f"hard (>= {HARD_SAMPLES} samples, <= {HARD_HI:.1%})" if hard else f"in [{EDGE_LO:.0%}, {EDGE_HI:.0%}]"
    console.print(f"model {model}: {len(keep)} of {len(pooled)} measured tasks {rule}; "
                  f"mean rate of the measured tasks {mean:.1%}")
    if hard:
        open_ = [t for t, (p, n) in pooled.items() if n < HARD_SAMPLES and p <= HARD_HI * HARD_SAMPLES]
        console.print(f"{len(open_)} measured task(s) below {HARD_SAMPLES} samples could still be hard; "
                      f"{164 - len(pooled)} not measured yet")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tasks", nargs="*", default=None, help="task numbers or ranges (default: all 164)")
    ap.add_argument("--samples", type=int, default=None, help="samples per task in all (default 16; 64 with --hard)")
    ap.add_argument("--n", type=int, default=8, help="attempts per generate call")
    ap.add_argument("--temperature", type=float, default=1.0)
    ap.add_argument("--max-new-tokens", type=int, default=384)
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--out", type=Path, default=Path("bench/results/humaneval_rates.jsonl"))
    ap.add_argument("--select", action="store_true", help="only print the tasks the edge rule keeps from --out")
    ap.add_argument("--full", action="store_true", help="no early stop: every task gets --samples attempts")
    ap.add_argument("--hard", action="store_true",
                    help="the hard regime: --samples 64 by default, stop a task above 3.5%% (bench.sets.HARD_HI)")
    args = ap.parse_args()

    from rich.console import Console

    from bench.sets import EDGE_HI, EDGE_MIN_SAMPLES, HARD_HI, HARD_SAMPLES, pooled_rates, read_rates

    console = Console(stderr=True)
    if args.samples is None:
        args.samples = HARD_SAMPLES if args.hard else 16
    stop_hi = HARD_HI if args.hard else EDGE_HI
    if args.select:
        from service.settings import get_settings

        print_selection(read_rates(args.out), get_settings().model, args.hard, console)
        return

    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

    from bench.base_rate import add_kinds, draw, wilson
    from bench.problems import humaneval_request, humaneval_tasks
    from service import prompts
    from service.engines.base import SamplingParams
    from service.schemas import ProblemFile
    from service.settings import get_settings
    from service.wiring import build_solver_deps

    # `kill` (SIGTERM) stops a scan as Ctrl-C does, keeping the batches already drawn
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    tasks = humaneval_tasks()
    ids = parse_tasks(args.tasks) if args.tasks else list(tasks)
    settings = get_settings()
    with console.status(f"loading model {settings.model}"):
        deps = build_solver_deps(settings)
    rows = read_rates(args.out) if args.out.exists() else []
    done_tasks = measured(rows, deps.model_name, args.samples, args.full, stop_hi, EDGE_MIN_SAMPLES)
    todo = [t for t in ids if t not in done_tasks]
    before = pooled_rates(rows, model=deps.model_name)
    if args.hard:
        todo = hard_order(todo, rows, deps.model_name)
    console.print(f"{len(ids) - len(todo)} task(s) already measured in {args.out}; {len(todo)} to go")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    cols = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*cols, console=console) as bar:
        overall = bar.add_task("tasks", total=len(todo))
        for name in todo:
            pf = ProblemFile.model_validate(humaneval_request(tasks[name]))
            prompt = prompts.render(deps.tokenizer, prompts.messages(pf.problem.question, pf.problem.system_prompt))
            # Earlier rows of this task: their samples count towards --samples, and their seeds
            # (--seed + 0 .. prior-1) are not drawn again.
            prior_pass, prior = before.get(name, (0, 0))
            passed = tokens = done = 0
            kinds: dict[str, int] = {}
            stopped = False
            t0 = time.monotonic()
            interrupted = False
            try:
                while prior + done < args.samples and not stopped:
                    n = min(args.n, args.samples - prior - done)
                    p, t, k = draw(deps, pf, prompt, SamplingParams(
                        n=n, temperature=args.temperature, top_p=1.0, max_new_tokens=args.max_new_tokens,
                        seed=args.seed + prior + done))
                    passed, tokens = passed + p, tokens + t
                    add_kinds(kinds, k)
                    done += n
                    stopped = not args.full and prior + done < args.samples and above_edge(
                        prior_pass + passed, prior + done, args.samples, stop_hi, EDGE_MIN_SAMPLES)
                    bar.update(overall, description=f"{name}: {prior_pass + passed}/{prior + done} pass")
            except KeyboardInterrupt:
                # a hard task takes minutes: keep its finished batches (the next run draws the
                # seeds after them), then stop
                interrupted = True
                if not done:
                    raise
            lo, hi = wilson(passed, done)
            row = {
                "problem": name, "model": deps.model_name, "engine": deps.engine.name,
                "samples": done, "passed": passed, "rate": passed / done, "wilson95": [round(lo, 3), round(hi, 3)],
                "temperature": args.temperature, "max_new_tokens": args.max_new_tokens, "seed": args.seed,
                "seed_offset": prior,
                "kinds": kinds, "mean_tokens": tokens / done, "wall_s": round(time.monotonic() - t0, 1),
                "date": time.strftime("%Y-%m-%d"),
            }
            if stopped:
                row["stopped"] = "above_hard" if args.hard else "above_edge"
            with args.out.open("a") as f:
                f.write(json.dumps(row) + "\n")
            note = " (stopped: above the set's rate)" if stopped else ""
            total_p, total_n = prior_pass + passed, prior + done
            bar.console.print(f"{name}: {total_p}/{total_n} = {total_p / total_n:.1%} in all{note}", highlight=False)
            if interrupted:
                raise KeyboardInterrupt
            bar.advance(overall)


if __name__ == "__main__":
    main()
