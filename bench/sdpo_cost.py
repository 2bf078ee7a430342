"""What one attempt costs with sdpo and with best-of-k, phase by phase, on one machine.

    python -m bench.sdpo_cost                              # default model, HumanEval/70, n=8, 384 tokens
    python -m bench.sdpo_cost --n 16 --sdpo '{"steps": 1}'  # one step per round of 16
    python -m bench.sdpo_cost --no-share-prefix            # the trainer's per-sample prompt path

One process, one loaded model, the same problem and seed for both strategies: a best-of-k
round of `--n` attempts, then an sdpo round of the same `--n` attempts (a fresh adapter samples
what the base model samples), which trains on its failures and checkpoints. The problem is a
HumanEval task the default model did not solve in 16 samples (bench/results/humaneval_rates.jsonl),
so the round fails and trains, as rounds do in the hard regime; if an attempt passes anyway
the run says so and stops (try another --seed).

Phases: generation, verification (the real sandbox and tests), the teacher's forward pass,
the student's forward and backward passes, the optimiser (clipping, AdamW, backtracking),
the guard's measuring pass, and the checkpoint (adapter snapshot + the round's state and
snapshot written to Redis in one MULTI, as a worker does; the local Redis at
127.0.0.1:6379 if it answers, else an embedded one). Seconds per attempt are each phase's
seconds over the attempts of the round; `sdpo_over_best_of_k_per_attempt` is the ratio of
the two totals. Peak RSS is the process's high-water mark (one model per process).

Writes the run to --out (JSON, overwritten) and appends it to the .jsonl beside it. A timing
taken beside another heavy process is not worth quoting: run it alone.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
from pathlib import Path

os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

PARTS = ("generate", "verify", "teacher_forward", "student_forward", "student_backward", "optimizer",
         "guard_pass", "gate_pass", "checkpoint")
TRAINING = PARTS[2:8]  # the phases inside train_s (the checkpoint write comes after it)


def _redis():
    import redis

    client = redis.Redis(host="127.0.0.1", port=6379)
    try:
        client.ping()
        return client
    except redis.exceptions.ConnectionError:
        from service.embedded_redis import start_embedded_redis

        return redis.Redis.from_url(start_embedded_redis(Path(os.environ.get("TMPDIR", "/tmp")) / "tta-sdpo-cost"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--task", default="HumanEval/70", help="HumanEval task id (default: a 0/16 task).")
    ap.add_argument("--n", type=int, default=8, help="Attempts in the round (the service default is 8).")
    ap.add_argument("--max-new-tokens", type=int, default=384)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--sdpo", default="{}", help="SdpoOptions overrides as JSON (default: the service's).")
    ap.add_argument("--no-share-prefix", action="store_true", help="Encode each sample's whole prompt.")
    ap.add_argument("--out", type=Path, default=Path("bench/results/sdpo_cost.json"))
    args = ap.parse_args()

    from rich.console import Console
    from rich.table import Table

    from bench.host import host_label, reproduce
    from bench.problems import humaneval_request, humaneval_tasks
    from service.schemas import ProblemFile, SolveRequest
    from service.settings import get_settings
    from service.solver import Solver
    from service.wiring import build_solver_deps

    console = Console(stderr=True)
    settings = get_settings()
    t = time.monotonic()
    deps = build_solver_deps(settings)
    load_s = time.monotonic() - t
    deps.trainer.share_prefix = not args.no_share_prefix
    pf = ProblemFile.model_validate(humaneval_request(humaneval_tasks()[args.task]))
    client = _redis()

    snapshot_s = [0.0]
    snapshot = deps.pool.snapshot

    def timed_snapshot(adapter):
        t = time.perf_counter()
        try:
            return snapshot(adapter)
        finally:
            snapshot_s[0] += time.perf_counter() - t

    deps.pool.snapshot = timed_snapshot  # type: ignore[method-assign]
    write_s = [0.0]

    def checkpoint(state, blob) -> None:
        t = time.perf_counter()
        key = f"tta-bench:sdpo-cost:{os.getpid()}"
        with client.pipeline(transaction=True) as pipe:
            pipe.set(key + ":state", state.model_dump_json(), ex=600)
            if blob is not None:
                pipe.set(key + ":adapter", blob, ex=600)
            pipe.execute()
        write_s[0] += time.perf_counter() - t

    def run(strategy: str) -> dict:
        body = pf.model_dump(exclude={"meta"})
        body.update(strategy=strategy, seed=args.seed, budget={"max_attempts": 2 * args.n, "max_rounds": 2})
        body["sampling"].update(n=args.n, max_new_tokens=args.max_new_tokens)
        # the fields set, not a dump of them all: a preset in --sdpo fills only what is left out
        body["sdpo"] = {**pf.sdpo.model_dump(exclude_unset=True), **json.loads(args.sdpo)}
        req = SolveRequest.model_validate(body)
        snapshot_s[0] = write_s[0] = 0.0
        done = []
        # max_rounds=2 makes round 1 train; the run stops once round 1 is checkpointed.
        res = Solver(deps).solve(req, checkpoint=lambda st, blob: (checkpoint(st, blob), done.append(1)),
                                 cancelled=lambda: bool(done))
        r = res.rounds[0]
        if r.passes:
            console.print(f"[red]{args.task} seed {args.seed}: {r.passes} of {args.n} passed in round 1, so sdpo "
                          "would not train: try another --seed[/]")
            sys.exit(1)
        tt = r.train.timings if r.train else None
        parts = {
            "generate": r.timings.generate_s, "verify": r.timings.verify_s,
            "teacher_forward": tt.teacher_s if tt else 0.0, "student_forward": tt.forward_s if tt else 0.0,
            "student_backward": tt.backward_s if tt else 0.0, "optimizer": tt.optimizer_s if tt else 0.0,
            "guard_pass": tt.guard_s if tt else 0.0, "gate_pass": tt.gate_s if tt else 0.0, "checkpoint": snapshot_s[0] + write_s[0],
        }
        return {
            "seconds": {k: round(v, 3) for k, v in parts.items()},
            "train_s": round(r.timings.train_s, 3),  # includes bookkeeping outside the phases above
            "attempts": len(r.attempts), "tokens": sum(res.attempts[i].tokens for i in r.attempts),
            "train_tokens": r.train.tokens if r.train else 0,
            "steps": r.train.steps if r.train else 0, "kept_step": r.train.kept_step if r.train else 0,
            "kinds": [res.attempts[i].kind for i in r.attempts],
        }

    console.print(f"{deps.model_name} on {deps.engine.name}; {args.task}, n={args.n}, {args.max_new_tokens} tokens")
    bok = run("best_of_k")
    sdpo = run("sdpo")
    rss_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20

    def per_attempt(r: dict) -> dict:
        secs = dict(r["seconds"])
        # train_s spans the phases plus the solver's own bookkeeping around them
        secs["train_other"] = max(0.0, r["train_s"] - sum(secs[k] for k in TRAINING))
        return {k: round(v / r["attempts"], 3) for k, v in secs.items()}

    pa_b, pa_s = per_attempt(bok), per_attempt(sdpo)
    total_b, total_s = sum(pa_b.values()), sum(pa_s.values())
    train_share = sum(pa_s[k] for k in (*TRAINING, "train_other")) / total_s
    row = {
        "command": reproduce("bench.sdpo_cost"),
        "host": host_label(), "date": time.strftime("%Y-%m-%d"), "model": deps.model_name,
        "engine": deps.engine.name, "task": args.task, "n": args.n, "max_new_tokens": args.max_new_tokens,
        "seed": args.seed, "sdpo_options": SolveRequest.model_validate(
            {**pf.model_dump(exclude={"meta"}), "sdpo": json.loads(args.sdpo)}).sdpo.model_dump(),
        "share_prefix": not args.no_share_prefix, "threads": __import__("torch").get_num_threads(),
        "load_s": round(load_s, 1), "best_of_k": bok, "sdpo": sdpo,
        "per_attempt_s": {"best_of_k": pa_b, "sdpo": pa_s},
        "best_of_k_per_attempt_s": round(total_b, 3), "sdpo_per_attempt_s": round(total_s, 3),
        "sdpo_over_best_of_k_per_attempt": round(total_s / total_b, 2),
        "training_share_of_sdpo_round": round(train_share, 3),
        "peak_rss_gb": round(rss_gb, 2),
    }

    table = Table("phase", "best_of_k s/attempt", "sdpo s/attempt", title=f"{row['model']}, {row['host']}")
    for k in (*PARTS, "train_other"):
        table.add_row(k, f"{pa_b[k]:.2f}", f"{pa_s[k]:.2f}")
    table.add_row("[bold]total", f"[bold]{total_b:.2f}", f"[bold]{total_s:.2f}")
    Console().print(table)
    Console().print(f"sdpo / best_of_k per attempt: [bold]{row['sdpo_over_best_of_k_per_attempt']:.2f}x[/]; "
                    f"training is {100 * train_share:.0f}% of the sdpo round; {sdpo['steps']} step(s) on "
                    f"{sdpo['train_tokens']} tokens; peak RSS {row['peak_rss_gb']:.1f} GB")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(row, indent=2) + "\n")
    with args.out.with_suffix(".jsonl").open("a") as f:
        f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
