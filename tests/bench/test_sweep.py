"""bench.sweep's pure parts: config parsing and the statistics it reports."""

import math

import pytest

from bench.sweep import log_mean_exp, markdown, parse_config, summarise
from service.schemas import SdpoOptions


def test_parse_config_nests_and_types_values():
    assert parse_config("default") == {}
    cfg = parse_config("lr=3e-4,steps=8,token_level=true,lora.targets=q_proj+v_proj,lora.rank=4")
    assert cfg == {"lr": 3e-4, "steps": 8, "token_level": True,
                   "lora": {"targets": ["q_proj", "v_proj"], "rank": 4}}
    opts = SdpoOptions.model_validate(cfg)
    assert opts.lora.targets == ["q_proj", "v_proj"] and opts.lora.alpha == SdpoOptions().lora.alpha


def test_a_preset_config_takes_the_preset_and_its_overrides():
    opts = SdpoOptions.model_validate(parse_config("preset=paper,lr=3e-5"))
    assert (opts.steps, opts.top_k, opts.guard, opts.lr) == (1, 20, False, 3e-5)


def test_parse_config_rejects_a_bare_word():
    with pytest.raises(ValueError, match="not key=value"):
        parse_config("lr")


def test_log_mean_exp_is_the_importance_sampling_ratio():
    # two references: one became twice as likely, one unchanged -> pass mass x1.5
    assert math.exp(log_mean_exp([math.log(2), 0.0])) == pytest.approx(1.5)


def _row(d_pass, fail=-1.0, held=None, kept=None):
    return {"d_pass": d_pass, "dlogp_fail_trained": fail, "dlogp_fail_heldout": held, "train_s": 10.0,
            "kept_step": kept}


def test_summarise_point_estimate_and_interval():
    rows = [_row([0.0, math.log(3)], held=-0.5), _row([0.0, 0.0], held=-0.5)]
    s = summarise(rows, reps=200)
    assert math.exp(s["pass_gain"]["mean"]) == pytest.approx(math.sqrt(2.0))  # geometric mean of x2 and x1
    assert s["pass_gain"]["lo"] <= s["pass_gain"]["mean"] <= s["pass_gain"]["hi"]
    assert s["dlogp_fail_trained"]["mean"] == -1.0 and s["dlogp_fail_heldout"]["mean"] == -0.5
    assert s["rounds"] == 2
    table = markdown([("lr=3e-4", s)], "header")
    assert "| `lr=3e-4` | 1.41x" in table


def test_summarise_without_held_out_rounds_says_nan_not_zero():
    s = summarise([_row([0.1])], reps=10)
    assert math.isnan(s["dlogp_fail_heldout"]["mean"])


def test_table_from_rows_groups_by_config_in_order():
    from bench.sweep import table_from_rows

    rows = [{**_row([0.0]), "config": "b"}, {**_row([0.5]), "config": "a"}, {**_row([0.1]), "config": "b"}]
    md = table_from_rows(rows, "h")
    assert md.index("`b`") < md.index("`a`")
    assert md.count("| `") == 2


def test_table_says_how_many_steps_the_guard_kept():
    # one round kept all 4 steps, one kept none (its factor is exactly 1.00x): the mean is 2.0
    s = summarise([_row([0.1], kept=4), _row([0.0], kept=0)], reps=10)
    assert s["steps_kept"] == 2.0
    assert "| 2.0 | 10 |" in markdown([("default", s)], "h")
    # rows from before the column existed show a dash, not a made-up number
    assert "| – | 10 |" in markdown([("old", summarise([_row([0.1])], reps=10))], "h")


def test_chained_rows_get_one_line_per_config_and_depth():
    """--chain: the row of round r measures the adapter after rounds 1..r+1, so rows of
    different depths are never pooled into one mean."""
    from bench.sweep import sweep_header, table_from_rows

    rows = [{**_row([math.log(2)]), "config": "c", "round": 0, "chained": True, "problem": "P"},
            {**_row([math.log(4)]), "config": "c", "round": 1, "chained": True, "problem": "P"}]
    md = table_from_rows(rows, "h")
    assert "| `c · after 1 round(s)` | 2.00x" in md and "| `c · after 2 round(s)` | 4.00x" in md
    head = sweep_header([{**r, "model": "m", "temperature": 1.0, "max_new_tokens": 8, "round_n": 16, "pool": 64}
                         for r in rows])
    assert "one after another" in head
