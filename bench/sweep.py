"""Tune SDPO on a dev split: how much does one round of SDPO raise the probability of passing?

    python -m bench.sweep --set humaneval-edge-dev --pool 48 --rounds 2 \\
        --config default --config lr=3e-4 --config alpha=1.0 --config lora.targets=q_proj+v_proj

Why not tune on discovery@k directly: a discovery run answers "solved within K or not", one
bit per (problem, seed), and at these base rates (5-30%) telling two settings apart needs
hundreds of runs of minutes each. This measures the quantity discovery is made of, with far
less noise, and spends the compute on training (the part the settings change), not sampling:

1. Per problem, `--pool` attempts are sampled once from the base model (bench sampling: T,
   max tokens) and verified; cached under bench/runs/sweep-*/pool.jsonl and reused.
2. The passing attempts are the references (up to `--refs`); the failures are split into
   `--rounds` disjoint rounds of `--round-n`: each is a first round in which every attempt
   failed, which is the state SDPO trains in when discovery is still open.
3. For each config and round: a fresh LoRA, one `train_round` on that round's failures
   exactly as the solver builds it (teacher = the model shown each failure's feedback), then
   the sequence log-probability of every reference and failure under the adapter, minus the
   base model's.

Reported per config (mean over rounds, 95% bootstrap over rounds and references):
- `pass_gain`: log of mean_ref exp(logp_adapter(ref) - logp_base(ref)), an importance-sampling
  estimate of log(P_adapter(pass) / P_base(pass)) restricted to the passing programs the base
  model samples (a lower bound: passes the base model never writes are not counted). exp of it
  is the factor by which one attempt's pass probability moved: > 1 means fewer attempts.
- `dlogp_pass`, `dlogp_fail_trained`, `dlogp_fail_heldout`: mean change of per-sequence
  log-probability of references, of the round's own failures and of failures from other rounds.
- `steps kept/round`: how many of the round's updates the trainer's guard kept (mean over
  rounds); 0 means the round trained nothing and the adapter is the base model's.

What one round cannot show: the EMA teacher (its rate only acts from round two on) and what
many small steps add up to (the published gains come after tens of steps). `--chain` trains a
config's rounds one after another on one adapter, as a discovery run does, and measures after
each; its table has one line per config and depth ("after 3 round(s)"), and its held-out
failures are the rounds not yet trained on:

    python -m bench.sweep --set humaneval-hard-dev --pool 64 --rounds 3 --round-n 16 --chain \
        --config preset=paper,lr=1e-5 --config preset=paper,lr=1e-4
Rows go to `--out` (JSONL, one per config x round) and the table to `--table` (markdown).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

RUNS = Path(__file__).resolve().parent / "runs"


def parse_config(spec: str) -> dict[str, Any]:
    """'default' -> {}; 'lr=3e-4,steps=8,lora.targets=q_proj+v_proj' -> nested SdpoOptions overrides.
    Values are JSON where they parse (numbers, true/false, null), else strings; `a+b` is a list."""
    out: dict[str, Any] = {}
    if spec in ("", "default"):
        return out
    for part in spec.split(","):
        key, sep, raw = part.partition("=")
        if not sep:
            raise ValueError(f"config {spec!r}: {part!r} is not key=value")
        try:
            value: Any = json.loads(raw)
        except json.JSONDecodeError:
            value = raw.split("+") if "+" in raw or key.endswith("targets") else raw
        node = out
        *parents, leaf = key.strip().split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return out


def log_mean_exp(xs: list[float]) -> float:
    m = max(xs)
    return m + math.log(sum(math.exp(x - m) for x in xs) / len(xs))


def summarise(rows: list[dict[str, Any]], reps: int = 1000, seed: int = 0) -> dict[str, Any]:
    """Mean over rounds of each metric, with a percentile bootstrap that resamples rounds and,
    within each, references (the noisy part of pass_gain)."""
    rng = random.Random(seed)

    def stats(draw_rows: list[dict[str, Any]], resample_refs: bool) -> dict[str, float]:
        out: dict[str, list[float]] = {"pass_gain": [], "dlogp_pass": [], "dlogp_fail_trained": [], "dlogp_fail_heldout": []}
        for r in draw_rows:
            d = r["d_pass"]
            if resample_refs:
                d = [rng.choice(d) for _ in d]
            out["pass_gain"].append(log_mean_exp(d))
            out["dlogp_pass"].append(sum(d) / len(d))
            out["dlogp_fail_trained"].append(r["dlogp_fail_trained"])
            if r["dlogp_fail_heldout"] is not None:
                out["dlogp_fail_heldout"].append(r["dlogp_fail_heldout"])
        return {k: (sum(v) / len(v) if v else math.nan) for k, v in out.items()}

    point = stats(rows, False)
    boots = [stats([rng.choice(rows) for _ in rows], True) for _ in range(reps)]
    res: dict[str, Any] = {}
    for k, v in point.items():
        vals = sorted(b[k] for b in boots if not math.isnan(b[k]))
        lo, hi = (vals[int(0.025 * len(vals))], vals[int(0.975 * len(vals)) - 1]) if vals else (math.nan, math.nan)
        res[k] = {"mean": v, "lo": lo, "hi": hi}
    res["train_s"] = sum(r["train_s"] for r in rows) / len(rows)
    # with the token-level guard a round may keep no step at all (factor exactly 1.00x): say how often
    kept = [r["kept_step"] for r in rows if r.get("kept_step") is not None]
    res["steps_kept"] = sum(kept) / len(kept) if kept else math.nan
    res["rounds"] = len(rows)
    return res


def markdown(table: list[tuple[str, dict[str, Any]]], header: str) -> str:
    def ci(m: dict[str, float], exp: bool = False) -> str:
        f = (lambda x: f"{math.exp(x):.2f}x") if exp else (lambda x: f"{x:+.2f}")
        return f"{f(m['mean'])} ({f(m['lo'])}–{f(m['hi'])})"

    lines = [header, "",
             "| config | pass prob. factor (95% CI) | Δ log p pass | Δ log p fail (trained) | Δ log p fail (held out) | steps kept/round | train s/round |",
             "|---|---|---|---|---|---|---|"]
    for name, s in table:
        kept = "–" if math.isnan(s.get("steps_kept", math.nan)) else f"{s['steps_kept']:.1f}"
        lines.append(f"| `{name}` | {ci(s['pass_gain'], exp=True)} | {ci(s['dlogp_pass'])} | "
                     f"{ci(s['dlogp_fail_trained'])} | {ci(s['dlogp_fail_heldout'])} | {kept} | {s['train_s']:.0f} |")
    return "\n".join(lines) + "\n"


def sweep_header(rows: list[dict[str, Any]]) -> str:
    r0 = rows[0]
    rounds = {p: len({r["round"] for r in rows if r["problem"] == p}) for p in dict.fromkeys(r["problem"] for r in rows)}
    what = (f"rounds of {r0['round_n']} failed attempts trained one after another on one adapter (`--chain`), "
            "measured after each" if r0.get("chained") else f"one round of {r0['round_n']} failed attempts per cell")
    return (f"SDPO sweep, model `{r0['model']}`, T={r0['temperature']:g}, {r0['max_new_tokens']} tokens: {what}; "
            "rounds per problem: "
            f"{', '.join(f'{p} {n}' for p, n in rounds.items())}; refs = passing base samples from a pool of "
            f"{r0['pool']} (`python -m bench.sweep`).")


def table_from_rows(rows: list[dict[str, Any]], header: str) -> str:
    """The markdown table of every config in `rows` (JSONL rows of --out), in first-seen order."""
    by: dict[str, list[dict[str, Any]]] = {}
    # a chain cut short is rerun whole, so its first rounds may be in --out twice: the last wins
    last = {(r["config"], r.get("problem"), r.get("round"), bool(r.get("chained"))): r for r in rows}
    for r in last.values():
        # a chained row measures the adapter after rounds 1..r+1: one line per config and depth
        key = f"{r['config']} · after {r['round'] + 1} round(s)" if r.get("chained") else r["config"]
        by.setdefault(key, []).append(r)
    return markdown([(c, summarise(rs)) for c, rs in by.items()], header)


def add_round_args(ap: argparse.ArgumentParser) -> None:
    """The options `build_rounds` takes: the set, its base pool and how it is split."""
    ap.add_argument("--set", default="humaneval-edge-dev")
    ap.add_argument("--pool", type=int, default=48, help="base attempts sampled per problem (cached)")
    ap.add_argument("--rounds", type=int, default=2, help="all-failed rounds per problem")
    ap.add_argument("--round-n", type=int, default=8)
    ap.add_argument("--refs", type=int, default=12, help="passing references per problem (at most)")
    ap.add_argument("--temperature", type=float, default=1.0)
    ap.add_argument("--max-new-tokens", type=int, default=384)
    ap.add_argument("--seed", type=int, default=0)


# Base attempts per generate call while pooling. Batching changes which draws a pool gets, not
# their distribution (each row has its own generator, seeded by the call's seed and the row), and
# llama.cpp's throughput at n=16 is 1.2-1.8x its n=8 throughput (bench/results/engine_speed_*.json).
POOL_BATCH = 16


def build_rounds(deps, problems, *, pool: int, rounds: int, round_n: int, refs: int, temperature: float,
                 max_new_tokens: int, seed: int, set_name: str, console) -> dict[str, tuple]:  # pragma: no cover - needs the model
    """Per problem, `pool` base attempts (sampled once, cached under bench/runs/sweep-*/pool.jsonl),
    split into passing references and `rounds` disjoint all-failed rounds of `round_n`.
    Returns {name: (bench problem, student prompt ids, references, rounds)}; a problem without
    a passing attempt or a full round is skipped with a message."""
    from bench.sets import set_slug
    from service import prompts
    from service.engines.base import SamplingParams

    tok = deps.tokenizer
    cache_dir = RUNS / f"sweep-{set_slug(set_name)}-{deps.model_name}-t{temperature:g}-m{max_new_tokens}"
    cache_dir.mkdir(parents=True, exist_ok=True)
    pool_file = cache_dir / "pool.jsonl"
    cached: dict[str, list[dict[str, Any]]] = {}
    if pool_file.exists():
        for line in pool_file.read_text().splitlines():
            rec = json.loads(line)
            cached.setdefault(rec["problem"], []).append(rec)

    data = {}
    rescored = False
    for bp in problems:
        ver = bp.problem.verifier
        prompt_ids = prompts.student_prompt(tok, bp.problem.problem)
        have = cached.setdefault(bp.name, [])  # the same list: a rescored pool is written back whole
        while len(have) < pool:
            k = min(POOL_BATCH, pool - len(have))
            t = time.monotonic()
            outs = deps.engine.generate([prompt_ids], None, SamplingParams(
                n=k, temperature=temperature, top_p=1.0, max_new_tokens=max_new_tokens,
                seed=5000 + seed + len(have)))[0]
            vs = deps.verify(ver, [o.text for o in outs], [o.finish_reason == "length" for o in outs])
            new = [{"problem": bp.name, "text": o.text, "tokens": o.token_ids, "verdict": v.verdict,
                    "feedback": v.feedback, "passed": v.passed, "total": v.total} for o, v in zip(outs, vs)]
            with pool_file.open("a") as f:
                f.writelines(json.dumps(r) + "\n" for r in new)
            have += new
            console.print(f"{bp.name}: pool {len(have)}/{pool} ({sum(r['verdict'] == 'pass' for r in have)} pass; "
                          f"{time.monotonic() - t:.0f} s)")
        have = have[:pool]
        unscored = [r for r in have if "passed" not in r]
        if unscored:  # pooled before attempts were scored per test case (sdpo.demonstration needs it)
            vs = deps.verify(ver, [r["text"] for r in unscored], [False] * len(unscored))
            for r, v in zip(unscored, vs):
                r["passed"], r["total"] = v.passed, v.total
            rescored = True
        passing = [r for r in have if r["verdict"] == "pass" and r["tokens"]][:refs]
        fails = [r for r in have if r["verdict"] == "fail" and r["tokens"]]
        rnds = [fails[i * round_n:(i + 1) * round_n] for i in range(rounds)]
        rnds = [r for r in rnds if len(r) == round_n]
        if not passing or not rnds:
            console.print(f"[yellow]{bp.name}: skipped ({len(passing)} passing, {len(fails)} failing in the pool)[/]")
            continue
        data[bp.name] = (bp, prompt_ids, passing, rnds)
    if rescored:
        with pool_file.open("w") as f:
            f.writelines(json.dumps(r) + "\n" for recs in cached.values() for r in recs)
    return data


def teacher_check(data, deps, args) -> None:  # pragma: no cover - needs the model
    """Is the teacher better than the student? SDPO pulls the student toward the model shown a
    failure's feedback; that helps only if that model puts more probability on passing programs.
    Per failure i of the first round: the teacher prompt T_i (question + feedback_i) vs the
    student prompt S, scored on every reference (passing program) and on failure i itself."""
    from service import prompts

    seq_logp, tok = deps.trainer.sequence_logprobs, deps.tokenizer
    for name, (bp, pid, refs, rounds) in data.items():
        q = bp.problem.problem
        ref_toks = [r["tokens"] for r in refs]
        s_refs = seq_logp(None, pid, ref_toks)
        d_pass, d_own = [], []
        for f in rounds[0]:
            tp = prompts.teacher_prompt(tok, q, f["feedback"])
            t_refs = seq_logp(None, tp, ref_toks)
            d_pass.append([a - b for a, b in zip(t_refs, s_refs)])
            d_own.append(seq_logp(None, tp, [f["tokens"]])[0] - seq_logp(None, pid, [f["tokens"]])[0])
        flat = [x for row in d_pass for x in row]
        n_tok = sum(len(t) for t in ref_toks) / len(ref_toks)
        row = {"problem": name, "model": deps.model_name, "refs": len(refs), "failures": len(rounds[0]),
               "teacher_minus_student_logp_pass": d_pass, "teacher_minus_student_logp_own_failure": d_own,
               "mean_pass": sum(flat) / len(flat), "pass_factor": math.exp(log_mean_exp(flat)),
               "mean_own_failure": sum(d_own) / len(d_own), "ref_tokens": n_tok,
               "date": time.strftime("%Y-%m-%d")}
        with args.teacher_check.open("a") as fh:
            fh.write(json.dumps(row) + "\n")
        print(f"{name}: teacher vs student on {len(refs)} passing programs: mean Δ log p {row['mean_pass']:+.2f} "
              f"(pass prob. factor x{row['pass_factor']:.2f}); on the failure it was shown: "
              f"{row['mean_own_failure']:+.2f}")


def main() -> None:  # pragma: no cover - needs the model; exercised by running it
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_round_args(ap)
    ap.add_argument("--config", action="append", default=None, help="SDPO overrides, e.g. lr=3e-4,steps=8 (repeatable)")
    ap.add_argument("--problems", default=None, help="comma-separated names: only these problems of the set")
    ap.add_argument("--out", type=Path, default=Path("bench/results/sdpo_sweep.jsonl"))
    ap.add_argument("--table", type=Path, default=Path("bench/results/sdpo_sweep.md"))
    ap.add_argument("--report", action="store_true", help="only rewrite --table from the rows in --out")
    ap.add_argument("--chain", action="store_true",
                    help="train each config's rounds one after another on one adapter (EMA teacher carried), "
                         "measuring after each: the factor over consecutive rounds, as a discovery run trains")
    ap.add_argument("--teacher-check", type=Path, default=None, metavar="JSONL",
                    help="no training: score references and failures under the teacher's prompts vs the "
                         "student's, append one row per problem to JSONL, and stop")
    args = ap.parse_args()
    if args.report:
        rows = [json.loads(x) for x in args.out.read_text().splitlines() if x.strip()]
        md = table_from_rows(rows, sweep_header(rows))
        args.table.write_text(md)
        print(md)
        return
    configs = args.config or ["default"]

    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    from adapters.trainer import DistillSample
    from bench.host import host_label
    from bench.sets import load_set
    from service import prompts
    from service.settings import get_settings
    from service.wiring import build_solver_deps

    console = Console(stderr=True)
    settings = get_settings()
    problems = load_set(args.set)
    if args.problems:
        keep = [x.strip() for x in args.problems.split(",")]
        problems = [bp for bp in problems if bp.name in keep]
        if not problems:
            raise SystemExit(f"--problems {args.problems!r}: none of them is in {args.set}")
    deps = build_solver_deps(settings)
    tok = deps.tokenizer
    data = build_rounds(deps, problems, pool=args.pool, rounds=args.rounds, round_n=args.round_n, refs=args.refs,
                        temperature=args.temperature, max_new_tokens=args.max_new_tokens, seed=args.seed,
                        set_name=args.set, console=console)

    seq_logp = deps.trainer.sequence_logprobs

    if args.teacher_check:
        teacher_check(data, deps, args)
        return

    from service.schemas import SdpoOptions

    console.print(f"{len(data)} problems, {len(configs)} configs; references (passing base samples): "
                  + ", ".join(f"{n}: {len(v[2])}" for n, v in data.items()))
    # Resume: a (config, problem, round) already in --out under the same pool is not trained again;
    # a chain is one unit (its rounds build on each other), rerun whole unless every round is in.
    same = dict(model=deps.model_name, temperature=args.temperature, max_new_tokens=args.max_new_tokens,
                pool=args.pool, round_n=args.round_n, chained=args.chain)
    old = [json.loads(x) for x in args.out.read_text().splitlines() if x.strip()] if args.out.exists() else []
    old = [r for r in old if all(r.get(k, False if k == "chained" else None) == v for k, v in same.items())]
    done = {(r["config"], r["problem"], r["round"]) for r in old}
    rows = [r for r in old if r["config"] in configs]
    if args.chain:
        todo = [(None, name, spec) for name in data for spec in configs
                if any((spec, name, ri) not in done for ri in range(len(data[name][3])))]
        rows = [r for r in rows if (r["config"], r["problem"]) not in {(sp, nm) for _, nm, sp in todo}]
    else:
        todo = [(ri, name, spec) for ri in range(args.rounds) for name in data for spec in configs
                if ri < len(data[name][3]) and (spec, name, ri) not in done]
    # the base model's log-probs, for the problems with cells still to run (a resumed sweep
    # whose problem is done spends no minutes on it)
    base_lp = {n: (seq_logp(None, pid, [r["tokens"] for r in refs]),
                   [seq_logp(None, pid, [r["tokens"] for r in rnd]) for rnd in rounds])
               for n, (_, pid, refs, rounds) in data.items() if any(nm == n for _, nm, _ in todo)}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    prog = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    TextColumn("ETA"), TimeRemainingColumn(), console=console)
    with prog:
        # round-major, then problem, then config: a sweep cut short has compared every config
        # on the same rounds
        task = prog.add_task("sweep", total=len(todo))
        if done:
            prog.console.print(f"resuming: {len(done)} (config, problem, round) cells already in {args.out}")
        for first, name, spec in todo:
            bp, pid, refs, rounds = data[name]
            over = parse_config(spec)
            # validated as given, not merged into a dump of the defaults: a preset fills only the
            # fields a config leaves out, and a dump would leave none out
            opts = SdpoOptions.model_validate(over)
            req = bp.problem.model_copy(update={"sdpo": opts})
            # one round from a fresh adapter, or (--chain) every round in turn on one adapter
            trained = range(len(rounds)) if first is None else [first]
            adapter = deps.pool.create("sweep", req.sdpo.lora, seed=args.seed)
            for ri in trained:
                prog.update(task, description=f"{spec} · {name} · round {ri + 1}")
                partials, advantages = prompts.round_signals(
                    opts, [r["text"] for r in rounds[ri]], [r["passed"] for r in rounds[ri]], [r["total"] for r in rounds[ri]])
                samples = [DistillSample(pid, prompts.teacher_prompt(tok, req.problem, r["feedback"], partial=pa),
                                         r["tokens"], advantage=av)
                           for r, pa, av in zip(rounds[ri], partials, advantages)]
                t = time.monotonic()
                rep = deps.trainer.train_round(adapter, samples, req.sdpo)
                train_s = time.monotonic() - t
                # held out: rounds not trained on (in a chain, the later ones); only this round
                # and those are scored: a chain's earlier rounds enter no figure, and scoring is
                # most of a cell's time on CPU
                unseen = [j for j in range(len(rounds)) if (j > ri if first is None else j != ri)]
                lp_refs = seq_logp(adapter, pid, [r["tokens"] for r in refs])
                lp_rounds = {j: seq_logp(adapter, pid, [r["tokens"] for r in rounds[j]]) for j in [ri, *unseen]}
                b_refs, b_rounds = base_lp[name]
                d_fail = [a - b for a, b in zip(lp_rounds[ri], b_rounds[ri])]
                held = [a - b for j in unseen for a, b in zip(lp_rounds[j], b_rounds[j])]
                row = {
                    "config": spec, "sdpo_overrides": over, "sdpo": opts.model_dump(), "problem": name, "round": ri,
                    "chained": args.chain, "model": deps.model_name, "engine": deps.engine.name, "refs": len(refs),
                    "d_pass": [a - b for a, b in zip(lp_refs, b_refs)],
                    "dlogp_fail_trained": sum(d_fail) / len(d_fail),
                    "dlogp_fail_heldout": sum(held) / len(held) if held else None,
                    "step_divergence": rep.step_divergence, "loss_after": rep.loss_after,
                    "kept_step": rep.kept_step, "backtracks": rep.backtracks, "collapsed": rep.collapsed,
                    "samples": rep.samples, "gate_margins": rep.gate_margins,
                    "case_scores": [r["passed"] / max(r["total"], 1) for r in rounds[ri]],
                    "train_s": round(train_s, 1), "temperature": args.temperature,
                    "max_new_tokens": args.max_new_tokens, "pool": args.pool, "round_n": args.round_n,
                    "host": host_label(), "date": time.strftime("%Y-%m-%d"),
                }
                rows.append(row)
                with args.out.open("a") as f:
                    f.write(json.dumps(row) + "\n")
                gain = log_mean_exp(row["d_pass"])
                prog.console.print(f"  {spec} · {name} r{ri + 1}{' (chained)' if args.chain else ''}: pass "
                                   f"x{math.exp(gain):.2f}, fail Δ{row['dlogp_fail_trained']:+.2f} (held-out "
                                   f"{row['dlogp_fail_heldout'] if held else float('nan'):+.2f}), "
                                   f"kept {rep.kept_step} steps, {rep.backtracks} backtracks, {train_s:.0f} s")
            deps.pool.delete(adapter)
            prog.advance(task)
    if not rows:
        return
    md = table_from_rows(rows, sweep_header(rows))
    console.print(md)
    args.table.write_text(md)


if __name__ == "__main__":
    main()
