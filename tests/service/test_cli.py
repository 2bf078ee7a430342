"""The command line: bad input gives one line naming the field and exit code 2."""

import json

import pytest
from typer.testing import CliRunner

from service.cli import app

runner = CliRunner()

GOOD = """\
question: Reply with the word yes.
verifier: {type: regex, pattern: '(?i)\\byes\\b'}
"""


def run(*args):
    res = runner.invoke(app, [str(a) for a in args])
    return res.exit_code, res.output


@pytest.mark.parametrize(
    "body, field",
    [
        ("question: hi\n", "verifier"),
        ("question: hi\nverifier: {type: nope}\n", "verifier"),
        ("question: ''\nverifier: {type: exact, answer: x}\n", "problem.question"),
        ("question: hi\nverifier: {type: exact, answer: x}\nbudget: {max_attempts: -1}\n", "budget.max_attempts"),
        ("question: hi\nverifier: {type: regex, pattern: '('}\n", "regular expression"),
        ("question: hi\nverifier: {type: exact, answer: x}\nstrategy: magic\n", "strategy"),
        ("question: hi\nverifier: {type: exact, answer: x}\ncolour: red\n", "colour"),
        ("question: hi\nverifier: {type: python_tests, format: assert, tests: 'def check(c): pass'}\n", "entry_point"),
        ("- just\n- a list\n", "mapping"),
        ("question: [unclosed\n", "not valid YAML"),
    ],
)
def test_bad_problem_file_names_the_field(tmp_path, body, field):
    f = tmp_path / "p.yaml"
    f.write_text(body)
    code, out = run("solve", f)
    assert code == 2, out
    assert field in out
    assert "Traceback" not in out
    assert len([ln for ln in out.strip().splitlines() if ln.strip()]) <= 3  # one message (soft-wrapped)


def test_bad_option_is_exit_2(tmp_path):
    f = tmp_path / "p.yaml"
    f.write_text(GOOD)
    code, out = run("solve", f, "--strategy", "nope")
    assert code == 2 and "strategy" in out


def test_missing_file_is_exit_2(tmp_path):
    code, out = run("solve", tmp_path / "absent.yaml")
    assert code == 2 and "cannot read" in out


def test_verify_pass_fail_and_json(tmp_path):
    f = tmp_path / "p.yaml"
    f.write_text(GOOD)
    yes, no = tmp_path / "yes.txt", tmp_path / "no.txt"
    yes.write_text("Yes.")
    no.write_text("Nope.")
    assert run("verify", f, yes)[0] == 0
    code, out = run("verify", f, no)
    assert code == 1 and "FAIL" in out and "required form" in out
    code, out = run("verify", f, no, "--json")
    assert json.loads(out[out.index("{"):])["verdict"] == "fail"


def test_verify_runs_code_in_the_sandbox(tmp_path):
    f = tmp_path / "p.yaml"
    f.write_text(
        "question: add\n"
        "verifier: {type: python_tests, format: functional, fn_name: add, cases: [{input: [1, 2], output: 3}]}\n"
    )
    good, bad = tmp_path / "good.md", tmp_path / "bad.md"
    good.write_text("```python\ndef add(a, b):\n    return a + b\n```")
    bad.write_text("```python\ndef add(a, b):\n    import os\n    return os.environ.get('HOME')\n```")
    assert run("verify", f, good)[0] == 0
    code, out = run("verify", f, bad)
    assert code == 1 and "Wrong Answer" in out
