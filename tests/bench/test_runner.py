"""The runner's checkpoint file: one line per finished run, resume skips them, failures retried."""

import json

import pytest

from bench import runner
from bench.runner import BenchConfig, ConfigMismatch
from bench.sets import BenchProblem
from service.events import RoundStartEvent
from service.schemas import ProblemFile

from .conftest import fake_result


def problems(*names):
    return [BenchProblem(n, ProblemFile.model_validate({
        "question": f"say {n}", "verifier": {"type": "exact", "answer": n},
        "sampling": {"n": 7, "temperature": 0.3, "max_new_tokens": 99}, "budget": {"max_attempts": 99}}))
        for n in names]


class FakeSolve:
    """Solves problem 'a' at attempt 1, never 'b'; raises for keys in `boom`."""

    def __init__(self, boom=()):
        self.calls = []
        self.boom = set(boom)

    def __call__(self, req, on_event=None):
        key = (req.problem.question.split()[-1], req.strategy, req.seed)
        self.calls.append(key)
        if on_event:
            on_event(RoundStartEvent(round=0, attempts_used=0, n=req.sampling.n))
        if key in self.boom:
            raise RuntimeError("engine fell over")
        return fake_result(req, 1 if key[0] == "a" else None)


def cfg(**kw):
    return BenchConfig(**{"set": "test", "k": 4, "n": 2, "seeds": [0, 1], "max_new_tokens": 32, **kw})


def test_every_run_checkpointed_and_rerun_skips_them(tmp_path):
    probs, c = problems("a", "b"), cfg()
    solve = FakeSolve()
    out = runner.run(probs, c, tmp_path, solve, max_runs=5)
    assert out.ran == 5 and len(solve.calls) == 5
    lines = (tmp_path / "results.jsonl").read_text().splitlines()
    assert len(lines) == 5
    # seed-major, then problem, then strategy: a partial run holds all strategies of a problem
    assert solve.calls[:3] == [("a", s, 0) for s in runner.STRATEGIES]

    solve2 = FakeSolve()
    out2 = runner.run(probs, c, tmp_path, solve2)
    assert out2.skipped == 5 and out2.ran == 2 * 2 * 3 - 5
    assert not set(solve.calls) & set(solve2.calls)

    solve3 = FakeSolve()
    out3 = runner.run(probs, c, tmp_path, solve3)
    assert out3.ran == 0 and solve3.calls == []
    recs = runner.read_results(tmp_path)
    assert len({r["key"] for r in recs}) == 12
    a = next(r for r in recs if r["problem"] == "a")
    assert a["status"] == "solved" and a["solved_attempt"] == 1 and a["attempts_used"] == 2
    assert len(list((tmp_path / "traces").iterdir())) == 12


def test_requests_share_one_configuration(tmp_path):
    seen = []

    def solve(req, on_event=None):
        seen.append(req)
        return fake_result(req, None)

    c = cfg(strategies=["sdpo", "best_of_k"], sdpo={"lr": 1e-4, "steps": 2}, temperature=0.7)
    runner.run(problems("a"), c, tmp_path, solve)
    assert {(r.strategy, r.seed) for r in seen} == {(s, i) for s in ("sdpo", "best_of_k") for i in (0, 1)}
    for r in seen:  # the problem file's own sampling and budget are ignored
        assert r.budget.max_attempts == 4 and r.sampling.n == 2 and r.sampling.max_new_tokens == 32
        assert r.sampling.temperature == 0.7 and r.sdpo.lr == 1e-4 and r.sdpo.steps == 2


def test_failed_run_is_recorded_and_retried(tmp_path):
    probs, c = problems("a"), cfg(seeds=[0])
    out = runner.run(probs, c, tmp_path, FakeSolve(boom={("a", "sdpo", 0)}))
    assert out.failed == 1 and out.ran == 3
    bad = [r for r in runner.read_results(tmp_path) if r["status"] == "failed"]
    assert len(bad) == 1 and "engine fell over" in bad[0]["reason"]
    again = FakeSolve()
    runner.run(probs, c, tmp_path, again)
    assert again.calls == [("a", "sdpo", 0)]
    assert runner.done_keys(runner.read_results(tmp_path)) == {f"a|{s}|0" for s in runner.STRATEGIES}


def test_torn_last_line_is_skipped_and_not_glued_to_the_next(tmp_path):
    probs, c = problems("a"), cfg(seeds=[0])
    runner.run(probs, c, tmp_path, FakeSolve(), max_runs=1)
    with (tmp_path / "results.jsonl").open("a") as f:
        f.write('{"key": "a|best_of_k|0", "status": "sol')  # crash mid-write
    assert len(runner.read_results(tmp_path)) == 1
    solve = FakeSolve()
    runner.run(probs, c, tmp_path, solve)
    assert len(solve.calls) == 2
    recs = runner.read_results(tmp_path)
    assert len(recs) == 3 and all(json.dumps(r) for r in recs)


def test_resume_with_other_settings_is_refused(tmp_path):
    runner.run(problems("a"), cfg(seeds=[0]), tmp_path, FakeSolve(), max_runs=1)
    with pytest.raises(ConfigMismatch, match="max_new_tokens"):
        runner.run(problems("a"), cfg(seeds=[0], max_new_tokens=64), tmp_path, FakeSolve())
    # more seeds or strategies only add runs
    runner.run(problems("a"), cfg(seeds=[0, 1]), tmp_path, FakeSolve())
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["seeds"] == [0, 1]


def test_resume_with_another_set_records_a_spec_that_loads_back(tmp_path):
    from bench.sets import load_set

    runner.run(problems("a"), cfg(set="quick", seeds=[0]), tmp_path, FakeSolve())
    runner.run(problems("b"), cfg(set="examples", seeds=[0]), tmp_path, FakeSolve())
    runner.run(problems("b"), cfg(set="examples", seeds=[0]), tmp_path, FakeSolve())
    recorded = json.loads((tmp_path / "config.json").read_text())["set"]
    assert recorded == "quick+examples"  # each part once, however often it is resumed
    assert len(load_set(recorded)) == len(load_set("examples"))


def test_resume_after_the_sdpo_defaults_changed_is_refused(tmp_path):
    runner.run(problems("a"), cfg(seeds=[0]), tmp_path, FakeSolve(), max_runs=1)
    path = tmp_path / "config.json"
    saved = json.loads(path.read_text())
    assert saved["sdpo_resolved"]["token_level"] is True  # the options in effect are recorded
    # as if the run had started under an older version whose default was the top-k loss
    saved["sdpo_resolved"]["token_level"] = False
    path.write_text(json.dumps(saved))
    with pytest.raises(ConfigMismatch, match="token_level: False there, True now"):
        runner.run(problems("a"), cfg(seeds=[0]), tmp_path, FakeSolve())
    assert len(runner.read_results(tmp_path)) == 1  # nothing ran under the new defaults


def test_a_config_from_before_the_record_is_resumed_and_recorded(tmp_path):
    runner.run(problems("a"), cfg(seeds=[0]), tmp_path, FakeSolve(), max_runs=1)
    path = tmp_path / "config.json"
    saved = json.loads(path.read_text())
    del saved["sdpo_resolved"]
    path.write_text(json.dumps(saved))
    runner.run(problems("a"), cfg(seeds=[0]), tmp_path, FakeSolve())
    assert json.loads(path.read_text())["sdpo_resolved"]["lr"] > 0


def test_unknown_strategy_is_refused(tmp_path):
    with pytest.raises(ValueError, match="unknown strategies"):
        runner.run(problems("a"), cfg(strategies=["sdpo", "magic"]), tmp_path, FakeSolve())
