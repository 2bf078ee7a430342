"""Could llama.cpp score the SDPO teacher instead of a torch forward pass? Speed and fidelity.

    python -m bench.teacher_scoring                       # default model, match_parens, 4 attempts
    python -m bench.teacher_scoring --problem examples/lcm.yaml --n 8

One round of `--n` attempts is sampled and verified; each failure becomes a distillation
sample (the teacher sees the question and the verifier's feedback, as in a real round). The
teacher's log-probabilities at the response positions are then computed two ways:

- torch: `SDPOTrainer.teacher_cache` (what a round runs now: the body in the trainer's dtype,
  the output layer in fp32);
- llama.cpp: the same token sequences decoded by the engine's Q4_K_M GGUF with logits kept at
  the response positions (the teacher's LoRA is zero here, as in a job's first round).

It reports the seconds of each, and two divergences per response token over the full
vocabulary: KL(torch teacher || llama.cpp teacher), the error the quantised teacher would add,
and KL(student || teacher) in torch, the signal SDPO distils. Scoring through llama.cpp is only
worth it if it is faster *and* its error is small next to the signal. A JSON row is appended
to bench/results/teacher_scoring.jsonl.
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
    ap.add_argument("--problem", type=Path, default=Path("examples/match_parens.yaml"))
    ap.add_argument("--n", type=int, default=4)
    ap.add_argument("--max-new-tokens", type=int, default=256)
    ap.add_argument("--seed", type=int, default=5)
    ap.add_argument("--out", type=Path, default=Path("bench/results/teacher_scoring.jsonl"))
    args = ap.parse_args()
    os.environ.setdefault("TTA_ENGINE", "llamacpp")

    import numpy as np
    import torch
    import torch.nn.functional as F
    from rich.console import Console

    from adapters.trainer import DistillSample
    from service import prompts
    from service.engines.base import SamplingParams
    from service.problem_file import load_problem_file
    from service.settings import get_settings
    from service.wiring import build_solver_deps

    console = Console()
    deps = build_solver_deps(get_settings())
    eng = deps.engine
    if eng.name != "llamacpp":
        raise SystemExit("needs the llama.cpp engine (a GGUF model and llama-cpp-python)")
    pf = load_problem_file(args.problem)
    q = pf.problem
    prompt = prompts.student_prompt(deps.tokenizer, q)
    outs = eng.generate([prompt], None, SamplingParams(n=args.n, temperature=1.0, top_p=1.0,
                                                       max_new_tokens=args.max_new_tokens, seed=args.seed))[0]
    vs = deps.verify(pf.verifier, [o.text for o in outs], [o.finish_reason == "length" for o in outs])
    samples = [
        DistillSample(prompt, prompts.teacher_prompt(deps.tokenizer, q, v.feedback), o.token_ids)
        for o, v in zip(outs, vs) if v.verdict != "pass" and o.token_ids
    ]
    if not samples:
        raise SystemExit("every attempt passed: nothing to distil; try another --seed")
    n_tok = sum(len(s.response) for s in samples)
    console.print(f"{len(samples)} failed attempts, {n_tok} response tokens, teacher contexts "
                  f"{[len(s.teacher_prompt) + len(s.response) for s in samples]} tokens")

    trainer = deps.trainer
    adapter = deps.pool.create("scoring", pf.sdpo.lora, seed=1)  # B = 0: the base model's outputs
    cfg = pf.sdpo
    t = time.perf_counter()
    h_t, lse_t = trainer.teacher_cache(adapter, samples, cfg)
    torch_s = time.perf_counter() - t

    # llama.cpp: one sequence at a time, logits only where a response token is predicted.
    ll = eng.ll
    t = time.perf_counter()
    llama_rows: list[np.ndarray] = []
    for s in samples:
        seq = s.teacher_prompt + s.response
        eng._ensure_ctx(len(seq) + 1)
        ll.llama_memory_clear(eng.mem, True)
        first = len(s.teacher_prompt) - 1  # the position that predicts response[0]
        want = [1 if first <= i < first + len(s.response) else 0 for i in range(len(seq))]
        for c in range(0, len(seq), eng.n_batch):
            chunk = seq[c : c + eng.n_batch]
            eng._decode(chunk, range(c, c + len(chunk)), [0] * len(chunk), want[c : c + len(chunk)])
            # logits of this batch are readable by batch index until the next decode
            for j in range(len(chunk)):
                if want[c + j]:
                    llama_rows.append(eng._logits(j))
    llama_s = time.perf_counter() - t
    ll.llama_memory_clear(eng.mem, True)

    kl_quant, kl_signal, agree = [], [], []
    with torch.no_grad():
        deps.pool.activate(adapter)
        off = 0
        for s in samples:
            h_s = trainer._hidden([s.student_prompt], [s.response]).float()
            for c0 in range(0, len(s.response), 128):
                c1 = min(c0 + 128, len(s.response))
                t_log = trainer._logits(h_t[off + c0 : off + c1]) - lse_t[off + c0 : off + c1, None]
                s_log = F.log_softmax(trainer._logits(h_s[c0:c1]), -1)
                l_log = F.log_softmax(torch.from_numpy(np.stack(llama_rows[off + c0 : off + c1])).float(), -1)
                kl_quant.append((t_log.exp() * (t_log - l_log)).sum(-1))
                kl_signal.append((s_log.exp() * (s_log - t_log)).sum(-1))
                agree.append((t_log.argmax(-1) == l_log.argmax(-1)).float())
            off += len(s.response)
    kq, ks, ag = torch.cat(kl_quant), torch.cat(kl_signal), torch.cat(agree)
    row = {
        "model": deps.model_name, "problem": args.problem.stem, "attempts": len(samples), "response_tokens": n_tok,
        "teacher_tokens": sum(len(s.teacher_prompt) + len(s.response) for s in samples),
        "torch_s": round(torch_s, 2), "torch_dtype": str(next(deps.pool.base.parameters()).dtype),
        "llamacpp_s": round(llama_s, 2), "speedup": round(torch_s / llama_s, 2),
        "kl_torch_vs_llamacpp_teacher": {"mean": float(kq.mean()), "p90": float(kq.quantile(0.9))},
        "kl_student_vs_teacher": {"mean": float(ks.mean()), "p90": float(ks.quantile(0.9))},
        "argmax_agreement": float(ag.mean()), "threads": eng.n_threads, "date": time.strftime("%Y-%m-%d"),
    }
    console.print_json(json.dumps(row))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with args.out.open("a") as f:
        f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
