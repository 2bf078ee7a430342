"""The solve loop end to end on a real (tiny) model and the real sandbox."""

import pytest

from service.schemas import SolveRequest, SolveResult
from service.solver import Solver

ADD_TESTS = "def check(candidate):\n    assert candidate(2, 3) == 5\n    assert candidate(-4, 4) == 0\n"
# No function passes this: the loop must run to its budget.
IMPOSSIBLE = {"type": "python_tests", "format": "assert", "entry_point": "add",
              "tests": "def check(candidate):\n    assert candidate(2, 3) == 5\n    assert candidate(2, 3) == 6\n"}


def request(strategy: str, **over) -> SolveRequest:
    body = {
        "problem": {"question": "Write a Python function `add(a, b)` returning a + b, in a ```python block."},
        "verifier": {"type": "python_tests", "format": "assert", "tests": ADD_TESTS, "entry_point": "add"},
        "strategy": strategy,
        "budget": {"max_attempts": 5},
        "sampling": {"n": 2, "max_new_tokens": 24},
        "sdpo": {"steps": 1, "lora": {"rank": 4, "alpha": 8, "targets": ["q_proj", "v_proj"]}},
        "seed": 7,
    }
    for k, v in over.items():
        body[k] = {**body[k], **v} if k in ("budget", "sampling", "sdpo") else v
    return SolveRequest.model_validate(body)


@pytest.mark.parametrize("strategy", ["sdpo", "best_of_k", "multi_turn"])
def test_each_strategy_respects_budget_and_returns_valid_result(tiny_deps, strategy):
    events = []
    res = Solver(tiny_deps).solve(request(strategy, verifier=IMPOSSIBLE), on_event=events.append)
    SolveResult.model_validate(res.model_dump())
    assert res.status in ("solved", "exhausted"), res.reason
    assert res.attempts_used <= 5
    assert len(res.attempts) == res.attempts_used == sum(len(r.attempts) for r in res.rounds)
    assert [a.index for a in res.attempts] == list(range(res.attempts_used))
    if res.status == "exhausted":
        assert res.attempts_used == 5 and [len(r.attempts) for r in res.rounds] == [2, 2, 1]
        assert "attempt budget" in res.reason
    else:
        assert res.solution and res.attempts[res.solved_attempt].verdict == "pass"
    if strategy == "sdpo" and res.status == "exhausted":
        trained = [r for r in res.rounds if r.train is not None]
        assert len(trained) == 2  # after rounds 1 and 2, not after the last
        assert all(r.train.samples == 2 and r.train.steps == 1 for r in trained)
        assert res.rounds[-1].adapter_version == 2
    if strategy == "multi_turn" and len(res.rounds) > 1:
        assert {a.conversation for a in res.attempts} == {0, 1}
    assert events[-1].type == "verified" and events[-1].attempts_used == res.attempts_used
    assert "done" not in {e.type for e in events}  # the store's: written with the final record
    assert not tiny_deps.pool.adapters  # the job's adapter is gone


def test_same_seed_same_attempts(tiny_deps):
    a = Solver(tiny_deps).solve(request("sdpo", verifier=IMPOSSIBLE))
    b = Solver(tiny_deps).solve(request("sdpo", verifier=IMPOSSIBLE))
    c = Solver(tiny_deps).solve(request("sdpo", verifier=IMPOSSIBLE, seed=8))
    assert a.attempts_used == 5 and a.rounds[0].train is not None  # trained between rounds
    assert [x.text for x in a.attempts] == [x.text for x in b.attempts]
    assert [x.text for x in a.attempts] != [x.text for x in c.attempts]


def test_round_budget_deadline_and_cancel(tiny_deps):
    res = Solver(tiny_deps).solve(request("best_of_k", verifier=IMPOSSIBLE, budget={"max_attempts": 50, "max_rounds": 1}))
    assert res.status == "exhausted" and len(res.rounds) == 1 and "round budget" in res.reason
    res = Solver(tiny_deps).solve(request("best_of_k", verifier=IMPOSSIBLE, budget={"max_attempts": 50, "deadline_s": 0.001}))
    assert res.status == "exhausted" and "deadline" in res.reason and res.attempts_used <= 2
    calls = []
    res = Solver(tiny_deps).solve(request("best_of_k", verifier=IMPOSSIBLE, budget={"max_attempts": 50}),
                                  cancelled=lambda: calls.append(1) or len(calls) > 1)
    assert res.status == "cancelled" and len(res.rounds) == 1


def test_internal_error_fails_with_reason(tiny_deps):
    from dataclasses import replace

    def broken(spec, responses, truncated):
        raise RuntimeError("verifier exploded")

    res = Solver(replace(tiny_deps, verify=broken)).solve(request("sdpo"))
    assert res.status == "failed" and "verifier exploded" in res.reason
    assert not tiny_deps.pool.adapters


def test_solved_stops_at_first_pass(tiny_deps):
    # a verifier every answer passes: solved in round 1, no training
    req = request("sdpo", verifier={"type": "regex", "pattern": "[\\s\\S]*"})
    res = Solver(tiny_deps).solve(req)
    assert res.status == "solved" and res.solved_attempt == 0 and len(res.rounds) == 1
    assert res.rounds[0].train is None


def test_resume_from_checkpoint_continues_exactly(tiny_deps):
    """A job resumed from its last checkpoint (state + adapter snapshot) produces the same
    attempts as an uninterrupted run, and counts no attempt twice."""
    req = request("sdpo", verifier=IMPOSSIBLE, budget={"max_attempts": 6})
    saved = []
    full = Solver(tiny_deps).solve(req, job_id="resume-a", checkpoint=lambda st, blob: saved.append((st.model_copy(deep=True), blob)))
    assert full.attempts_used == 6 and len(saved) == 3
    state, blob = saved[0]  # as if the worker died during round 2
    assert len(state.attempts) == 2 and blob is not None
    resumed = Solver(tiny_deps).solve(req, job_id="resume-b", resume=(state, blob))
    assert resumed.attempts_used == 6
    assert [a.text for a in resumed.attempts] == [a.text for a in full.attempts]
    assert [r.round for r in resumed.rounds] == [0, 1, 2]
    assert not tiny_deps.pool.adapters


def test_partial_credit_reaches_the_teacher_and_the_advantage(tiny_deps, monkeypatch):
    """Two attempts of one round: `a + b` passes 2 of 3 asserts, `0` passes 1. With
    demonstration best_partial the weaker one's teacher sees the stronger one's code and score,
    the stronger one's only its feedback; with grpo_weight their advantages are +1 and -1."""
    from service.engines.base import Completion

    texts = ["```python\ndef add(a, b):\n    return a + b\n```", "```python\ndef add(a, b):\n    return 0\n```"]
    tok = tiny_deps.tokenizer

    def generate(prompts_, adapter, params):
        return [[Completion(t, tok(t, add_special_tokens=False).input_ids, [0.0], "stop") for t in texts[: params.n]]
                for _ in prompts_]

    seen, advantages = [], []
    real = tiny_deps.trainer.train_round

    def train_round(adapter, samples, opts):
        seen.append([tok.decode(s.teacher_prompt) for s in samples])
        advantages.append([s.advantage for s in samples])
        return real(adapter, samples, opts)

    monkeypatch.setattr(tiny_deps.engine, "generate", generate)
    monkeypatch.setattr(tiny_deps.trainer, "train_round", train_round)
    tests = "def check(candidate):\n    assert candidate(2, 3) == 5\n    assert candidate(-4, 4) == 0\n    assert candidate(2, 3) == 6\n"
    req = request("sdpo", verifier={"type": "python_tests", "format": "assert", "entry_point": "add", "tests": tests},
                  budget={"max_attempts": 4}, sdpo={"demonstration": "best_partial", "grpo_weight": 0.5})
    res = Solver(tiny_deps).solve(req)
    assert [(a.passed_cases, a.total_cases) for a in res.attempts] == [(2, 3), (1, 3)] * 2
    strong, weak = seen[0]
    assert "partly correct" not in strong
    assert "A partly correct attempt (it passed 2 of 3 tests):" in weak and "return a + b" in weak
    assert "assertion failed: assert candidate(2, 3) == 5" in weak  # and still its own feedback
    assert advantages[0] == pytest.approx([1.0, -1.0])
