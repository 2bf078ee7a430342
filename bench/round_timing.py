"""Time one sdpo round split into generate / verify / SDPO train, and peak RSS.

    python -m bench.round_timing --model tiny --n 4 8
    python -m bench.round_timing --model default --n 4 8

Each n runs one round of `n` attempts at `--max-new-tokens` on a problem file (default
examples/match_parens.yaml) with a verifier nobody can pass, so that the round always
ends in SDPO steps; prints a table and appends JSON rows to
bench/results/round_timing.jsonl. Peak RSS is the process's high-water mark so far
(ru_maxrss), so run one model per process.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import time
from pathlib import Path

os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=None, help="default | tiny | HF dir (default: TTA_MODEL)")
    ap.add_argument("--n", type=int, nargs="+", default=[4, 8])
    ap.add_argument("--max-new-tokens", type=int, default=256)
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--problem", type=Path, default=Path("examples/match_parens.yaml"))
    ap.add_argument("--out", type=Path, default=Path("bench/results/round_timing.jsonl"))
    args = ap.parse_args()
    if args.model:
        os.environ["TTA_MODEL"] = args.model

    from rich.console import Console
    from rich.table import Table

    from service.problem_file import load_problem_file
    from service.schemas import SolveRequest
    from service.settings import Settings
    from service.solver import Solver
    from service.wiring import build_solver_deps

    console = Console()
    settings = Settings()
    t = time.monotonic()
    deps = build_solver_deps(settings)
    load_s = time.monotonic() - t
    pf = load_problem_file(args.problem)
    impossible = {"type": "regex", "pattern": "(?!)", "requirement": "nothing can match (timing run)"}
    table = Table("model", "n", "tokens", "generate s", "tok/s", "verify s", "train s", "train tokens", "peak RSS GB")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    for n in args.n:
        body = pf.model_dump(exclude={"meta"})
        body.update(
            verifier=impossible, strategy="sdpo", seed=1,
            budget={"max_attempts": 2 * n, "max_rounds": 2},
        )
        body["sampling"].update(n=n, max_new_tokens=args.max_new_tokens)
        body["sdpo"].update(steps=args.steps)
        req = SolveRequest.model_validate(body)
        # max_rounds=2 makes round 1 train; stop right after the training by cancelling.
        seen = []
        res = Solver(deps).solve(req, on_event=seen.append,
                                 cancelled=lambda: any(e.type == "trained" for e in seen))
        r = res.rounds[0]
        tokens = sum(res.attempts[i].tokens for i in r.attempts)
        row = {
            "model": deps.model_name, "engine": deps.engine.name, "n": n, "max_new_tokens": args.max_new_tokens,
            "tokens": tokens, "generate_s": round(r.timings.generate_s, 2), "verify_s": round(r.timings.verify_s, 3),
            "train_s": round(r.timings.train_s, 2), "train_steps": args.steps,
            "train_tokens": r.train.tokens if r.train else 0,
            "divergence": r.train.step_divergence if r.train else None,
            "peak_rss_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2),
            "load_s": round(load_s, 1), "threads": __import__("torch").get_num_threads(),
            "date": time.strftime("%Y-%m-%d"),
        }
        table.add_row(row["model"], str(n), str(tokens), f"{row['generate_s']:.1f}",
                      f"{tokens / max(row['generate_s'], 1e-9):.1f}", f"{row['verify_s']:.2f}",
                      f"{row['train_s']:.1f}", str(row["train_tokens"]), f"{row['peak_rss_gb']:.2f}")
        with args.out.open("a") as f:
            f.write(json.dumps(row) + "\n")
    console.print(table)


if __name__ == "__main__":
    main()
