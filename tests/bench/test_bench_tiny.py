"""`tta bench` end to end on the tiny model: one problem, K=2, one seed, all three strategies."""

import json

import pytest
from typer.testing import CliRunner

from service.cli import app
from service.settings import get_settings

PROBLEM = """\
question: Reply with the word yes.
verifier: {type: regex, pattern: '(?i)\\byes\\b'}
meta: {name: say-yes}
"""


@pytest.fixture
def tiny_env(monkeypatch):
    monkeypatch.setenv("TTA_MODEL", "tiny")
    monkeypatch.setenv("TTA_ENGINE", "transformers")
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


def test_bench_tiny_end_to_end(tmp_path, tiny_env):
    f = tmp_path / "yes.yaml"
    f.write_text(PROBLEM)
    out = tmp_path / "run"
    args = ["bench", "--set", str(f), "--k", "2", "--seeds", "1", "--n", "2", "--max-new-tokens", "8",
            "--steps", "1", "--out", str(out)]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    recs = [json.loads(x) for x in (out / "results.jsonl").read_text().splitlines()]
    assert sorted(r["strategy"] for r in recs) == ["best_of_k", "multi_turn", "sdpo"]
    assert all(r["status"] in ("solved", "exhausted") and r["attempts_used"] <= 2 and r["model"] == "tiny" for r in recs)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["problems"] == ["say-yes"] and summary["k"] == 2
    assert (out / "discovery_attempts.png").exists()
    # a rerun finds everything done and loads no model
    res = CliRunner().invoke(app, args + ["--no-report"])
    assert res.exit_code == 0 and "0 run(s)" in res.output and "3 already done" in res.output
    assert len((out / "results.jsonl").read_text().splitlines()) == 3
