"""Best-of-k's discovery curve from base samples already drawn, instead of from best-of-k runs.

Best-of-k samples every attempt from the base model, so its chance of a first success within k
attempts is pass@k of the base model. With c passes among N base samples of a problem, the
unbiased estimator (Chen et al. 2021, the one the published SDPO test-time comparison uses) is

    pass@k = 1 - C(N - c, k) / C(N, k)          for k <= N (undefined beyond N)

and discovery@k is its mean over problems. This frees the compute that K-attempt best-of-k runs
per seed would take for the strategies that do need runs (sdpo, multi_turn).

On the seconds and tokens axes a best-of-k attempt costs what a base-model attempt costs, so
the curve is pass@floor(x / u) with u the mean cost of one base attempt on that problem: its
round-1 seconds per attempt in the compared runs (round 1 of every strategy samples the base
model, on the machine and at the batch size of the runs), else the scan's wall time per sample;
tokens from the base samples' mean length.

Intervals: each bootstrap replicate draws problems (the same draws as the runs' strategies,
so ratios are paired) and, per drawn problem, c* ~ Binomial(N, c / N): the estimate's own
sampling noise, which at c = 1 of 64 is most of the uncertainty.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Iterable

import numpy as np

NAME = "best_of_k_estimated"


@dataclass(frozen=True)
class BaseSamples:
    """What the base model did on one problem: `passed` of `samples`, and the mean cost of one attempt."""

    passed: int
    samples: int
    seconds_per_attempt: float
    tokens_per_attempt: float

    def unit(self, axis: str) -> float:
        return {"attempts": 1.0, "seconds": self.seconds_per_attempt, "tokens": self.tokens_per_attempt}[axis]


@lru_cache(maxsize=64)
def _fail_table(n: int) -> np.ndarray:
    """T[c, k] = C(n - c, k) / C(n, k) for c, k in 0..n: the chance that k draws without
    replacement from n samples with c passes contain none. A running product, never a
    factorial: prod_{i<k} (n - c - i) / (n - i), which hits 0 exactly once k > n - c."""
    c = np.arange(n + 1)[:, None]
    i = np.arange(n)[None, :]
    factors = np.clip((n - c - i) / (n - i), 0.0, None)
    return np.concatenate([np.ones((n + 1, 1)), np.cumprod(factors, axis=1)], axis=1)


def pass_at_k(n: int, c: int | np.ndarray, k: int | np.ndarray) -> np.ndarray:
    """The unbiased pass@k estimator, broadcast over c and k; NaN where k > n."""
    c, k = np.asarray(c), np.asarray(k)
    table = _fail_table(int(n))
    kk = np.clip(k, 0, n)
    out = 1.0 - table[np.clip(c, 0, n), kk]
    return np.where(k > n, np.nan, out)


def curve(base: BaseSamples, axis: str, xs: np.ndarray, passed: int | np.ndarray | None = None) -> np.ndarray:
    """One problem's estimated discovery at each x (NaN past its N attempts). `passed` may be
    an array of resampled pass counts [...]: the result is then [..., X]."""
    c = np.asarray(base.passed if passed is None else passed)[..., None]
    k = np.floor(np.asarray(xs, dtype=float) / base.unit(axis) + 1e-9).astype(int)
    return pass_at_k(base.samples, c, k)


def valid_up_to(bases: Iterable[BaseSamples], axis: str) -> float:
    """Where the estimated curve stops being defined: the smallest N times its unit cost."""
    return min(b.samples * b.unit(axis) for b in bases)


def jump_points(bases: Iterable[BaseSamples], axis: str) -> list[float]:
    """The x values where some problem's estimated curve steps (k * u), for axis grids."""
    return [k * b.unit(axis) for b in bases for k in range(1, b.samples + 1)]


def replicate_curves(bases: list[BaseSamples], axis: str, xs: np.ndarray, pi: np.ndarray,
                     rng: np.random.Generator) -> np.ndarray:
    """Bootstrap replicates [B, X] given the problem draws pi [B, P]: mean over the drawn
    problems of each one's curve at a binomially resampled pass count (one redraw per drawn slot)."""
    b, p = pi.shape
    out = np.zeros((b, len(xs)))
    for j, base in enumerate(bases):
        rows, _ = np.nonzero(pi == j)
        if len(rows):
            c_star = rng.binomial(base.samples, base.passed / base.samples, size=len(rows))
            np.add.at(out, rows, curve(base, axis, xs, passed=c_star))
    return out / p


def from_rate_rows(rows: Iterable[dict[str, Any]], model: str, temperature: float,
                   max_new_tokens: int) -> dict[str, BaseSamples]:
    """Pool a scan's rows (bench/results/humaneval_rates.jsonl format) per problem, keeping only
    rows drawn the way the runs sample (model, temperature, max tokens); seconds per attempt
    are the scan's wall time per sample (`with_run_seconds` replaces them where runs exist)."""
    acc: dict[str, list[float]] = {}
    for r in rows:
        if (r.get("model") != model or float(r.get("temperature", -1)) != float(temperature)
                or int(r.get("max_new_tokens", -1)) != int(max_new_tokens)):
            continue
        a = acc.setdefault(r["problem"], [0, 0, 0.0, 0.0])
        a[0] += int(r["passed"])
        a[1] += int(r["samples"])
        a[2] += float(r.get("wall_s", 0.0))
        a[3] += float(r.get("mean_tokens", 0.0)) * int(r["samples"])
    return {p: BaseSamples(int(c), int(n), s / n, t / n) for p, (c, n, s, t) in acc.items() if n}


def with_run_seconds(bases: dict[str, BaseSamples], records: Iterable[dict[str, Any]]) -> dict[str, BaseSamples]:
    """Seconds per attempt from the runs' own round 1 (base-model sampling on the runs' machine
    and batch size), averaged over every run of the problem; the scan's figure where none."""
    per: dict[str, list[float]] = {}
    for rec in records:
        rounds = rec.get("rounds") or []
        n1 = sum(1 for a in rec.get("attempts") or [] if a.get("round") == 0)
        if rounds and n1:
            per.setdefault(rec["problem"], []).append(
                (rounds[0].get("generate_s", 0.0) + rounds[0].get("verify_s", 0.0)) / n1)
    return {p: (BaseSamples(b.passed, b.samples, float(np.mean(per[p])), b.tokens_per_attempt) if per.get(p) else b)
            for p, b in bases.items()}
