"""One whole sdpo solve of a problem on each engine, with its time split.

    python -m bench.engine_solve                                   # default model, both CPU engines
    python -m bench.engine_solve --engines llamacpp --problem examples/lcm.yaml --seed 3
    python -m bench.engine_solve --problem examples/match_parens.yaml --n 4 --max-attempts 8

Each engine loads the model in its own process (so peak memory and load time are its own),
solves the same problem with the same request and seed, and reports generate / verify / train
seconds, the share of the round time spent adapting, tokens and the outcome. Rows are
appended to bench/results/engine_solve.jsonl.

The same seed does not give the same attempts on both engines (their samplers differ), so the
outcome may differ; the time split is what this compares. Timings depend on the machine's
load: run it on otherwise idle cores.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")


def _one(engine: str, problem: Path, seed: int, max_attempts: int, n: int | None) -> dict:
    """Runs in a child process: solve once, return the row."""
    import resource

    os.environ["TTA_ENGINE"] = engine
    from service.problem_file import load_problem_file
    from service.schemas import SolveRequest
    from service.settings import Settings
    from service.solver import Solver
    from service.wiring import build_solver_deps

    t = time.monotonic()
    deps = build_solver_deps(Settings())
    load_s = time.monotonic() - t
    pf = load_problem_file(problem)
    body = pf.model_dump(exclude={"meta"})
    body.update(strategy="sdpo", seed=seed)
    body["budget"]["max_attempts"] = max_attempts
    if n:
        body["sampling"]["n"] = n
    req = SolveRequest.model_validate(body)
    req_n, req_tokens = req.sampling.n, req.sampling.max_new_tokens
    res = Solver(deps).solve(req)
    tm = res.timings
    total = tm.generate_s + tm.verify_s + tm.train_s
    return {
        "engine": deps.engine.name, "model": deps.model_name, "problem": problem.stem, "seed": seed,
        "n": req_n, "max_new_tokens": req_tokens,
        "status": res.status, "solved_attempt": res.solved_attempt, "attempts_used": res.attempts_used,
        "rounds": len(res.rounds), "trained_rounds": sum(1 for r in res.rounds if r.train),
        "tokens": res.tokens_generated, "generate_s": round(tm.generate_s, 2), "verify_s": round(tm.verify_s, 3),
        "train_s": round(tm.train_s, 2), "train_share": round(tm.train_s / total, 3) if total else None,
        "wall_s": round(res.wall_s, 1), "load_s": round(load_s, 1),
        "peak_rss_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2),
        "date": time.strftime("%Y-%m-%d"),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--engines", nargs="+", default=["llamacpp", "transformers"])
    ap.add_argument("--problem", type=Path, default=Path("examples/fibonacci_json.yaml"))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--max-attempts", type=int, default=16)
    ap.add_argument("--n", type=int, default=None, help="attempts per round (default: the problem's)")
    ap.add_argument("--out", type=Path, default=Path("bench/results/engine_solve.jsonl"))
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(_one(args.child, args.problem, args.seed, args.max_attempts, args.n)))
        return

    from rich.console import Console
    from rich.table import Table

    table = Table("engine", "status", "attempts", "rounds (trained)", "tokens", "generate s", "verify s",
                  "train s", "train share", "load s", "peak RSS GB")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    for engine in args.engines:
        cmd = [sys.executable, "-m", "bench.engine_solve", "--child", engine, "--problem", str(args.problem),
               "--seed", str(args.seed), "--max-attempts", str(args.max_attempts)] + (["--n", str(args.n)] if args.n else [])
        out = subprocess.run(cmd, check=True, capture_output=True, text=True)
        row = json.loads(out.stdout.strip().splitlines()[-1])
        with args.out.open("a") as f:
            f.write(json.dumps(row) + "\n")
        table.add_row(row["engine"], row["status"], str(row["attempts_used"]),
                      f"{row['rounds']} ({row['trained_rounds']})", str(row["tokens"]), f"{row['generate_s']:.1f}",
                      f"{row['verify_s']:.2f}", f"{row['train_s']:.1f}", f"{row['train_share']:.0%}",
                      f"{row['load_s']:.1f}", f"{row['peak_rss_gb']:.1f}")
    Console().print(table)


if __name__ == "__main__":
    main()
