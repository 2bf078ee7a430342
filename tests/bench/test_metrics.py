"""Discovery curves, bootstrap intervals, reach and ratios on hand-computed synthetic runs."""

import math

import numpy as np
import pytest

from bench import metrics
from bench.runner import compact
from service.schemas import SolveRequest

from .conftest import fake_result

K, N = 4, 2
# strategy -> problem -> solved attempt (0-based) per seed; None = unsolved within K
PATTERN = {
    "sdpo": {"A": [0, 2], "B": [None, 1]},
    "best_of_k": {"A": [1, None], "B": [None, None]},
    "multi_turn": {"A": [3, 1], "B": [0, 3]},
}


def req(strategy, seed=0, k=K, n=N):
    return SolveRequest.model_validate({
        "problem": {"question": "q"}, "verifier": {"type": "exact", "answer": "a"},
        "strategy": strategy, "budget": {"max_attempts": k}, "sampling": {"n": n}, "seed": seed})


def records(pattern=PATTERN, copies=1, k=K, n=N):
    out = []
    for st, probs in pattern.items():
        for p, solved in probs.items():
            for c in range(copies):
                for seed, at in enumerate(solved):
                    out.append(compact(f"{p}{c}", fake_result(req(st, seed, k, n), at), k))
    return out


def test_discovery_at_k_hand_computed():
    s = metrics.summarize(records(), k=K, n_boot=200)
    curves = s["axes"]["attempts"]["curves"]
    assert s["axes"]["attempts"]["x"] == [1, 2, 3, 4]
    assert curves["sdpo"]["y"] == pytest.approx([0.25, 0.5, 0.75, 0.75])
    assert curves["best_of_k"]["y"] == pytest.approx([0.0, 0.25, 0.25, 0.25])
    assert curves["multi_turn"]["y"] == pytest.approx([0.25, 0.5, 0.5, 1.0])
    assert s["per_strategy"]["sdpo"]["solved"] == 3 and s["per_strategy"]["sdpo"]["runs"] == 4


def test_reach_and_ratios_hand_computed():
    s = metrics.summarize(records(), k=K, n_boot=200)
    reach = s["axes"]["attempts"]["reach"]
    assert reach["sdpo"]["0.5"]["value"] == pytest.approx(2.0)
    assert reach["sdpo"]["0.75"]["value"] == pytest.approx(3.0)
    assert reach["best_of_k"]["0.5"]["value"] is None
    assert reach["multi_turn"]["0.75"]["value"] == pytest.approx(3.5)  # between (3, .5) and (4, 1)
    ratios = s["axes"]["attempts"]["ratios"]
    assert ratios["multi_turn/sdpo"]["0.5"]["value"] == pytest.approx(1.0)
    assert ratios["multi_turn/sdpo"]["0.75"]["value"] == pytest.approx(3.5 / 3.0)
    assert ratios["best_of_k/sdpo"]["0.5"]["value"] is None


def test_reach_function():
    xs = [1, 2, 3, 4]
    assert metrics.reach(xs, [0.6, 0.8, 1, 1], 0.5) == pytest.approx(0.5 / 0.6)  # from the origin
    assert metrics.reach(xs, [0.6, 0.8, 1, 1], 0.5, interpolate=False) == 1
    assert metrics.reach(xs, [0.1, 0.2, 0.3, 0.4], 0.5) is None
    assert metrics.ratio(6.0, 3.0) == 2.0 and metrics.ratio(None, 3.0) is None and metrics.ratio(1.0, None) is None


def test_cumulative_seconds_and_tokens():
    # n=2, generate 1.0 + verify 0.5 per round, sdpo trains 2.0 s between rounds
    sd = compact("A", fake_result(req("sdpo"), 2), K)
    secs, toks = metrics.attempt_cumulative(sd)
    assert secs == pytest.approx([0.75, 1.5, 1.5 + 2.0 + 0.75, 1.5 + 2.0 + 1.5])
    assert toks == [10, 20, 30, 40]
    assert metrics.solve_cost(sd, "seconds") == pytest.approx(4.25)
    assert metrics.solve_cost(sd, "tokens") == 30 and metrics.solve_cost(sd, "attempts") == 3
    bk = compact("A", fake_result(req("best_of_k"), 2), K)
    assert metrics.solve_cost(bk, "seconds") == pytest.approx(2.25)  # no training between rounds
    un = compact("A", fake_result(req("sdpo"), None), K)
    assert math.isinf(metrics.solve_cost(un, "seconds"))
    assert metrics.spent_cost(un, "seconds") == pytest.approx(1.5 + 2.0 + 1.5)


def test_seconds_axis_and_equal_time_ratios():
    s = metrics.summarize(records(), k=K, n_boot=200)
    sec = s["axes"]["seconds"]
    # sdpo: A solved at 0.75 s and 4.25 s, B at 1.5 s -> reaches 50% at 1.5 s (exact step)
    assert sec["reach"]["sdpo"]["0.5"]["value"] == pytest.approx(1.5)
    # multi_turn (no training): A at 3.0 s and 1.5 s, B at 0.75 s and 3.0 s -> 50% at 1.5 s
    assert sec["reach"]["multi_turn"]["0.5"]["value"] == pytest.approx(1.5)
    assert sec["ratios"]["multi_turn/sdpo"]["0.5"]["value"] == pytest.approx(1.0)
    assert sec["curves"]["sdpo"]["valid_up_to"] == pytest.approx(5.0)  # the unsolved sdpo run spent 5 s
    tok = s["axes"]["tokens"]
    assert tok["reach"]["sdpo"]["0.75"]["value"] == 30


def test_phase_split():
    s = metrics.summarize(records(), k=K, n_boot=50)
    ph = s["phases"]
    assert ph["best_of_k"]["train_s"] == 0
    assert ph["sdpo"]["train_s"] == pytest.approx(2.0 * 2)  # two runs went past their first round
    assert ph["sdpo"]["generate_frac"] + ph["sdpo"]["verify_frac"] + ph["sdpo"]["train_frac"] == pytest.approx(1.0)


def test_training_stats_count_rounds_that_kept_no_update():
    recs = records()
    kept = iter([4, 0, 2, 0, 0, 1])
    for r in recs:
        for rd in r["rounds"]:
            if rd["train_s"] > 0:
                rd["train"] = {"loss_before": 0.1, "loss_after": 0.05, "kept_step": next(kept), "collapsed": False}
    tr = metrics.summarize(recs, k=K, n_boot=20)["training"]
    assert set(tr) == {"sdpo"}  # the strategies that never train have no entry
    # two sdpo runs went past their first round, one round each (test_phase_split)
    assert tr["sdpo"] == {"rounds_trained": 2, "rounds_no_step_kept": 1, "steps_kept": 4}


def test_bootstrap_contains_point_and_shrinks_with_more_data():
    rng = np.random.default_rng(3)
    pattern = {st: {f"p{i}": [None if rng.random() < 0.4 else int(rng.integers(0, 8)) for _ in range(3)]
                    for i in range(10)} for st in ("sdpo", "best_of_k")}
    small = metrics.summarize(records(pattern, copies=1, k=8), k=8, n_boot=400)
    big = metrics.summarize(records(pattern, copies=6, k=8), k=8, n_boot=400)
    for s in (small, big):
        for c in s["axes"]["attempts"]["curves"].values():
            assert all(lo - 1e-9 <= y <= hi + 1e-9 for y, lo, hi in zip(c["y"], c["lo"], c["hi"]))
    # same point estimates, narrower intervals
    for st in ("sdpo", "best_of_k"):
        a, b = small["axes"]["attempts"]["curves"][st], big["axes"]["attempts"]["curves"][st]
        assert a["y"] == pytest.approx(b["y"])
        w_small = np.mean(np.array(a["hi"]) - np.array(a["lo"]))
        w_big = np.mean(np.array(b["hi"]) - np.array(b["lo"]))
        assert w_big < 0.7 * w_small


def test_bootstrap_is_reproducible():
    a = metrics.summarize(records(), k=K, n_boot=100)
    b = metrics.summarize(records(), k=K, n_boot=100)
    assert a["axes"]["attempts"]["curves"] == b["axes"]["attempts"]["curves"]


def test_only_pairs_finished_by_every_strategy_and_failed_runs_are_dropped():
    recs = records()
    recs.append(compact("C0", fake_result(req("sdpo"), 0), K))  # C only has sdpo
    failed = dict(recs[0], status="failed", solved_attempt=None)  # latest record of (A, sdpo, 0) failed
    recs.append(failed)
    s = metrics.summarize(recs, k=K, n_boot=50)
    assert s["problems"] == ["A0", "B0"] and s["seeds"] == [[1], [0, 1]]
    assert s["runs_excluded"] == {"sdpo": 1, "best_of_k": 1, "multi_turn": 1}


def test_discovery_with_unequal_seed_counts():
    # problem A has 1 seed (solved), B has 3 (one solved): mean over problems of per-problem fractions
    assert metrics.discovery([[1.0], [2.0, math.inf, math.inf]], [1, 2]) == pytest.approx([0.5, 0.5 + 1 / 6])


def test_draws_that_never_reach_widen_the_interval_instead_of_being_dropped():
    # one seed per problem; best_of_k reaches 50% only at K, so many bootstrap draws never do
    pattern = {"sdpo": {"A": [0], "B": [1], "C": [1], "D": [None]},
               "best_of_k": {"A": [0], "B": [3], "C": [None], "D": [None]}}
    s = metrics.summarize(records(pattern), k=K, strategies=["sdpo", "best_of_k"], n_boot=500)
    reach = s["axes"]["attempts"]["reach"]["best_of_k"]["0.5"]
    assert reach["value"] == pytest.approx(4.0) and reach["reached_frac"] < 0.9
    assert reach["ci95"][1] is None  # unbounded: a draw that never reaches costs more than K
    r = s["axes"]["attempts"]["ratios"]["best_of_k/sdpo"]["0.5"]
    assert r["value"] == pytest.approx(4.0 / 1.5)
    assert r["ci95"][0] is not None and r["ci95"][1] is None  # sdpo reaches where best_of_k does not
    assert 0 < r["defined_frac"] <= 1
    from bench.report import _fmt_ci
    assert _fmt_ci(r, 2).endswith("–∞)")


def test_runs_timed_on_different_machines_are_flagged():
    from bench.report import markdown, mixed_hosts_note

    same = records()
    s = metrics.summarize(same, k=K, n_boot=20)
    assert s["mixed_hosts"] is False and mixed_hosts_note(s) is None
    assert set(s["hosts"]) == set(PATTERN) and len({h for c in s["hosts"].values() for h in c}) == 1

    mixed = records()
    for r in mixed:
        if r["strategy"] != "sdpo":  # as when baselines are imported from a run made elsewhere
            r.pop("host")
    s = metrics.summarize(mixed, k=K, n_boot=20)
    assert s["mixed_hosts"] is True
    assert s["hosts"]["best_of_k"] == {"unrecorded": 4}
    assert "seconds axis" in markdown({**s, "config": {}}) and "4 on unrecorded" in mixed_hosts_note(s)


def test_per_problem_table_in_natural_order():
    pattern = {st: {f"HumanEval/{i}": [0] for i in (100, 41, 9)} for st in ("sdpo", "best_of_k")}
    s = metrics.summarize([{**r, "problem": r["problem"][:-1]} for r in records(pattern)], k=K, n_boot=50)
    assert list(s["per_problem"]) == ["HumanEval/9", "HumanEval/41", "HumanEval/100"]
    assert sorted(["HumanEval/100", "x2", "HumanEval/41", "x10"], key=metrics.natural_key) == [
        "HumanEval/41", "HumanEval/100", "x2", "x10"]
