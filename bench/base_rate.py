"""Measure a problem's per-attempt pass rate under the base model (no adapter).

    python -m bench.base_rate examples/*.yaml --samples 32
    python -m bench.base_rate --humaneval HumanEval/119 HumanEval/65 --samples 32

Samples in batches of the problem's `sampling.n` at its temperature and token limit,
verifies every attempt, prints the rate with a Wilson 95% interval, and appends one JSON
line per problem to --out (default bench/results/base_rates.jsonl).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
from pathlib import Path

os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    if n == 0:
        return (0.0, 1.0)
    p = k / n
    d = 1 + z * z / n
    c = p + z * z / (2 * n)
    r = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return ((c - r) / d, (c + r) / d)


def draw(deps, pf, prompt: list[int], params) -> tuple[int, int, dict[str, int]]:
    """One batch of base-model attempts (no adapter) at `params`, verified: (passes, tokens,
    attempts by verdict kind). The one sampling step of every base-rate scan."""
    outs = deps.engine.generate([prompt], None, params)[0]
    vs = deps.verify(pf.verifier, [o.text for o in outs], [o.finish_reason == "length" for o in outs])
    kinds: dict[str, int] = {}
    for v in vs:
        kinds[v.kind] = kinds.get(v.kind, 0) + 1
    return sum(v.verdict == "pass" for v in vs), sum(len(o.token_ids) for o in outs), kinds


def add_kinds(into: dict[str, int], more: dict[str, int]) -> None:
    for k, c in more.items():
        into[k] = into.get(k, 0) + c


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("files", nargs="*", type=Path)
    ap.add_argument("--humaneval", nargs="*", default=[], help="HumanEval task ids")
    ap.add_argument("--samples", type=int, default=32)
    ap.add_argument("--max-new-tokens", type=int, default=None)
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--out", type=Path, default=Path("bench/results/base_rates.jsonl"))
    args = ap.parse_args()

    from rich.console import Console
    from rich.progress import Progress

    from bench.problems import humaneval_request, humaneval_tasks
    from service import prompts
    from service.engines.base import SamplingParams
    from service.problem_file import load_problem_file
    from service.schemas import ProblemFile
    from service.settings import get_settings
    from service.wiring import build_solver_deps

    items: list[tuple[str, ProblemFile]] = [(str(f), load_problem_file(f)) for f in args.files]
    if args.humaneval:
        tasks = humaneval_tasks()
        items += [(t, ProblemFile.model_validate(humaneval_request(tasks[t]))) for t in args.humaneval]

    console = Console(stderr=True)
    settings = get_settings()
    with console.status("loading model"):
        deps = build_solver_deps(settings)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with Progress(console=console) as bar:
        for name, pf in items:
            s = pf.sampling
            max_new = args.max_new_tokens or s.max_new_tokens
            prompt = prompts.render(deps.tokenizer, prompts.messages(pf.problem.question, pf.problem.system_prompt))
            task = bar.add_task(name, total=args.samples)
            passed = tokens = 0
            kinds: dict[str, int] = {}
            t0 = time.monotonic()
            done = 0
            while done < args.samples:
                n = min(s.n, args.samples - done)
                p, t, k = draw(deps, pf, prompt, SamplingParams(n=n, temperature=s.temperature, top_p=s.top_p,
                                                                max_new_tokens=max_new, seed=args.seed + done))
                passed, tokens = passed + p, tokens + t
                add_kinds(kinds, k)
                done += n
                bar.update(task, completed=done, description=f"{name}: {passed}/{done} pass")
            lo, hi = wilson(passed, done)
            row = {
                "problem": name, "model": deps.model_name, "engine": deps.engine.name,
                "samples": done, "passed": passed, "rate": passed / done, "wilson95": [round(lo, 3), round(hi, 3)],
                "temperature": s.temperature, "max_new_tokens": max_new, "seed": args.seed,
                "kinds": kinds, "mean_tokens": tokens / done, "wall_s": round(time.monotonic() - t0, 1),
                "date": time.strftime("%Y-%m-%d"),
            }
            console.print(f"{name}: {passed}/{done} = {passed / done:.1%} (95% CI {lo:.1%}–{hi:.1%}), {kinds}")
            with args.out.open("a") as f:
                f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
