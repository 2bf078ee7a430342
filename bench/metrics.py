"""Discovery curves of the benchmark: pure functions of the checkpointed run records.

A *run* is one (problem, strategy, seed) solve with budget K. Its *cost to solve* on an axis:

  attempts  solved_attempt + 1 (solved at 0-based attempt i counts for every k > i)
  seconds   generate + verify seconds of all rounds before the solving attempt's round, plus its
            round's generate + verify prorated by position ((j+1)/n for the j-th of n attempts),
            plus the SDPO training between those rounds. Model loading is not counted.
  tokens    generated tokens of attempts 0..i (prompt tokens and training tokens not counted)

and infinity when unsolved. discovery(x) = mean over problems of the fraction of that problem's
seeds whose cost <= x. An unsolved run stops counting where its budget ran out, so past the
smallest spent cost of an unsolved run (`valid_up_to`) a curve is a lower bound; on the attempts
axis that is K for every strategy, on seconds and tokens it differs per strategy.

Intervals are percentile bootstrap 95% intervals: resample problems with replacement, then
seeds with replacement within each drawn problem; the draws are shared by all strategies
(paired), so ratio intervals come from the same replicates. The rng seed is fixed.

Comparisons use only (problem, seed) pairs finished by every strategy compared, and ignore
runs whose status is `failed` (an internal error, not a verdict on the problem).
"""

from __future__ import annotations

import math
import re
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

import numpy as np

from bench import pass_at_k

AXES = ("attempts", "seconds", "tokens")
# 22% and 50%: the levels the published test-time comparison reports; 75% for easier sets
TARGETS = (0.22, 0.5, 0.75)
BASELINE = "sdpo"


# ---- one run ------------------------------------------------------------------------------------


def attempt_cumulative(rec: dict[str, Any]) -> tuple[list[float], list[float]]:
    """Per attempt: cumulative seconds and cumulative generated tokens up to and including it."""
    rounds = rec.get("rounds") or []
    attempts = rec.get("attempts") or []
    per_round: dict[int, list[int]] = defaultdict(list)
    for i, a in enumerate(attempts):
        per_round[a["round"]].append(i)
    secs = [0.0] * len(attempts)
    clock = 0.0
    for r, rd in enumerate(rounds):
        idx = per_round.get(rd.get("round", r), [])
        sample = rd.get("generate_s", 0.0) + rd.get("verify_s", 0.0)
        for j, i in enumerate(idx):
            secs[i] = clock + sample * (j + 1) / len(idx)
        clock += sample + rd.get("train_s", 0.0)
    toks = np.cumsum([a.get("tokens", 0) for a in attempts]).astype(float).tolist() if attempts else []
    return secs, toks


def solve_cost(rec: dict[str, Any], axis: str) -> float:
    """The run's cost to solve on `axis`; inf when unsolved."""
    i = rec.get("solved_attempt")
    if i is None:
        return math.inf
    if axis == "attempts":
        return float(i + 1)
    secs, toks = attempt_cumulative(rec)
    return (secs if axis == "seconds" else toks)[i]


def spent_cost(rec: dict[str, Any], axis: str) -> float:
    """What the run spent in all on `axis` (its whole budget when unsolved)."""
    if axis == "attempts":
        return float(rec.get("attempts_used", len(rec.get("attempts") or [])))
    if axis == "tokens":
        return float(sum(a.get("tokens", 0) for a in rec.get("attempts") or []))
    return float(sum(r.get("generate_s", 0.0) + r.get("verify_s", 0.0) + r.get("train_s", 0.0)
                     for r in rec.get("rounds") or []))


# ---- curves -------------------------------------------------------------------------------------


def discovery(costs: Sequence[Sequence[float]], xs: Sequence[float]) -> np.ndarray:
    """discovery(x) for each x: mean over problems of the fraction of seeds with cost <= x.
    `costs[p]` holds one cost per seed of problem p (inf = unsolved)."""
    xs = np.asarray(xs, dtype=float)
    if not costs:
        return np.zeros_like(xs)
    per = [np.mean(np.asarray(c, dtype=float)[:, None] <= xs[None, :], axis=0) for c in costs]
    return np.mean(per, axis=0)


def reach(xs: Sequence[float], ys: Sequence[float], target: float, interpolate: bool = True) -> float | None:
    """The smallest x where the curve reaches `target`; None if it never does. With
    `interpolate`, linear between the last point below and the first at/above it, the curve
    starting at (0, 0); without, that first grid point itself (exact for a step function)."""
    xs, ys = np.asarray(xs, dtype=float), np.asarray(ys, dtype=float)
    hit = np.nonzero(ys >= target - 1e-12)[0]
    if not len(hit):
        return None
    i = int(hit[0])
    if not interpolate:
        return float(xs[i])
    x0, y0 = (0.0, 0.0) if i == 0 else (xs[i - 1], ys[i - 1])
    if ys[i] <= y0:
        return float(xs[i])
    return float(x0 + (target - y0) * (xs[i] - x0) / (ys[i] - y0))


def _reach_rows(xs: np.ndarray, ys: np.ndarray, target: float, interpolate: bool) -> np.ndarray:
    """`reach` for each row of ys [B, X]; NaN where never reached."""
    ok = ys >= target - 1e-12
    any_ = ok.any(axis=1)
    i = ok.argmax(axis=1)
    out = xs[i].astype(float)
    if interpolate:
        prev_x = np.where(i > 0, xs[np.maximum(i - 1, 0)], 0.0)
        prev_y = np.where(i > 0, ys[np.arange(len(ys)), np.maximum(i - 1, 0)], 0.0)
        cur_y = ys[np.arange(len(ys)), i]
        slope_ok = cur_y > prev_y
        interp = prev_x + (target - prev_y) * (out - prev_x) / np.where(slope_ok, cur_y - prev_y, 1.0)
        out = np.where(slope_ok, interp, out)
    return np.where(any_, out, np.nan)


def ratio(num: float | None, den: float | None) -> float | None:
    if num is None or den is None or den == 0:
        return None
    return num / den


# ---- the bootstrap ------------------------------------------------------------------------------


@dataclass
class Paired:
    """Costs of the runs that every strategy finished: per strategy, a [P, S] matrix (inf =
    unsolved, NaN = no such seed for that problem), problems and seed counts shared."""

    problems: list[str]
    seeds: list[list[int]]
    strategies: list[str]
    records: dict[str, list[list[dict[str, Any]]]]  # strategy -> [problem][seed] -> record
    excluded: dict[str, int] = field(default_factory=dict)

    @property
    def n_seeds(self) -> np.ndarray:
        return np.array([len(s) for s in self.seeds], dtype=int)

    def costs(self, strategy: str, axis: str) -> np.ndarray:
        smax = max((len(s) for s in self.seeds), default=0)
        out = np.full((len(self.problems), smax), np.nan)
        for p, runs in enumerate(self.records[strategy]):
            for s, rec in enumerate(runs):
                out[p, s] = solve_cost(rec, axis)
        return out


def latest_any(records: Iterable[dict[str, Any]]) -> dict[tuple[str, str, int], dict[str, Any]]:
    """The last record of each (problem, strategy, seed)."""
    return {(r["problem"], r["strategy"], int(r["seed"])): r for r in records}


def latest(records: Iterable[dict[str, Any]]) -> dict[tuple[str, str, int], dict[str, Any]]:
    """The last record of each (problem, strategy, seed), runs whose last record failed dropped."""
    return {k: r for k, r in latest_any(records).items() if r.get("status") != "failed"}


def pair_up(records: Iterable[dict[str, Any]], strategies: Sequence[str] | None = None) -> Paired:
    """Keep the (problem, seed) pairs that every strategy finished; count what was left out."""
    runs = latest(records)
    strategies = list(strategies or sorted({k[1] for k in runs}, key=_strategy_order))
    by_pair: dict[tuple[str, int], dict[str, dict[str, Any]]] = defaultdict(dict)
    for (p, st, s), r in runs.items():
        if st in strategies:
            by_pair[(p, s)][st] = r
    problems: dict[str, list[int]] = {}
    excluded: dict[str, int] = defaultdict(int)
    for (p, s), got in by_pair.items():
        if all(st in got for st in strategies):
            problems.setdefault(p, []).append(s)
        else:
            for st in got:
                excluded[st] += 1
    names = sorted(problems)
    seeds = [sorted(problems[p]) for p in names]
    recs = {st: [[by_pair[(p, s)][st] for s in ss] for p, ss in zip(names, seeds)] for st in strategies}
    return Paired(names, seeds, strategies, recs, dict(excluded))


def _strategy_order(s: str) -> tuple[int, str]:
    order = {"sdpo": 0, "best_of_k": 1, "multi_turn": 2}
    return (order.get(s, 9), s)


def _weighted_curves(costs: np.ndarray, xs: np.ndarray, pi: np.ndarray, si: np.ndarray,
                     mask: np.ndarray, n_seeds: np.ndarray) -> np.ndarray:
    """Discovery curves [B, X] of bootstrap replicates given problem draws pi [B, P], seed draws
    si [B, P, S] and their mask (which seed slots exist for the drawn problem)."""
    b, p = pi.shape
    c = costs[pi[..., None], si]  # [B, P, S]
    w = mask / (n_seeds[pi][..., None] * p)
    # first grid index with xs >= cost: the run counts there and at every later x
    idx = np.searchsorted(xs, np.where(np.isnan(c), np.inf, c), side="left")  # X when never
    flat = (np.arange(b)[:, None, None] * (len(xs) + 1) + idx).ravel()
    hist = np.bincount(flat, weights=np.where(mask, w, 0.0).ravel(), minlength=b * (len(xs) + 1))
    return np.cumsum(hist.reshape(b, len(xs) + 1), axis=1)[:, : len(xs)]


def bootstrap(paired: Paired, axis: str, xs: np.ndarray, n_boot: int = 1000, seed: int = 0,
              chunk: int = 200, estimated: list[pass_at_k.BaseSamples] | None = None) -> dict[str, np.ndarray]:
    """Bootstrap replicates [B, X] of each strategy's discovery curve (paired draws); with
    `estimated` (one per problem, in paired order) also best-of-k's from the base samples,
    on the same problem draws and from a generator of its own, so that the runs' replicates
    are the same with or without it."""
    rng = np.random.default_rng(seed)
    est_rng = np.random.default_rng([seed, 1])
    P = len(paired.problems)
    n_seeds = paired.n_seeds
    smax = int(n_seeds.max()) if P else 0
    costs = {st: paired.costs(st, axis) for st in paired.strategies}
    out = {st: [] for st in paired.strategies}
    for start in range(0, n_boot, chunk):
        b = min(chunk, n_boot - start)
        pi = rng.integers(0, P, size=(b, P))
        s_of = n_seeds[pi][..., None]
        si = np.minimum((rng.random((b, P, smax)) * s_of).astype(int), smax - 1)
        mask = np.arange(smax)[None, None, :] < s_of
        for st in paired.strategies:
            out[st].append(_weighted_curves(costs[st], xs, pi, si, mask, n_seeds))
        if estimated is not None:
            out.setdefault(pass_at_k.NAME, []).append(pass_at_k.replicate_curves(estimated, axis, xs, pi, est_rng))
    return {st: np.concatenate(v, axis=0) for st, v in out.items()}


# ---- the summary --------------------------------------------------------------------------------


def axis_grid(paired: Paired, axis: str, k: int, estimated: list[pass_at_k.BaseSamples] | None = None) -> np.ndarray:
    """x values of a curve: 1..K attempts; on seconds/tokens every solve cost (where the step
    curves jump) plus 0 and the largest spent cost, and the estimated curve's steps below it."""
    if axis == "attempts":
        return np.arange(1, k + 1, dtype=float)
    vals = {0.0}
    top = 0.0
    for st in paired.strategies:
        for runs in paired.records[st]:
            for rec in runs:
                c = solve_cost(rec, axis)
                if math.isfinite(c):
                    vals.add(c)
                top = max(top, spent_cost(rec, axis))
    vals.add(top)
    if estimated:
        vals.update(x for x in pass_at_k.jump_points(estimated, axis) if x <= top)
    return np.array(sorted(vals), dtype=float)


def _opt(x: float) -> float | None:
    return None if x is None or not math.isfinite(x) else float(x)


def _ci(samples: np.ndarray) -> list[float | None]:
    """95% percentile interval of bootstrap replicates that may be +inf (a replicate that never
    reaches the target costs more than any budget; a ratio whose other strategy never reaches
    is unbounded). Infinite replicates are kept, not dropped: dropping them would cut exactly
    the draws least favourable to a cost, and most favourable to sdpo in a ratio. NaN
    replicates (a ratio where neither strategy reaches) are undefined and left out. An
    infinite bound is null in JSON (the report prints ∞). Order statistics ("lower" /
    "higher") rather than interpolation, which has no value between a finite number and inf."""
    s = samples[~np.isnan(samples)]
    if not len(s):
        return [None, None]
    lo = float(np.percentile(s, 2.5, method="lower"))
    hi = float(np.percentile(s, 97.5, method="higher"))
    return [_opt(lo), _opt(hi)]


def phase_split(paired: Paired) -> dict[str, dict[str, float]]:
    """Seconds per phase per strategy over all compared runs: totals, per-run means, fractions."""
    out = {}
    for st in paired.strategies:
        runs = [r for rs in paired.records[st] for r in rs]
        tot = {ph: sum(rd.get(f"{ph}_s", 0.0) for r in runs for rd in r.get("rounds") or [])
               for ph in ("generate", "verify", "train")}
        all_s = sum(tot.values())
        out[st] = {
            **{f"{ph}_s": round(v, 3) for ph, v in tot.items()},
            **{f"{ph}_frac": (v / all_s if all_s else 0.0) for ph, v in tot.items()},
            "per_run_s": round(all_s / len(runs), 3) if runs else 0.0,
            "runs": len(runs),
        }
    return out


def training_stats(paired: Paired) -> dict[str, dict[str, int]]:
    """Per strategy that trains: failed rounds followed by training, and how many of them kept
    no update (the adapter stayed as it was, so the next round samples as best-of-k does)."""
    out = {}
    for st in paired.strategies:
        trains = [rd["train"] for rs in paired.records[st] for r in rs for rd in r.get("rounds") or []
                  if rd.get("train")]
        if trains:
            out[st] = {"rounds_trained": len(trains),
                       "rounds_no_step_kept": sum(t.get("kept_step", 0) == 0 for t in trains),
                       "steps_kept": sum(t.get("kept_step", 0) for t in trains)}
    return out


def hosts(paired: Paired) -> dict[str, dict[str, int]]:
    """Per strategy, how many compared runs each machine timed ('unrecorded': records written
    before runs carried their host)."""
    out: dict[str, dict[str, int]] = {}
    for st in paired.strategies:
        counts: dict[str, int] = defaultdict(int)
        for rs in paired.records[st]:
            for r in rs:
                counts[r.get("host") or "unrecorded"] += 1
        out[st] = dict(sorted(counts.items()))
    return out


def summarize(records: Iterable[dict[str, Any]], k: int, strategies: Sequence[str] | None = None,
              n_boot: int = 1000, seed: int = 0, baseline: str = BASELINE,
              targets: Sequence[float] = TARGETS,
              base_samples: dict[str, pass_at_k.BaseSamples] | None = None) -> dict[str, Any]:
    """Everything the report shows, JSON-ready: curves with 95% intervals on all three axes,
    cost to reach each target discovery, ratios against the baseline (with paired bootstrap
    intervals), phase split, and per-problem solve counts. With `base_samples` (per problem)
    best-of-k's curve is also estimated from them (bench.pass_at_k), as one more strategy,
    `best_of_k_estimated`, on the compared problems; a problem without base samples is an error."""
    records = list(records)
    paired = pair_up(records, strategies)
    estimated: list[pass_at_k.BaseSamples] | None = None
    if base_samples is not None and paired.problems:
        missing = [p for p in paired.problems if p not in base_samples]
        if missing:
            raise ValueError(f"no base samples for {', '.join(missing)}: measure their base rates first "
                             "(python -m bench.edge_scan), or report without the estimate")
        bases = pass_at_k.with_run_seconds({p: base_samples[p] for p in paired.problems}, records)
        estimated = [bases[p] for p in paired.problems]
    out: dict[str, Any] = {
        "k": k, "strategies": paired.strategies, "baseline": baseline,
        "problems": paired.problems, "seeds": paired.seeds,
        "runs_compared": sum(len(s) for s in paired.seeds) * len(paired.strategies),
        "runs_excluded": paired.excluded, "n_boot": n_boot, "bootstrap_seed": seed,
        "targets": list(targets), "axes": {},
    }
    if not paired.problems:
        return out
    curve_names = paired.strategies + ([pass_at_k.NAME] if estimated else [])
    for axis in AXES:
        xs = axis_grid(paired, axis, k, estimated)
        interp = axis == "attempts"
        boots = bootstrap(paired, axis, xs, n_boot=n_boot, seed=seed, estimated=estimated)
        ax: dict[str, Any] = {"x": xs.tolist(), "interpolated_reach": interp, "curves": {}, "reach": {}, "ratios": {}}
        reach_boot: dict[str, dict[float, np.ndarray]] = {}
        for st in curve_names:
            if st == pass_at_k.NAME:
                assert estimated is not None
                point = np.mean([pass_at_k.curve(b, axis, xs) for b in estimated], axis=0)
                valid = pass_at_k.valid_up_to(estimated, axis)
            else:
                costs = paired.costs(st, axis)
                point = discovery([row[~np.isnan(row)] for row in costs], xs)
                unsolved = [spent_cost(r, axis) for rs in paired.records[st] for r in rs
                            if r.get("solved_attempt") is None]
                valid = min(unsolved) if unsolved else None
            # past an estimate's N the curve is NaN (undefined): its band is drawn only where defined
            lo, hi = np.percentile(boots[st], [2.5, 97.5], axis=0)
            ax["curves"][st] = {"y": [_opt(y) for y in point], "lo": [_opt(y) for y in lo],
                                "hi": [_opt(y) for y in hi], "valid_up_to": valid}
            # never reached within the budget = an infinite cost (see _ci)
            reach_boot[st] = {t: np.nan_to_num(_reach_rows(xs, boots[st], t, interp), nan=np.inf)
                              for t in targets}
            ax["reach"][st] = {
                f"{t:g}": {"value": reach(xs, point, t, interp), "ci95": _ci(reach_boot[st][t]),
                           "reached_frac": float(np.mean(np.isfinite(reach_boot[st][t])))}
                for t in targets
            }
        if baseline in paired.strategies:
            for st in curve_names:
                if st == baseline:
                    continue
                rs = {}
                for t in targets:
                    num, den = ax["reach"][st][f"{t:g}"]["value"], ax["reach"][baseline][f"{t:g}"]["value"]
                    # inf/finite = inf (only the other strategy never reaches), finite/inf = 0,
                    # inf/inf = NaN: undefined, the share of such draws is 1 - defined_frac
                    with np.errstate(divide="ignore", invalid="ignore"):
                        rb = reach_boot[st][t] / reach_boot[baseline][t]
                    rs[f"{t:g}"] = {"value": ratio(num, den), "ci95": _ci(rb),
                                    "defined_frac": float(np.mean(~np.isnan(rb)))}
                ax["ratios"][f"{st}/{baseline}"] = rs
        out["axes"][axis] = ax
    out["phases"] = phase_split(paired)
    out["training"] = training_stats(paired)
    out["hosts"] = hosts(paired)
    out["mixed_hosts"] = len({h for c in out["hosts"].values() for h in c}) > 1
    out["per_strategy"] = {}
    for st in paired.strategies:
        runs = [r for rs in paired.records[st] for r in rs]
        solved = [r for r in runs if r.get("solved_attempt") is not None]
        out["per_strategy"][st] = {
            "runs": len(runs), "solved": len(solved),
            "mean_attempts_used": float(np.mean([spent_cost(r, "attempts") for r in runs])),
            "mean_attempts_to_solve": float(np.mean([r["solved_attempt"] + 1 for r in solved])) if solved else None,
            "mean_tokens": float(np.mean([spent_cost(r, "tokens") for r in runs])),
            "mean_seconds": float(np.mean([spent_cost(r, "seconds") for r in runs])),
            "discovery_at_k": out["axes"]["attempts"]["curves"][st]["y"][-1],
        }
    if estimated:
        out["estimated"] = {
            "strategy": pass_at_k.NAME, "discovery_at_k": out["axes"]["attempts"]["curves"][pass_at_k.NAME]["y"][-1],
            "base_samples": {p: {"passed": b.passed, "samples": b.samples,
                                 "seconds_per_attempt": round(b.seconds_per_attempt, 3),
                                 "tokens_per_attempt": round(b.tokens_per_attempt, 1)}
                             for p, b in zip(paired.problems, estimated)},
        }
    out["per_problem"] = {
        p: {st: {"solved": sum(r.get("solved_attempt") is not None for r in paired.records[st][i]),
                 "seeds": len(paired.seeds[i]),
                 "attempts": [None if r.get("solved_attempt") is None else r["solved_attempt"] + 1
                              for r in paired.records[st][i]]}
            for st in paired.strategies}
        for i, p in sorted(enumerate(paired.problems), key=lambda ip: natural_key(ip[1]))
    }
    return out


def curve_strategies(summary: dict[str, Any]) -> list[str]:
    """Every curve of a summary: the run strategies, then the estimated one if any."""
    return list(summary["strategies"]) + ([summary["estimated"]["strategy"]] if summary.get("estimated") else [])


def natural_key(name: str) -> list[int | str]:
    """Sort key that puts HumanEval/41 before HumanEval/100 (for tables; the bootstrap keeps
    its own order, so published intervals are reproduced exactly)."""
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)]
