"""Generation speed, transformers vs llama.cpp, and llama.cpp's adapter hand-off time.

    python -m bench.engine_speed                      # default model, 64 new tokens
    python -m bench.engine_speed --model tiny --max-new-tokens 32

One process, one prompt (examples' style coding question), T=1.0. For n = 1, 4, 8
completions per call it measures tokens/s (all completions' tokens / wall time) of
  - transformers (the reference engine, batch of n, the trainer's PeftModel, base),
  - llama.cpp base, n decoded as parallel sequences of one batch and one after another,
  - llama.cpp with a LoRA on the attention projections and on all seven linear layers.
Hand-off per adapter version: convert the PEFT weights to a GGUF adapter + load it
(`engine.handle`), then the first token of a round with it (prompt prefill included),
against the same first token without a version change. Prints a table and writes
bench/results/engine_speed.json. Both engines get the same threads (TTA_THREADS or all
cores); run it on an otherwise idle machine for numbers worth quoting.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

from bench.host import cpu_model, cpu_vector_level

os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

QUESTION = (
    "Write a Python function `merge_intervals(intervals)` that merges overlapping closed "
    "intervals given as a list of [start, end] pairs and returns them sorted. Explain your "
    "approach first, then give the code in a ```python block."
)
ATTN = ("q_proj", "k_proj", "v_proj", "o_proj")
ALL7 = ATTN + ("gate_proj", "up_proj", "down_proj")


def perturb(pool, adapter, scale: float, seed: int) -> None:
    """Training-like non-zero lora_B (a fresh LoRA is the identity and costs the same, but
    we want to be sure the adapter path is exercised)."""
    import torch

    g = torch.Generator().manual_seed(seed)
    with pool.lock, torch.no_grad():
        for n, p in pool.parameters(adapter).items():
            if "lora_B" in n:
                p.copy_(torch.randn(p.shape, generator=g) * scale)


def timed(engine, prompt, adapter, n, max_new, seed=0):
    from service.engines.base import SamplingParams

    t = time.perf_counter()
    out = engine.generate([prompt], adapter, SamplingParams(n=n, temperature=1.0, max_new_tokens=max_new, seed=seed))[0]
    s = time.perf_counter() - t
    toks = sum(len(c.token_ids) for c in out)
    return {"n": n, "tokens": toks, "seconds": round(s, 3), "tok_s": round(toks / s, 2)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="default")
    ap.add_argument("--ns", type=int, nargs="+", default=[1, 4, 8])
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--rank", type=int, default=8)
    ap.add_argument("--versions", type=int, default=5, help="adapter versions timed for the hand-off")
    ap.add_argument("--skip-transformers", action="store_true")
    ap.add_argument("--out", type=Path, default=Path("bench/results/engine_speed.json"))
    args = ap.parse_args()

    from adapters.lifecycle import AdapterPool
    from adapters.options import LoraOptions
    from service import prompts
    from service.engines.base import SamplingParams
    from service.engines.llamacpp import LlamaCppEngine
    from service.engines.transformers import TransformersEngine
    from service.settings import Settings
    from service.wiring import load_model

    settings = Settings(model=args.model, engine="transformers")
    t = time.perf_counter()
    lm = load_model(settings)
    tf_load = time.perf_counter() - t
    pool = AdapterPool(lm.model)
    t = time.perf_counter()
    llm = LlamaCppEngine(lm.resolved.gguf, pool, lm.tokenizer, n_threads=settings.threads)
    ll_load = time.perf_counter() - t
    prompt = prompts.render(lm.tokenizer, prompts.messages(QUESTION))
    rows: list[dict] = []

    def record(engine, adapter_label, mode, r):
        r = {"engine": engine, "adapter": adapter_label, "mode": mode, **r}
        rows.append(r)
        print(f"{engine:12} {adapter_label:10} {mode:10} n={r['n']:<2} {r['tokens']:5} tok "
              f"{r['seconds']:8.2f} s {r['tok_s']:7.2f} tok/s", flush=True)

    llm.generate([prompt], None, SamplingParams(n=1, max_new_tokens=4))  # warm-up
    if not args.skip_transformers:
        tf = TransformersEngine(pool, lm.tokenizer, lm.device, batch_size=max(args.ns))
        tf.generate([prompt], None, SamplingParams(n=1, max_new_tokens=4))
        for n in args.ns:
            record("transformers", "none", "batch", timed(tf, prompt, None, n, args.max_new_tokens))

    def llama_rows(adapter, label):
        for n in args.ns:
            modes = [True, False] if n > 1 else [True]
            for par in modes:
                llm.parallel = par
                record("llamacpp", label, "parallel" if par else "sequential",
                       timed(llm, prompt, adapter, n, args.max_new_tokens))
        llm.parallel = True

    llama_rows(None, "none")
    handoff = {}
    for label, targets in (("attention", ATTN), ("all-linear", ALL7)):
        a = pool.create(f"bench-{label}", LoraOptions(rank=args.rank, alpha=2 * args.rank, targets=targets))
        perturb(pool, a, 0.01, seed=0)
        llama_rows(a, label)
        convert, first, first_same = [], [], []
        one = SamplingParams(n=1, temperature=1.0, max_new_tokens=1)
        for v in range(args.versions):
            perturb(pool, a, 0.01, seed=v + 1)
            a.version += 1
            with pool.lock:
                t = time.perf_counter()
                llm.handle(a)
                convert.append(time.perf_counter() - t)
            t = time.perf_counter()
            llm.generate([prompt], a, one)
            first.append(time.perf_counter() - t)
            t = time.perf_counter()
            llm.generate([prompt], a, one)  # same version again: no hand-off
            first_same.append(time.perf_counter() - t)
        handoff[label] = {
            "convert_and_load_ms": round(1000 * statistics.median(convert), 1),
            "first_token_after_swap_ms": round(1000 * statistics.median(first), 1),
            "first_token_same_version_ms": round(1000 * statistics.median(first_same), 1),
            "versions": args.versions,
            "loaded_after": llm.loaded_adapters(),
        }
        print(f"hand-off {label}: {handoff[label]}", flush=True)
        pool.delete(a)

    def best(engine, label, n):
        c = [r["tok_s"] for r in rows if r["engine"] == engine and r["adapter"] == label and r["n"] == n]
        return max(c) if c else None

    summary = {}
    for n in args.ns:
        tf_s = best("transformers", "none", n)
        summary[f"n={n}"] = {
            "transformers": tf_s,
            "llamacpp": best("llamacpp", "none", n),
            "llamacpp_attention_lora": best("llamacpp", "attention", n),
            "llamacpp_all_linear_lora": best("llamacpp", "all-linear", n),
            "speedup_base": round(best("llamacpp", "none", n) / tf_s, 2) if tf_s else None,
        }
    result = {
        "model": lm.resolved.name,
        "gguf": lm.resolved.gguf.name,
        "max_new_tokens": args.max_new_tokens,
        "lora_rank": args.rank,
        "threads": llm.n_threads,
        "cpu": cpu_model(),
        "vector": cpu_vector_level(),  # llama.cpp's speed depends on it more than on the CPU's name
        "load_s": {"transformers": round(tf_load, 1), "llamacpp": round(ll_load, 2)},
        "rows": rows,
        "summary": summary,
        "handoff": handoff,
    }
    print("\nbest tok/s per engine (parallel or sequential, whichever was faster):")
    print(f"{'n':>4} {'transformers':>13} {'llama.cpp':>10} {'+attn LoRA':>11} {'+all7 LoRA':>11} {'speedup':>8}")
    for k, v in summary.items():
        print(f"{k:>4} {v['transformers'] or '-':>13} {v['llamacpp']:>10} {v['llamacpp_attention_lora']:>11} "
              f"{v['llamacpp_all_linear_lora']:>11} {v['speedup_base'] or '-':>8}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
