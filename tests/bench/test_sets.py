"""Problem sets: LiveCodeBench loader on a fixture, the bundled maths set, examples, humaneval-edge."""

import base64
import json
import pickle
import zlib
from pathlib import Path

import pytest

from bench import sets
from bench.livecodebench import decode_cases, lcb_request
from bench.sets import SetError, load_set, select_edge
from service.schemas import ProblemFile, SolveRequest

FIXTURE = Path(__file__).parent / "fixtures" / "lcb_small.jsonl"


def test_lcb_fixture_to_specs():
    probs = load_set(f"lcb:{FIXTURE}")
    assert [p.name for p in probs] == ["abc000_a", "9001", "abc000_b"]
    stdin, func, packed = (p.problem for p in probs)
    assert stdin.verifier.format == "stdio" and len(stdin.verifier.cases) == 3  # public + private
    assert stdin.verifier.cases[0].input == "1 2\n" and stdin.verifier.cases[0].output == "3\n"
    assert "standard input" in stdin.problem.question and "Print A + B" in stdin.problem.question
    assert func.verifier.format == "functional" and func.verifier.fn_name == "addUp"
    assert len(func.verifier.cases) == 3 and "class Solution" in func.problem.question
    assert packed.verifier.format == "stdio" and [c.output for c in packed.verifier.cases] == ["ba\n", "cba\n", "x\n"]
    assert stdin.meta["difficulty"] == "easy" and func.meta["platform"] == "leetcode"
    # the same file by path (detected by its fields), and public tests only
    assert [p.name for p in load_set(str(FIXTURE))] == ["abc000_a", "9001", "abc000_b"]
    rec = json.loads(FIXTURE.read_text().splitlines()[0])
    assert len(lcb_request(rec, tests="public")["verifier"]["cases"]) == 1


def test_lcb_specs_judge_correct_and_wrong_code():
    from sandbox.verifiers import verify_many

    stdin, func, _ = (p.problem for p in load_set(f"lcb:{FIXTURE}"))
    good = "```python\na, b = map(int, input().split())\nprint(a + b)\n```"
    bad = "```python\na, b = map(int, input().split())\nprint(a - b)\n```"
    assert [v.verdict for v in verify_many(stdin.verifier, [good, bad], [False, False])] == ["pass", "fail"]
    good_f = ("```python\nfrom typing import List\n\nclass Solution:\n    def addUp(self, nums: List[int], k: int) -> int:\n"
              "        return sum(nums) + k\n```")
    assert verify_many(func.verifier, [good_f], [False])[0].verdict == "pass"


def test_lcb_errors_name_the_problem(tmp_path):
    rec = json.loads(FIXTURE.read_text().splitlines()[1])
    rec["metadata"] = "{}"
    with pytest.raises(ValueError, match="9001.*func_name"):
        lcb_request(rec)
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps(rec) + "\n")
    with pytest.raises(SetError, match="func_name"):
        load_set(f"lcb:{bad}")


def test_compressed_cases_refuse_globals():
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    blob = base64.b64encode(zlib.compress(pickle.dumps(Evil()))).decode()
    with pytest.raises(ValueError, match="neither JSON"):
        decode_cases(blob)


def test_math_small_validates_and_gold_answers_pass():
    from sandbox.verifiers import verify_many

    probs = load_set("math-small")
    assert 10 <= len(probs) <= 20 and len({p.name for p in probs}) == len(probs)
    for p in probs:
        assert p.problem.verifier.type == "math" and "\\boxed" in p.problem.problem.question
        SolveRequest.model_validate(p.problem.model_dump(exclude={"meta"}))
    pf = probs[0].problem
    got = verify_many(pf.verifier, [f"\\boxed{{{pf.verifier.answer}}}", "\\boxed{12345}"], [False, False])
    assert [v.verdict for v in got] == ["pass", "fail"]


def test_examples_and_quick_sets():
    ex = load_set("examples")
    assert len(ex) == len(list(sets.EXAMPLES_DIR.glob("*.yaml"))) >= 2
    assert all(isinstance(p.problem, ProblemFile) for p in ex)
    quick = load_set("quick")
    assert [p.name for p in quick] == ["fibonacci-json", "match-parens (HumanEval/119)"]


def test_joined_specs_load_each_problem_once_in_order():
    quick, ex = load_set("quick"), load_set("examples")
    joined = load_set("quick+examples")
    assert [p.name for p in joined[:2]] == [p.name for p in quick]
    assert sorted(p.name for p in joined) == sorted(p.name for p in ex)  # quick's are examples too
    he = load_set("humaneval:HumanEval/2+humaneval:HumanEval/0,HumanEval/2")
    assert [p.name for p in he] == ["HumanEval/2", "HumanEval/0"]
    with pytest.raises(SetError, match="unknown problem set 'nope'"):
        load_set("quick+nope")


def test_humaneval_edge_without_rates_says_how_to_make_them(tmp_path):
    with pytest.raises(SetError, match="python -m bench.edge_scan"):
        sets.humaneval_edge_set(tmp_path / "absent.jsonl")


def test_edge_selection_rule(tmp_path):
    rows = [
        {"problem": "HumanEval/10", "model": "default", "samples": 16, "passed": 0},   # 0%: never
        {"problem": "HumanEval/2", "model": "default", "samples": 16, "passed": 1},    # 6%: edge
        {"problem": "HumanEval/3", "model": "default", "samples": 16, "passed": 5},    # 31%: too easy
        {"problem": "HumanEval/4", "model": "default", "samples": 16, "passed": 4},    # 25%: edge
        {"problem": "HumanEval/5", "model": "tiny", "samples": 16, "passed": 2},       # other model
        {"problem": "HumanEval/6", "model": "default", "samples": 4, "passed": 1},     # too few samples
        {"problem": "HumanEval/3", "model": "default", "samples": 16, "passed": 3},    # pooled: 8/32 = 25%
    ]
    assert select_edge(rows) == ["HumanEval/2", "HumanEval/3", "HumanEval/4"]
    f = tmp_path / "rates.jsonl"
    f.write_text("\n".join(json.dumps(r) for r in rows[:1]) + "\n")
    with pytest.raises(SetError, match="no HumanEval task"):
        sets.humaneval_edge_set(f)


def test_unknown_set():
    with pytest.raises(SetError, match="unknown problem set"):
        load_set("nope")


@pytest.mark.parametrize("spec, slug", [
    ("quick", "quick"),
    ("humaneval:HumanEval/119,HumanEval/65", "humaneval_HumanEval_119_HumanEval_65"),
    ("lcb:data/hard.jsonl", "lcb_hard"),
    ("bench/data/math_small.jsonl", "math_small"),
    ("examples/", "examples"),
])
def test_set_slug_names_runs_after_the_whole_spec(spec, slug):
    from bench.sets import set_slug

    assert set_slug(spec) == slug


def test_set_slug_of_a_long_task_list_fits_a_file_name():
    from bench.sets import SLUG_MAX, set_slug

    many = "humaneval:" + ",".join(f"HumanEval/{i}" for i in range(41, 160))
    other = many.replace("HumanEval/159", "HumanEval/163")
    assert len(set_slug(many)) <= SLUG_MAX and set_slug(many).startswith("humaneval_HumanEval_41_")
    assert set_slug(many) != set_slug(other)  # cut lists that differ after the cut stay apart


def test_partial_scan_gives_a_partial_set_and_says_so(tmp_path, caplog):
    f = tmp_path / "rates.jsonl"
    f.write_text(json.dumps({"problem": "HumanEval/2", "model": "default", "samples": 16, "passed": 2}) + "\n")
    with caplog.at_level("WARNING"):
        probs = sets.humaneval_edge_set(f)
    assert [p.name for p in probs] == ["HumanEval/2"]
    assert "partial scan: 1 of 164" in caplog.text


def test_edge_split_keeps_dev_tasks_out_of_the_test_split(tmp_path):
    rows = [{"problem": t, "model": "default", "samples": 16, "passed": 2}
            for t in ("HumanEval/2", "HumanEval/65", "HumanEval/119")]
    f = tmp_path / "rates.jsonl"
    f.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    assert [p.name for p in sets.humaneval_edge_split("dev", f)] == list(sets.DEV_TASKS)
    assert [p.name for p in sets.humaneval_edge_split("test", f)] == ["HumanEval/2"]
    f.write_text("\n".join(json.dumps(r) for r in rows[1:]) + "\n")
    with pytest.raises(SetError, match="every edge task .* is a dev task"):
        sets.humaneval_edge_split("test", f)


def test_edge_scan_stops_a_task_only_when_it_cannot_be_at_the_edge():
    from bench.edge_scan import above_edge, measured

    hi, target = sets.EDGE_HI, 16
    # 5 of 16 is 31%: above the edge whatever the other 8 samples do; 4 could still end at 25%
    assert above_edge(5, 8, target, hi, sets.EDGE_MIN_SAMPLES)
    assert not above_edge(4, 8, target, hi, sets.EDGE_MIN_SAMPLES)
    # too few samples for the set's rule to read the row: keep going
    assert not above_edge(5, 5, target, hi, sets.EDGE_MIN_SAMPLES)
    # and the stopped row is indeed outside the selection
    stopped = {"problem": "HumanEval/7", "model": "default", "samples": 8, "passed": 5, "stopped": "above_edge"}
    partial = {"problem": "HumanEval/8", "model": "default", "samples": 8, "passed": 1}
    full = {"problem": "HumanEval/9", "model": "default", "samples": 16, "passed": 2}
    rows = [stopped, partial, full]
    assert select_edge(rows) == ["HumanEval/8", "HumanEval/9"]
    # resuming: the stopped and the full task are done, the partial one is measured again
    assert measured(rows, "default", 16) == {"HumanEval/7", "HumanEval/9"}
    assert measured(rows, "tiny", 16) == set()
    assert measured(rows, "default", 16, full=True) == {"HumanEval/9"}  # --full measures it to 16


def test_hard_rule_keeps_one_or_two_passes_of_64_and_its_split_is_stable(tmp_path):
    from bench.edge_scan import measured

    rows = [
        {"problem": "HumanEval/1", "model": "default", "samples": 16, "passed": 0},
        {"problem": "HumanEval/1", "model": "default", "samples": 48, "passed": 2},  # 2/64 = 3.1%: hard
        {"problem": "HumanEval/2", "model": "default", "samples": 64, "passed": 0},  # never passed: out
        {"problem": "HumanEval/3", "model": "default", "samples": 40, "passed": 3},  # 3 passes: above 3.5%
        {"problem": "HumanEval/4", "model": "default", "samples": 16, "passed": 1},  # too few samples yet
        {"problem": "HumanEval/5", "model": "coder-1.5b", "samples": 64, "passed": 1},
    ]
    assert sets.select_hard(rows) == ["HumanEval/1"]
    assert sets.select_hard(rows, model="coder-1.5b") == ["HumanEval/5"]
    # resuming --hard: 1 and 2 have their 64, 3 can no longer be hard, 4 needs 48 more
    assert measured(rows, "default", 64, hi=sets.HARD_HI) == {"HumanEval/1", "HumanEval/2", "HumanEval/3"}
    f = tmp_path / "rates.jsonl"
    f.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    whole = [p.name for p in sets.humaneval_hard_set("default", None, f)]
    split = sets.hard_split("HumanEval/1")
    assert [p.name for p in sets.humaneval_hard_set("default", split, f)] == whole
    other = "test" if split == "dev" else "dev"
    with pytest.raises(SetError, match=f"in the {other} split"):
        sets.humaneval_hard_set("default", other, f)
    # one task in three goes to dev, by its id alone
    assert sum(sets.hard_split(f"HumanEval/{i}") == "dev" for i in range(164)) in range(40, 70)
    with pytest.raises(SetError, match="model 'nope'"):
        sets.humaneval_hard_set("nope", None, f)


def test_hard_scan_orders_a_new_model_by_the_default_models_rates():
    from bench.edge_scan import hard_order

    rows = [
        {"problem": "HumanEval/1", "model": "default", "samples": 16, "passed": 4},
        {"problem": "HumanEval/2", "model": "default", "samples": 16, "passed": 0},
        {"problem": "HumanEval/3", "model": "default", "samples": 64, "passed": 0},  # 0 of 64: harder than 0 of 16
        {"problem": "HumanEval/4", "model": "default", "samples": 16, "passed": 1},
        {"problem": "HumanEval/1", "model": "coder-1.5b", "samples": 16, "passed": 1},  # its own 1 pass: first
        {"problem": "HumanEval/2", "model": "coder-1.5b", "samples": 16, "passed": 0},
    ]
    todo = ["HumanEval/5", "HumanEval/4", "HumanEval/2", "HumanEval/1", "HumanEval/3"]
    # own passes group first (1, then 2, then none); in a group, the default's rate, then its samples
    # decide; a task the default never measured goes last
    assert hard_order(todo, rows, "coder-1.5b") == [
        "HumanEval/1", "HumanEval/3", "HumanEval/2", "HumanEval/4", "HumanEval/5"]
    # the default model itself: its own 1-pass task first, then by rate
    assert hard_order(todo, rows, "default") == [
        "HumanEval/4", "HumanEval/3", "HumanEval/2", "HumanEval/1", "HumanEval/5"]


def test_select_prints_the_models_hard_set_with_its_split_and_the_scans_progress(capsys):
    from rich.console import Console

    from bench.edge_scan import print_selection

    rows = [
        {"problem": "HumanEval/1", "model": "coder-1.5b", "samples": 64, "passed": 2},
        {"problem": "HumanEval/2", "model": "coder-1.5b", "samples": 16, "passed": 0},  # could still be hard
        {"problem": "HumanEval/3", "model": "coder-1.5b", "samples": 16, "passed": 8},
        {"problem": "HumanEval/4", "model": "default", "samples": 64, "passed": 1},  # another model's
    ]
    console = Console(file=__import__("io").StringIO(), width=200)
    print_selection(rows, "coder-1.5b", True, console)
    assert capsys.readouterr().out == f"HumanEval/1\t2/64\t3.1%\t{sets.hard_split('HumanEval/1')}\n"
    said = console.file.getvalue()
    assert "1 of 3 measured tasks hard" in said
    assert f"mean rate of the measured tasks {(2 / 64 + 0 + 0.5) / 3:.1%}" in said
    assert "1 measured task(s) below 64 samples could still be hard; 161 not measured yet" in said


def test_an_interrupted_scan_keeps_its_finished_batches_and_resumes_after_them(tmp_path, monkeypatch):
    """A hard task is 8 batches of minutes each: stopping the scan must not lose them, and the
    rerun must draw the seeds that follow, not repeat them."""
    import sys
    from types import SimpleNamespace

    import service.wiring
    from bench import edge_scan
    from service import prompts

    seeds: list[int] = []

    def generate(prompts_, _adapter, params):
        if len(seeds) == stop_after[0]:
            raise KeyboardInterrupt
        seeds.append(params.seed)
        return [[SimpleNamespace(text="x", token_ids=[1, 2], finish_reason="stop")] * params.n]

    def verify(_spec, texts, _truncated):
        return [SimpleNamespace(verdict="fail", kind="wrong_answer") for _ in texts]

    deps = SimpleNamespace(model_name="default", tokenizer=None, engine=SimpleNamespace(name="fake", generate=generate),
                           verify=verify)
    monkeypatch.setattr(service.wiring, "build_solver_deps", lambda _settings: deps)
    monkeypatch.setattr(prompts, "render", lambda _tok, _messages: "prompt")
    monkeypatch.setattr(edge_scan.signal, "signal", lambda *_: None)  # leave pytest's SIGTERM alone
    out = tmp_path / "rates.jsonl"
    argv = ["edge_scan", "--hard", "--tasks", "7", "--out", str(out)]
    stop_after = [3]
    monkeypatch.setattr(sys, "argv", argv)
    with pytest.raises(KeyboardInterrupt):
        edge_scan.main()
    rows = sets.read_rates(out)
    assert [(r["samples"], r["seed_offset"]) for r in rows] == [(24, 0)]
    stop_after = [99]
    edge_scan.main()
    rows = sets.read_rates(out)
    assert [(r["samples"], r["seed_offset"]) for r in rows] == [(24, 0), (40, 24)]
    assert seeds == [1234 + 8 * i for i in range(8)]  # every seed once, in order
    assert sets.pooled_rates(rows) == {"HumanEval/7": (0, 64)}
