"""Sampling one completion's tokens from the logits an engine returns, in numpy, recording
log_softmax(logits / T) of each sampled token (llama.cpp hands us logits, not samples).

Each completion draws from its own generator seeded by (seed, row), so results do not
depend on how rows are batched.
"""

from __future__ import annotations

import numpy as np

from service.engines.base import SamplingParams

_NUCLEUS_FIRST = 512  # top-p: look at this many candidates before sorting the whole vocabulary


class RowSampler:
    """One completion's sampler: its own generator seeded by (seed, row)."""

    def __init__(self, s: SamplingParams, row: int) -> None:
        self.t = s.temperature
        self.top_p = s.top_p
        self.rng = np.random.default_rng([s.seed & 0xFFFFFFFF, (s.seed >> 32) & 0xFFFFFFFF, row])

    def pick(self, logits: np.ndarray) -> tuple[int, float]:
        z = logits.astype(np.float64, copy=False)
        if self.t > 0:
            z = z / self.t
        m = z.max()
        e = np.exp(z - m)
        total = e.sum()
        lse = m + np.log(total)
        if self.t <= 0:
            tok = int(np.argmax(z))
        elif self.top_p >= 1.0:
            tok = _draw(e, total, self.rng)
        else:
            tok = _nucleus(e / total, self.top_p, self.rng)
        return tok, float(z[tok] - lse)


def _draw(weights: np.ndarray, total: float, rng: np.random.Generator) -> int:
    c = np.cumsum(weights)
    return int(min(np.searchsorted(c, rng.random() * c[-1], side="right"), len(c) - 1))


def _nucleus(p: np.ndarray, top_p: float, rng: np.random.Generator) -> int:
    """Sample from the smallest set of most likely tokens whose mass reaches top_p."""
    k = min(_NUCLEUS_FIRST, len(p))
    idx = np.argpartition(-p, k - 1)[:k] if k < len(p) else np.arange(len(p))
    idx = idx[np.argsort(-p[idx], kind="stable")]
    cum = np.cumsum(p[idx])
    if cum[-1] < top_p and k < len(p):
        idx = np.argsort(-p, kind="stable")
        cum = np.cumsum(p[idx])
    keep = int(np.searchsorted(cum, top_p)) + 1
    kept = idx[:keep]
    return int(kept[_draw(p[kept], 0.0, rng)])
