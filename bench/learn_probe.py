"""Does it learn? Pass rate of fresh samples before and after one round of SDPO steps.

    python -m bench.learn_probe examples/match_parens.yaml --samples 32 --steps 4 --lr 3e-4

1. `--samples` fresh attempts from the base model -> pass rate before;
2. one round of `--round-n` attempts, verified; SDPO steps on that round's failures
   (teacher shown each failure's feedback, or a passing sibling's solution when the round
   has one, as in the reference), printing the student-teacher divergence per step;
3. `--samples` fresh attempts with the adapted LoRA (same temperature, other seeds)
   -> pass rate after. Appends a JSON row to bench/results/learn_probe.jsonl.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("problem", type=Path)
    ap.add_argument("--samples", type=int, default=32)
    ap.add_argument("--round-n", type=int, default=8)
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--lr", type=float, default=3e-4)
    ap.add_argument("--alpha", type=float, default=None)
    ap.add_argument("--rank", type=int, default=None)
    ap.add_argument("--targets", nargs="+", default=None)
    ap.add_argument("--token-level", action="store_true")
    ap.add_argument("--teacher-ema", type=float, default=None)
    ap.add_argument("--seed", type=int, default=11)
    ap.add_argument("--skip-before", action="store_true", help="reuse nothing; only measure after")
    ap.add_argument("--out", type=Path, default=Path("bench/results/learn_probe.jsonl"))
    args = ap.parse_args()

    from rich.console import Console

    from adapters.trainer import DistillSample
    from service import prompts
    from service.engines.base import SamplingParams
    from service.problem_file import load_problem_file
    from service.settings import get_settings
    from service.wiring import build_solver_deps

    console = Console()
    pf = load_problem_file(args.problem)
    body = pf.model_dump(exclude={"meta"})
    over = {"steps": args.steps, "lr": args.lr, "alpha": args.alpha, "token_level": args.token_level or None,
            "teacher_ema": args.teacher_ema}
    body["sdpo"].update({k: v for k, v in over.items() if v is not None})
    if args.rank:
        body["sdpo"]["lora"].update(rank=args.rank, alpha=2 * args.rank)
    if args.targets:
        body["sdpo"]["lora"]["targets"] = args.targets
    req = type(pf).model_validate(body)
    deps = build_solver_deps(get_settings())
    s = req.sampling
    q = req.problem
    prompt = prompts.student_prompt(deps.tokenizer, q)

    def sample(adapter, count: int, seed: int):
        outs, done = [], 0
        while done < count:
            k = min(s.n, count - done)
            outs += deps.engine.generate([prompt], adapter, SamplingParams(
                n=k, temperature=s.temperature, top_p=s.top_p, max_new_tokens=s.max_new_tokens, seed=seed + done))[0]
            done += k
        vs = deps.verify(req.verifier, [o.text for o in outs], [o.finish_reason == "length" for o in outs])
        return outs, vs

    t0 = time.monotonic()
    before = None
    if not args.skip_before:
        _, vs = sample(None, args.samples, 10_000 + args.seed)
        before = sum(v.verdict == "pass" for v in vs)
        console.print(f"before: {before}/{args.samples}")

    adapter = deps.pool.create("probe", req.sdpo.lora, seed=args.seed)
    outs, vs = sample(adapter, args.round_n, args.seed)
    passing = [o.text for o, v in zip(outs, vs) if v.verdict == "pass"]
    samples = []
    for o, v in zip(outs, vs):
        if v.verdict == "pass" or not o.token_ids:
            continue
        samples.append(DistillSample(
            prompt, prompts.teacher_prompt(deps.tokenizer, q, v.feedback, passing[0] if passing else None), o.token_ids))
    console.print(f"round: {len(passing)}/{args.round_n} passed; distilling {len(samples)} failures "
                  f"({'teacher shown a passing sibling' if passing else 'feedback-only teacher'})")
    t = time.monotonic()
    rep = deps.trainer.train_round(adapter, samples, req.sdpo)
    train_s = time.monotonic() - t
    console.print(f"divergence per step: {[round(x, 4) for x in rep.step_divergence]} -> after {rep.loss_after:.4f} "
                  f"(kept step {rep.kept_step}, collapsed={rep.collapsed}; {train_s:.0f} s)")
    _, vs = sample(adapter, args.samples, 20_000 + args.seed)
    after = sum(v.verdict == "pass" for v in vs)
    console.print(f"after: {after}/{args.samples}" + (f" (before: {before}/{args.samples})" if before is not None else ""))
    row = {
        "problem": str(args.problem), "model": deps.model_name, "engine": deps.engine.name,
        "samples": args.samples, "before": before, "after": after,
        "round_passed": len(passing), "round_n": args.round_n, "distilled": len(samples),
        "sdpo": req.sdpo.model_dump(), "temperature": s.temperature, "max_new_tokens": s.max_new_tokens,
        "step_divergence": rep.step_divergence, "loss_after": rep.loss_after, "kept_step": rep.kept_step,
        "collapsed": rep.collapsed, "train_s": round(train_s, 1), "wall_s": round(time.monotonic() - t0, 1),
        "seed": args.seed, "date": time.strftime("%Y-%m-%d"),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with args.out.open("a") as f:
        f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
