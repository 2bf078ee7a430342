"""Best-of-k estimated from base samples: the estimator against brute force, and in a summary."""

import itertools
import math

import numpy as np
import pytest

from bench import metrics, pass_at_k
from bench.pass_at_k import BaseSamples

from .test_metrics import K, records


@pytest.mark.parametrize("n,c", [(6, 0), (6, 1), (6, 2), (6, 6), (9, 3)])
def test_estimator_is_the_chance_that_k_of_the_n_samples_hold_a_pass(n, c):
    """Exactly the fraction of k-subsets of the N samples with at least one pass (that is what
    makes it unbiased), for every k up to N, and undefined past N."""
    samples = [1] * c + [0] * (n - c)
    for k in range(0, n + 1):
        subsets = list(itertools.combinations(samples, k))
        want = sum(any(s) for s in subsets) / len(subsets)
        assert pass_at_k.pass_at_k(n, c, k) == pytest.approx(want)
    assert math.isnan(float(pass_at_k.pass_at_k(n, c, n + 1)))


def test_estimator_at_large_n_matches_the_closed_form():
    n, c, k = 256, 3, 100
    want = 1 - math.comb(n - c, k) / math.comb(n, k)
    assert float(pass_at_k.pass_at_k(n, c, k)) == pytest.approx(want, rel=1e-9)


def test_curve_on_the_seconds_axis_steps_at_multiples_of_an_attempt():
    b = BaseSamples(passed=2, samples=8, seconds_per_attempt=3.0, tokens_per_attempt=100.0)
    ys = pass_at_k.curve(b, "seconds", np.array([2.9, 3.0, 5.9, 6.0, 24.0, 27.0]))
    assert ys[0] == 0.0 and ys[1] == pytest.approx(2 / 8) and ys[2] == ys[1]
    assert ys[3] == pytest.approx(float(pass_at_k.pass_at_k(8, 2, 2)))
    assert ys[4] == 1.0 and math.isnan(ys[5])


def test_rate_rows_pool_only_draws_sampled_like_the_run():
    rows = [
        {"problem": "A", "model": "default", "temperature": 1.0, "max_new_tokens": 384, "samples": 16, "passed": 1,
         "wall_s": 32.0, "mean_tokens": 100.0},
        {"problem": "A", "model": "default", "temperature": 1.0, "max_new_tokens": 384, "samples": 48, "passed": 0,
         "wall_s": 144.0, "mean_tokens": 200.0},
        {"problem": "A", "model": "coder-1.5b", "temperature": 1.0, "max_new_tokens": 384, "samples": 64, "passed": 9,
         "wall_s": 1.0, "mean_tokens": 1.0},
        {"problem": "A", "model": "default", "temperature": 0.7, "max_new_tokens": 384, "samples": 64, "passed": 9,
         "wall_s": 1.0, "mean_tokens": 1.0},
    ]
    b = pass_at_k.from_rate_rows(rows, "default", 1.0, 384)["A"]
    assert (b.passed, b.samples) == (1, 64)
    assert b.seconds_per_attempt == pytest.approx(176 / 64) and b.tokens_per_attempt == pytest.approx(175.0)


def test_summary_adds_the_estimated_strategy_with_paired_ratios():
    recs = records(copies=3)
    problems = sorted({r["problem"] for r in recs})
    bases = {p: BaseSamples(passed=1 + i % 2, samples=8, seconds_per_attempt=1.0, tokens_per_attempt=10.0)
             for i, p in enumerate(problems)}
    plain = metrics.summarize(recs, k=K, n_boot=200)
    s = metrics.summarize(recs, k=K, n_boot=200, base_samples=bases)
    name = pass_at_k.NAME
    want = np.mean([[float(pass_at_k.pass_at_k(8, bases[p].passed, k)) for k in range(1, K + 1)] for p in problems], axis=0)
    curve = s["axes"]["attempts"]["curves"][name]
    assert curve["y"] == pytest.approx(list(want))
    assert all(lo <= y <= hi for y, lo, hi in zip(curve["y"], curve["lo"], curve["hi"]))
    assert f"{name}/sdpo" in s["axes"]["attempts"]["ratios"]
    assert s["estimated"]["base_samples"][problems[0]]["samples"] == 8
    assert name not in s["strategies"] and name in metrics.curve_strategies(s)
    # the runs' own curves and intervals do not change when the estimate is added
    for st in plain["strategies"]:
        assert s["axes"]["attempts"]["curves"][st] == plain["axes"]["attempts"]["curves"][st]


def test_summary_refuses_problems_without_base_samples():
    recs = records()
    with pytest.raises(ValueError, match="no base samples for"):
        metrics.summarize(recs, k=K, n_boot=50, base_samples={})


def test_report_with_best_of_k_from_a_rates_file(tmp_path):
    """`tta bench report DIR --best-of-k-from RATES`: the estimate in every table, its source named."""
    import json

    from bench import report
    from bench.runner import CONFIG, RESULTS

    recs = records()
    (tmp_path / RESULTS).write_text("".join(json.dumps(r) + "\n" for r in recs))
    (tmp_path / CONFIG).write_text(json.dumps({"set": "x", "model": "default", "k": K, "temperature": 1.0,
                                               "max_new_tokens": 384, "strategies": ["sdpo", "best_of_k", "multi_turn"]}))
    rates = tmp_path / "rates.jsonl"
    rates.write_text("".join(json.dumps({"problem": p, "model": "default", "temperature": 1.0, "max_new_tokens": 384,
                                         "samples": 64, "passed": 1, "wall_s": 64.0, "mean_tokens": 50.0}) + "\n"
                             for p in sorted({r["problem"] for r in recs})))
    s = report.build_summary(tmp_path, n_boot=50, best_of_k_from=rates)
    assert s["estimated"]["source"] == str(rates)
    md = report.markdown(s)
    assert md.count(pass_at_k.NAME) >= 4  # discovery table, note, and a reach row per axis
    assert "1/64" in md
    with pytest.raises(FileNotFoundError, match="no such rates file"):
        report.build_summary(tmp_path, n_boot=50, best_of_k_from=tmp_path / "absent.jsonl")
