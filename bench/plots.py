"""PNG plots of a summary (bench/metrics.py): discovery vs attempts, seconds and tokens, with
95% bootstrap bands. Needs matplotlib (Agg backend, no display)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

COLOURS = {"sdpo": "#d62728", "best_of_k": "#1f77b4", "multi_turn": "#2ca02c", "best_of_k_estimated": "#17becf"}
LABELS = {"attempts": "attempts (k)", "seconds": "seconds (generate + verify + train)", "tokens": "generated tokens"}


def plot_summary(summary: dict[str, Any], out_dir: Path, title: str = "") -> list[Path]:
    """One PNG per axis (discovery_attempts.png, discovery_seconds.png, discovery_tokens.png);
    returns the paths written. The dotted vertical line of a strategy marks where its curve
    becomes a lower bound (its first unsolved run ran out of budget there)."""
    import matplotlib
    import numpy as np

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    for axis, ax_data in summary.get("axes", {}).items():
        fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=120)
        xs = ax_data["x"]
        censored = False
        step = "post" if axis != "attempts" else None
        for st, c in ax_data["curves"].items():
            col = COLOURS.get(st)
            # null = undefined there (an estimate past its N base samples): a gap, not a zero
            c = {**c, **{key: np.array(c[key], dtype=float) for key in ("y", "lo", "hi")}}
            if step:
                ax.step(xs, c["y"], where=step, color=col, label=st)
                ax.fill_between(xs, c["lo"], c["hi"], step=step, color=col, alpha=0.18, linewidth=0)
            else:
                ax.plot(xs, c["y"], marker="o", markersize=3, color=col, label=st)
                ax.fill_between(xs, c["lo"], c["hi"], color=col, alpha=0.18, linewidth=0)
            if axis != "attempts" and c.get("valid_up_to") is not None:
                ax.axvline(c["valid_up_to"], color=col, linestyle=":", linewidth=1)
                censored = True
        for t in summary.get("targets", []):
            ax.axhline(t, color="grey", linewidth=0.6, linestyle="--")
        ax.set_xlabel(LABELS.get(axis, axis))
        ax.set_ylabel("discovery (fraction of runs solved)")
        ax.set_ylim(-0.02, 1.02)
        ax.set_xlim(left=0)
        n_p, n_s = len(summary.get("problems", [])), max((len(s) for s in summary.get("seeds", [])), default=0)
        ax.set_title(f"{title} — discovery vs {axis} ({n_p} problems × ≤{n_s} seeds, 95% CI)".strip(" —"), fontsize=9)
        ax.grid(alpha=0.3)
        if censored:
            fig.text(0.01, 0.005, "dotted: where a strategy's first unsolved run hit its budget (a lower bound to the right)",
                     fontsize=6, color="grey")
        ax.legend(fontsize=8, loc="lower right")
        fig.tight_layout()
        path = Path(out_dir) / f"discovery_{axis}.png"
        fig.savefig(path)
        plt.close(fig)
        paths.append(path)
    if summary.get("per_problem"):
        paths.append(_plot_per_problem(summary, Path(out_dir), title, plt))
    return paths


def _plot_per_problem(summary: dict[str, Any], out_dir: Path, title: str, plt: Any) -> Path:
    """Attempts to solve per problem and seed (a cross at K+1 = not solved within K)."""
    import numpy as np

    probs = list(summary["per_problem"])
    strategies = summary["strategies"]
    k = summary["k"]
    fig, ax = plt.subplots(figsize=(max(6.4, 1.2 * len(probs) + 2), 4.2), dpi=120)
    width = 0.8 / max(len(strategies), 1)
    for j, st in enumerate(strategies):
        for i, p in enumerate(probs):
            atts = summary["per_problem"][p][st]["attempts"]
            x = i + (j - (len(strategies) - 1) / 2) * width
            jitter = np.linspace(-width / 4, width / 4, num=max(len(atts), 1))
            for a, dx in zip(atts, jitter):
                solved = a is not None
                ax.scatter(x + dx, a if solved else k + 1, color=COLOURS.get(st), marker="o" if solved else "x",
                           s=22, label=st if (i == 0 and dx == jitter[0]) else None)
    ax.axhline(k + 0.5, color="grey", linewidth=0.6, linestyle="--")
    ax.set_xticks(range(len(probs)), probs, rotation=30, ha="right", fontsize=7)
    ax.set_ylabel(f"attempts to solve (x at {k + 1}: not within K={k})")
    ax.set_ylim(0, k + 4)  # headroom: the legend sits above the "not solved" row
    ax.set_title(f"{title} — attempts to solve per problem and seed".strip(" —"), fontsize=9)
    ax.grid(alpha=0.3, axis="y")
    ax.legend(fontsize=8, loc="upper left", ncol=len(strategies))
    fig.tight_layout()
    path = out_dir / "attempts_per_problem.png"
    fig.savefig(path)
    plt.close(fig)
    return path
