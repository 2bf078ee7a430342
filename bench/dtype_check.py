"""Does an SDPO round trained in bf16 on a CPU do what the same round does in fp32?

    python -m bench.dtype_check --set humaneval-edge-dev

Why ask: `TTA_DTYPE=auto` trains in bf16 on CPUs with native bf16 (AVX-512-BF16 or AMX) and
in fp32 elsewhere, and the benchmark's kept updates went different ways on the two kinds of
machine. The adapter's own weights are fp32 either way (PEFT keeps them so), and the output
layer runs in fp32 (adapters/trainer.py), but in bf16 every layer's output, LoRA delta
included, is rounded to bf16 (8 bits of mantissa, a step of ~0.4% of each activation). A
round's divergences are ~1e-3 nats and its first updates move the LoRA delta by ~lr, so both
the gradient and the guard's "did this update lower the divergence?" may be read through
that rounding.

The base attempts and rounds are the sweep's (`bench.sweep`, same cache). Per all-failed
round: a fresh LoRA (same seed) is trained once on the bf16 model and once on the fp32 model
with the default options; then both resulting adapters are scored on the fp32 model:
- the round's divergence (the quantity the trainer descends and its guard checks) before and
  after, with the teacher as it was at the start of the round;
- `pass_factor`: exp of log mean exp of the change in log p of each passing reference, the
  sweep's estimate of how one attempt's pass probability moved (> 1 is better);
- the cosine between the two models' first-step gradients.
Rows go to `--out` (JSONL) and a table to `--table` (markdown).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

DTYPES = ("bfloat16", "float32")


def cosine(a: list, b: list) -> float:
    import torch

    x = torch.cat([t.flatten().double() for t in a])
    y = torch.cat([t.flatten().double() for t in b])
    return float(x @ y / (x.norm() * y.norm()).clamp_min(1e-30))


def table(rows: list[dict[str, Any]]) -> str:
    from bench.sweep import log_mean_exp

    lines = [
        "| task, round | dtype | steps kept (as trained) | divergence before → after, as trained | "
        "divergence before → after, in fp32 | pass factor (fp32) | train s |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        for d in DTYPES:
            t = r[d]
            lines.append(
                f"| {r['problem']}, {r['round'] + 1} | {d} | {t['kept_step']} | "
                f"{t['step_divergence'][0]:.6f} → {t['loss_after']:.6f} | "
                f"{r['fp32_div_before']:.6f} → {t['fp32_div_after']:.6f} | "
                f"{math.exp(log_mean_exp(t['d_pass'])):.2f}x | {t['train_s']:.0f} |"
            )
    cos = ", ".join(f"{r['problem']} r{r['round'] + 1}: {r['grad_cosine']:.3f}" for r in rows)
    return "\n".join(lines) + f"\n\nFirst-step gradient cosine, bf16 vs fp32: {cos}.\n"


def header(host: str, model: str, set_name: str) -> str:
    return (f"One SDPO round trained in bf16 and in fp32 on the same CPU ({host.rsplit(', ', 1)[0]}), "
            f"model `{model}`, set `{set_name}`, default options, both adapters then scored in fp32 "
            f"(`python -m bench.dtype_check`).\n\n")


def main() -> None:  # pragma: no cover - needs the model; exercised by running it
    from bench.sweep import add_round_args

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_round_args(ap)
    ap.add_argument("--out", type=Path, default=Path("bench/results/dtype_check.jsonl"))
    ap.add_argument("--table", type=Path, default=Path("bench/results/dtype_check.md"))
    ap.add_argument("--report", action="store_true", help="only rewrite --table from the rows in --out")
    args = ap.parse_args()
    if args.report:
        rows = [json.loads(x) for x in args.out.read_text().splitlines() if x.strip()]
        args.table.write_text(header(rows[0]["host"], rows[0]["model"], args.set) + table(rows))
        print(args.table.read_text())
        return

    import torch
    from rich.console import Console

    from adapters.lifecycle import AdapterPool
    from adapters.trainer import DistillSample, SDPOTrainer
    from bench.host import host_label
    from bench.sets import load_set
    from bench.sweep import build_rounds
    from service import prompts
    from service.schemas import SolveRequest
    from service.settings import get_settings
    from service.wiring import build_solver_deps, load_model

    console = Console(stderr=True)
    settings = get_settings()
    deps = build_solver_deps(settings.model_copy(update={"dtype": "float32"}))  # fp32 + the sampling engine
    lm16 = load_model(settings.model_copy(update={"dtype": "bfloat16"}))
    pool16 = AdapterPool(lm16.model)
    trainers = {"float32": deps.trainer, "bfloat16": SDPOTrainer(pool16, lm16.device)}
    data = build_rounds(deps, load_set(args.set), pool=args.pool, rounds=args.rounds, round_n=args.round_n,
                        refs=args.refs, temperature=args.temperature, max_new_tokens=args.max_new_tokens,
                        seed=args.seed, set_name=args.set, console=console)
    tok, tr32 = deps.tokenizer, deps.trainer
    rows: list[dict[str, Any]] = []
    for ri in range(args.rounds):
        for name, (bp, pid, refs, rounds) in data.items():
            if ri >= len(rounds):
                continue
            req: SolveRequest = bp.problem
            cfg = req.sdpo
            samples = [DistillSample(pid, prompts.teacher_prompt(tok, req.problem, r["feedback"]), r["tokens"])
                       for r in rounds[ri]]
            ref_toks = [r["tokens"] for r in refs]
            base_refs = tr32.sequence_logprobs(None, pid, ref_toks)
            row: dict[str, Any] = {"problem": name, "round": ri, "model": deps.model_name, "host": host_label(),
                                   "refs": len(refs), "sdpo": req.sdpo.model_dump(), "date": time.strftime("%Y-%m-%d")}
            grads, trained = {}, {}
            for d in DTYPES:
                tr = trainers[d]
                a = tr.pool.create("dtype-check", req.sdpo.lora, seed=args.seed)
                # first-step gradient, measured apart from train_round (which does not expose it)
                packed = tr._pack(samples)
                teacher = tr.teacher_cache(a, samples, cfg)
                tr._pass(a, samples, packed, teacher, None, cfg, backward=True)
                grads[d] = [p.grad.detach().float().clone() for p in tr.pool.parameters(a).values()]
                for p in tr.pool.parameters(a).values():
                    p.grad = None
                t = time.monotonic()
                rep = tr.train_round(a, samples, cfg)
                trained[d] = {k: v.detach().float().clone() for k, v in tr.pool.weights(a).items()}
                row[d] = {"kept_step": rep.kept_step, "backtracks": rep.backtracks, "collapsed": rep.collapsed,
                          "step_divergence": rep.step_divergence, "loss_after": rep.loss_after,
                          "train_s": round(time.monotonic() - t, 1)}
                tr.pool.delete(a)
            row["grad_cosine"] = cosine(grads["bfloat16"], grads["float32"])
            # score both trained adapters on the fp32 model, against the start-of-round teacher
            a = tr32.pool.create("dtype-check", req.sdpo.lora, seed=args.seed)
            packed = tr32._pack(samples)
            teacher = tr32.teacher_cache(a, samples, cfg)
            with torch.no_grad():
                div0, old = tr32._pass(a, samples, packed, teacher, None, cfg, backward=False)
                row["fp32_div_before"] = div0
                for d in DTYPES:
                    tr32.pool.load_weights(a, trained[d])
                    row[d]["fp32_div_after"], _ = tr32._pass(a, samples, packed, teacher, old, cfg, backward=False)
                    row[d]["d_pass"] = [x - b for x, b in zip(tr32.sequence_logprobs(a, pid, ref_toks), base_refs)]
            tr32.pool.delete(a)
            rows.append(row)
            args.out.parent.mkdir(parents=True, exist_ok=True)
            with args.out.open("a") as f:
                f.write(json.dumps(row) + "\n")
            console.print(table([row]))
    md = header(host_label(), deps.model_name, args.set) + table(rows)
    args.table.write_text(md)
    console.print(md)


if __name__ == "__main__":
    main()
