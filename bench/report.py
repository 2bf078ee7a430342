"""Report of a benchmark run directory: summary.json, PNG plots and a rich table.

    tta bench report bench/runs/<name>
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from rich import box
from rich.console import Console
from rich.table import Table

from bench import metrics, pass_at_k
from bench.runner import CONFIG, read_results

SUMMARY = "summary.json"
MARKDOWN = "summary.md"
# What `publish` copies into bench/results/<set>-<model>-<date>/: small files only (the
# traces/ folder holds every attempt's text and stays in the run directory).
PUBLISHED = ("config.json", "results.jsonl", SUMMARY, MARKDOWN, "discovery_attempts.png",
             "discovery_seconds.png", "discovery_tokens.png", "attempts_per_problem.png")


def load_config(run_dir: Path) -> dict[str, Any]:
    path = Path(run_dir) / CONFIG
    return json.loads(path.read_text()) if path.exists() else {}


def base_samples_for(cfg: dict[str, Any], rates: Path) -> dict[str, pass_at_k.BaseSamples]:
    """The base samples in a rates file that were drawn the way this run samples."""
    from bench.sets import read_rates

    if not Path(rates).exists():
        raise FileNotFoundError(f"{rates}: no such rates file (python -m bench.edge_scan writes one)")
    rows = read_rates(Path(rates))
    return pass_at_k.from_rate_rows(rows, model=str(cfg.get("model")), temperature=float(cfg.get("temperature", 1.0)),
                                    max_new_tokens=int(cfg.get("max_new_tokens", 0)))


def build_summary(run_dir: Path, n_boot: int = 1000, seed: int = 0, best_of_k_from: Path | None = None) -> dict[str, Any]:
    """The run's summary; with `best_of_k_from` (a rates file) best-of-k is also estimated
    from the base samples there (bench.pass_at_k)."""
    run_dir = Path(run_dir)
    records = read_results(run_dir)
    if not records:
        raise FileNotFoundError(f"{run_dir / 'results.jsonl'}: no finished runs to report")
    cfg = load_config(run_dir)
    k = int(cfg.get("k") or max(r.get("k", 0) for r in records))
    strategies = [s for s in cfg.get("strategies", []) if any(r["strategy"] == s for r in records)] or None
    bases = None if best_of_k_from is None else base_samples_for(cfg, best_of_k_from)
    summary = metrics.summarize(records, k=k, strategies=strategies, n_boot=n_boot, seed=seed, base_samples=bases)
    if bases is not None:
        summary["estimated"]["source"] = str(best_of_k_from)
    summary["config"] = cfg
    summary["failed_runs"] = sum(1 for r in metrics.latest_any(records).values() if r.get("status") == "failed")
    return summary


def _fmt(x: float | None, digits: int = 1) -> str:
    return "—" if x is None else f"{x:.{digits}f}"


def _fmt_ci(v: dict[str, Any], digits: int = 1) -> str:
    lo, hi = v.get("ci95", [None, None])
    if v.get("value") is None:
        return "never"
    if lo is None and hi is None:
        return _fmt(v["value"], digits)
    # a null bound is infinite: too many bootstrap draws never reach the target (metrics._ci)
    bound = lambda b: "∞" if b is None else f"{b:.{digits}f}"  # noqa: E731
    return f"{v['value']:.{digits}f} ({bound(lo)}–{bound(hi)})"


def render(summary: dict[str, Any], console: Console) -> None:
    cfg = summary.get("config", {})
    console.print(
        f"[bold]{cfg.get('set', '?')}[/]: {len(summary['problems'])} problems, seeds per problem "
        f"{sorted({len(s) for s in summary['seeds']}) or '—'}, K={summary['k']}, n={cfg.get('n')}, "
        f"T={cfg.get('temperature')}, max_new_tokens={cfg.get('max_new_tokens')}, model={cfg.get('model')}; "
        f"{summary['runs_compared']} runs compared"
        + (f", excluded (not finished by every strategy): {summary['runs_excluded']}" if summary["runs_excluded"] else "")
        + (f", failed: {summary['failed_runs']}" if summary.get("failed_runs") else ""),
        highlight=False,
    )
    if not summary.get("axes"):
        console.print("[yellow]no (problem, seed) finished by every strategy yet[/]")
        return
    k = summary["k"]
    t = Table(title="discovery (95% bootstrap CI)", title_justify="left", box=box.SIMPLE_HEAD)
    for c in ("strategy", "solved", f"discovery@{k}", "attempts/run", "s/run", "tokens/run"):
        t.add_column(c, justify="left" if c == "strategy" else "right")
    for st in summary["strategies"]:
        ps = summary["per_strategy"][st]
        att = summary["axes"]["attempts"]["curves"][st]
        t.add_row(st, f"{ps['solved']}/{ps['runs']}", f"{att['y'][-1]:.2f} ({att['lo'][-1]:.2f}–{att['hi'][-1]:.2f})",
                  f"{ps['mean_attempts_used']:.1f}", f"{ps['mean_seconds']:.0f}", f"{ps['mean_tokens']:.0f}")
    if est := summary.get("estimated"):
        t.add_row(est["strategy"], "—", _estimated_at_k(summary), "—", "—", "—")
    console.print(t)
    if est:
        console.print(estimated_note(summary), highlight=False)

    base = summary["baseline"]
    r = Table(title=f"cost to reach discovery, and its ratio to {base} (> 1: {base} needs less; "
                    "∞: not reached in over 2.5% of bootstrap draws)",
              title_justify="left", box=box.SIMPLE_HEAD)
    r.add_column("axis")
    r.add_column("strategy")
    for tg in summary["targets"]:
        r.add_column(f"to {tg:.0%}", justify="right")
    for tg in summary["targets"]:
        r.add_column(f"÷{base} @{tg:.0%}", justify="right")
    for axis, digits in (("attempts", 1), ("seconds", 1), ("tokens", 0)):
        ax = summary["axes"][axis]
        names = metrics.curve_strategies(summary)
        for i, st in enumerate(names):
            ratios = ax["ratios"].get(f"{st}/{base}")
            r.add_row(axis if i == 0 else "", st,
                      *[_fmt_ci(ax["reach"][st][f"{tg:g}"], digits) for tg in summary["targets"]],
                      *[("" if ratios is None else _fmt_ci(ratios[f"{tg:g}"], 2)) for tg in summary["targets"]],
                      end_section=i == len(names) - 1)
    console.print(r)

    p = Table(title="time per phase (all compared runs)", title_justify="left", box=box.SIMPLE_HEAD)
    for c in ("strategy", "generate s", "verify s", "train s", "per run s", "split g/v/t"):
        p.add_column(c, justify="right" if c != "strategy" else "left")
    for st, ph in summary["phases"].items():
        p.add_row(st, f"{ph['generate_s']:.0f}", f"{ph['verify_s']:.0f}", f"{ph['train_s']:.0f}", f"{ph['per_run_s']:.1f}",
                  f"{ph['generate_frac']:.0%}/{ph['verify_frac']:.0%}/{ph['train_frac']:.0%}")
    console.print(p)
    if note := mixed_hosts_note(summary):
        console.print(f"[yellow]{note}[/]", highlight=False)
    for st, tr in summary.get("training", {}).items():
        kept = tr['rounds_trained'] - tr['rounds_no_step_kept']
        console.print(f"{st}: trained after {tr['rounds_trained']} failed rounds; {kept} kept an update "
                      f"({tr['steps_kept']} steps in all), {tr['rounds_no_step_kept']} kept none", highlight=False)


def _estimated_at_k(summary: dict[str, Any]) -> str:
    att = summary["axes"]["attempts"]["curves"][pass_at_k.NAME]
    y, lo, hi = att["y"][-1], att["lo"][-1], att["hi"][-1]
    if y is None:
        return f"undefined past {att['valid_up_to']:.0f}"
    return f"{y:.2f} ({lo:.2f}–{hi:.2f})"


def estimated_note(summary: dict[str, Any]) -> str:
    est = summary["estimated"]
    counts = ", ".join(f"{p} {b['passed']}/{b['samples']}"
                       for p, b in sorted(est["base_samples"].items(), key=lambda pb: metrics.natural_key(pb[0])))
    return (f"{est['strategy']}: best-of-k from the unbiased pass@k estimator over base samples "
            f"({est.get('source', '?')}), not from runs; passes/samples per problem: {counts}. Defined up to the "
            "smallest N attempts; seconds per attempt are the runs' own round 1 (base-model sampling).")


def mixed_hosts_note(summary: dict[str, Any]) -> str | None:
    """A warning when the compared runs were timed on more than one machine (None otherwise)."""
    if not summary.get("mixed_hosts"):
        return None
    where = "; ".join(f"{st}: " + ", ".join(f"{n} on {h}" for h, n in c.items()) for st, c in summary["hosts"].items())
    return ("Timed on more than one machine, so the seconds axis and its ratios compare machines as well as "
            "strategies; attempts and tokens do not depend on the machine. The same seed can also draw other "
            f"samples on another machine (floating-point differences), so seeds are no longer exactly paired. ({where})")


def _md_ci(v: dict[str, Any] | None, digits: int) -> str:
    return "" if v is None else _fmt_ci(v, digits).replace("never", "not reached")


def markdown(summary: dict[str, Any]) -> str:
    """The headline tables as GitHub markdown (what the README quotes)."""
    cfg = summary.get("config", {})
    lines = [
        f"**{cfg.get('set', '?')}**, model `{cfg.get('model')}`: {len(summary['problems'])} problems x "
        f"{max((len(s) for s in summary['seeds']), default=0)} seeds, K={summary['k']}, n={cfg.get('n')}, "
        f"T={cfg.get('temperature')}, max_new_tokens={cfg.get('max_new_tokens')}, SDPO overrides "
        f"`{json.dumps(cfg.get('sdpo') or {})}`; {summary['runs_compared']} runs compared. "
        "Intervals: 95% paired bootstrap over problems and seeds; ∞: more than 2.5% of the draws never "
        "reach the target within the budget (for a ratio: the other strategy does not, sdpo does).",
        "",
    ]
    if not summary.get("axes"):
        return "\n".join(lines + ["No (problem, seed) finished by every strategy yet.", ""])
    k, base = summary["k"], summary["baseline"]
    lines += [f"| strategy | solved | discovery@{k} | attempts/run | s/run | tokens/run |", "|---|---|---|---|---|---|"]
    for st in summary["strategies"]:
        ps, att = summary["per_strategy"][st], summary["axes"]["attempts"]["curves"][st]
        lines.append(f"| {st} | {ps['solved']}/{ps['runs']} | {att['y'][-1]:.2f} ({att['lo'][-1]:.2f}-{att['hi'][-1]:.2f}) "
                     f"| {ps['mean_attempts_used']:.1f} | {ps['mean_seconds']:.0f} | {ps['mean_tokens']:.0f} |")
    if summary.get("estimated"):
        lines += [f"| {pass_at_k.NAME} | – | {_estimated_at_k(summary)} | – | – | – |", "", estimated_note(summary)]
    tg = summary["targets"]
    lines += ["", f"Cost to reach discovery, and its ratio to {base} (> 1: {base} needs less):", "",
              "| axis | strategy | " + " | ".join(f"to {t:.0%}" for t in tg) + " | "
              + " | ".join(f"ratio @{t:.0%}" for t in tg) + " |",
              "|---|---|" + "---|" * (2 * len(tg))]
    for axis, digits in (("attempts", 1), ("seconds", 0), ("tokens", 0)):
        ax = summary["axes"][axis]
        for st in metrics.curve_strategies(summary):
            ratios = ax["ratios"].get(f"{st}/{base}")
            cells = [_md_ci(ax["reach"][st][f"{t:g}"], digits) for t in tg]
            cells += [("" if ratios is None else _md_ci(ratios[f"{t:g}"], 2)) for t in tg]
            lines.append(f"| {axis} | {st} | " + " | ".join(cells) + " |")
    lines += ["", "| strategy | generate s | verify s | train s | split g/v/t |", "|---|---|---|---|---|"]
    for st, ph in summary["phases"].items():
        lines.append(f"| {st} | {ph['generate_s']:.0f} | {ph['verify_s']:.0f} | {ph['train_s']:.0f} | "
                     f"{ph['generate_frac']:.0%}/{ph['verify_frac']:.0%}/{ph['train_frac']:.0%} |")
    for st, tr in summary.get("training", {}).items():
        kept = tr['rounds_trained'] - tr['rounds_no_step_kept']
        lines += ["", f"{st} trained after {tr['rounds_trained']} failed rounds; {kept} of them kept an update "
                  f"({tr['steps_kept']} gradient steps in all) and {tr['rounds_no_step_kept']} kept none "
                  "(the next round then samples as best_of_k)."]
    if note := mixed_hosts_note(summary):
        lines += ["", f"**{note}**"]
    lines += ["", "| problem | " + " | ".join(f"{st} solved (attempts)" for st in summary["strategies"]) + " |",
              "|---|" + "---|" * len(summary["strategies"])]
    for prob, row in summary.get("per_problem", {}).items():
        cells = [f"{row[st]['solved']}/{row[st]['seeds']} ("
                 + ", ".join("-" if a is None else str(a) for a in row[st]["attempts"]) + ")" for st in summary["strategies"]]
        lines.append(f"| {prob} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def publish(run_dir: Path, dest_root: Path, date: str | None = None, name: str | None = None) -> Path:
    """Copy a reported run's small files to DEST_ROOT/<set>-<model>-<date>/ (for git), or to
    DEST_ROOT/NAME."""
    import re
    import shutil
    import time

    run_dir = Path(run_dir)
    if not (run_dir / SUMMARY).exists():
        raise FileNotFoundError(f"{run_dir / SUMMARY}: report the run first (tta bench report {run_dir})")
    if name is not None and not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}", name):
        raise ValueError(f"publish name {name!r}: use 1-100 letters, digits, '.', '_' or '-', starting with a letter or digit")
    cfg = load_config(run_dir)
    from bench.sets import set_slug

    name = name or re.sub(r"[^A-Za-z0-9._-]+", "_", f"{set_slug(str(cfg.get('set', 'set')))}-{cfg.get('model', 'model')}-{date or time.strftime('%Y-%m-%d')}")
    dest = Path(dest_root) / name
    dest.mkdir(parents=True, exist_ok=True)
    for f in PUBLISHED:
        if (run_dir / f).exists():
            shutil.copy2(run_dir / f, dest / f)
    return dest


def report(run_dir: Path, console: Console | None = None, plots: bool = True, n_boot: int = 1000,
           best_of_k_from: Path | None = None) -> dict[str, Any]:
    """Write RUN_DIR/summary.json, summary.md (and the PNG plots), print the tables; returns the summary."""
    run_dir = Path(run_dir)
    console = console or Console()
    summary = build_summary(run_dir, n_boot=n_boot, best_of_k_from=best_of_k_from)
    (run_dir / SUMMARY).write_text(json.dumps(summary, indent=1) + "\n")
    (run_dir / MARKDOWN).write_text(markdown(summary))
    render(summary, console)
    written = [run_dir / SUMMARY, run_dir / MARKDOWN]
    if plots and summary.get("axes"):
        try:
            from bench.plots import plot_summary
        except ImportError:  # pragma: no cover
            console.print("[yellow]matplotlib is not installed: no plots (pip install matplotlib)[/]")
        else:
            try:
                written += plot_summary(summary, run_dir, title=str(summary.get("config", {}).get("set", "")))
            except ImportError:
                console.print("[yellow]matplotlib is not installed: no plots (pip install matplotlib)[/]")
    console.print(f"wrote {', '.join(p.name for p in written)} in {run_dir}", highlight=False)
    return summary
