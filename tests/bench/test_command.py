"""`tta bench` and `tta bench report` without a model (a fake solve is injected)."""

import json

from rich.console import Console
from typer.testing import CliRunner

from bench import command
from service.cli import app

from .conftest import fake_result

cli = CliRunner()


def fake_solve(req, on_event=None):
    # fibonacci-json solved at attempt 3 under sdpo, attempt 5 otherwise; match-parens never
    if "Fibonacci" in req.problem.question:
        return fake_result(req, 2 if req.strategy == "sdpo" else 4)
    return fake_result(req, None)


def test_quick_preset_and_explicit_options():
    o = command.resolve({"k": 6, "n": None}, quick=True)
    assert o["set"] == "quick" and o["k"] == 6 and o["n"] == 4 and o["seeds"] == 1 and o["max_new_tokens"] == 256
    assert command.resolve({}, quick=False)["k"] == 32
    assert command.sdpo_overrides('{"top_k": 20}', rank=8, lr=1e-4, steps=None) == {
        "top_k": 20, "lr": 1e-4, "lora": {"rank": 8, "alpha": 16}}


def test_run_then_report_writes_summary_and_plots(tmp_path):
    out = tmp_path / "run"
    console = Console(file=open(tmp_path / "log.txt", "w"), width=200)
    command.run_bench({"set": "quick"}, quick=True, out=out, report=False, max_runs=None,
                      console=console, solve=fake_solve)
    recs = [json.loads(x) for x in (out / "results.jsonl").read_text().splitlines()]
    assert len(recs) == 2 * 3 * 1  # problems x strategies x seeds
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["k"] == 8 and cfg["n"] == 4 and cfg["seeds"] == [0]

    res = cli.invoke(app, ["bench", "report", str(out)])
    assert res.exit_code == 0, res.output
    assert "÷sdpo" in res.output and "time per phase" in res.output and "summary.json" in res.output
    s = json.loads((out / "summary.json").read_text())
    assert s["axes"]["attempts"]["curves"]["sdpo"]["y"] == [0, 0, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5]
    assert s["axes"]["attempts"]["ratios"]["best_of_k/sdpo"]["0.5"]["value"] == 5 / 3
    for name in ("discovery_attempts", "discovery_seconds", "discovery_tokens", "attempts_per_problem"):
        png = out / f"{name}.png"
        assert png.exists() and png.read_bytes()[:4] == b"\x89PNG"
    md = (out / "summary.md").read_text()
    assert "| sdpo |" in md and "| attempts | best_of_k |" in md and "1.67" in md  # the 5/3 ratio

    res = cli.invoke(app, ["bench", "publish", str(out), "--dest", str(tmp_path / "results")])
    assert res.exit_code == 0, res.output
    (pub,) = (tmp_path / "results").iterdir()
    assert pub.name.startswith("quick-")
    assert {"summary.json", "summary.md", "results.jsonl", "attempts_per_problem.png"} <= {f.name for f in pub.iterdir()}
    assert not (pub / "traces").exists()

    res = cli.invoke(app, ["bench", "publish", str(out), "--dest", str(tmp_path / "results"), "--name", "quick-readable"])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "results" / "quick-readable" / "summary.md").exists()
    res = cli.invoke(app, ["bench", "publish", str(out), "--dest", str(tmp_path / "results"), "--name", "../up"])
    assert res.exit_code == 2 and "publish name" in res.output
    assert not (tmp_path / "up").exists()


def test_bad_set_and_bad_report_dir_exit_2(tmp_path):
    res = cli.invoke(app, ["bench", "--set", "nope", "--out", str(tmp_path / "x")])
    assert res.exit_code == 2 and "unknown problem set" in res.output
    res = cli.invoke(app, ["bench", "--set", "quick", "--sdpo", "[1]", "--out", str(tmp_path / "x")])
    assert res.exit_code == 2 and "JSON object" in res.output
    res = cli.invoke(app, ["bench", "--set", "quick", "--lr", "5", "--out", str(tmp_path / "x")])
    assert res.exit_code == 2 and "lr" in res.output
    res = cli.invoke(app, ["bench", "report", str(tmp_path / "empty")])
    assert res.exit_code == 2 and "no finished runs" in res.output


def test_bad_options_fail_before_the_model_loads(tmp_path, monkeypatch):
    def no_model(*a, **kw):
        raise AssertionError("the model must not load for options no run could use")

    monkeypatch.setattr(command.runner, "model_solver", no_model)
    for args, says in ((["--temperature", "-1"], "sampling.temperature"),
                       (["--strategies", "sdpo,foo"], "unknown strategies ['foo']"),
                       (["--sdpo", "{bad"], "--sdpo is not valid JSON")):
        res = cli.invoke(app, ["bench", "--set", "quick", "--out", str(tmp_path / "x"), *args])
        assert res.exit_code == 2 and says in res.output, (args, res.output)
        assert "Traceback" not in res.output
    assert not (tmp_path / "x").exists()


def test_baselines_from_another_run_are_reused_when_only_sdpo_differs(tmp_path):
    console = Console(file=open(tmp_path / "log.txt", "w"), width=200)
    first = tmp_path / "first"
    command.run_bench({"set": "quick"}, quick=True, out=first, report=False, max_runs=None,
                      console=console, solve=fake_solve)
    called = []

    def counting(req, on_event=None):
        called.append(req.strategy)
        return fake_solve(req, on_event)

    second = tmp_path / "second"
    command.run_bench({"set": "quick", "sdpo": {"lr": 3e-5}}, quick=True, out=second, report=False,
                      max_runs=None, console=console, solve=counting, baselines_from=first)
    assert called == ["sdpo"] * 2  # 2 problems x 1 seed: only sdpo ran
    recs = [json.loads(x) for x in (second / "results.jsonl").read_text().splitlines()]
    imported = [r for r in recs if r.get("imported_from")]
    assert len(imported) == 4 and {r["strategy"] for r in imported} == {"best_of_k", "multi_turn"}
    assert json.loads((second / "config.json").read_text())["sdpo"] == {"lr": 3e-5}
    # rerunning imports nothing twice and runs nothing
    command.run_bench({"set": "quick", "sdpo": {"lr": 3e-5}}, quick=True, out=second, report=False,
                      max_runs=None, console=console, solve=counting, baselines_from=first)
    assert called == ["sdpo"] * 2 and len((second / "results.jsonl").read_text().splitlines()) == 6

    # other sampling: not comparable, refused before anything is written
    res = cli.invoke(app, ["bench", "--quick", "--k", "6", "--baselines-from", str(first),
                           "--out", str(tmp_path / "third")])
    assert res.exit_code == 2 and "not comparable" in res.output and "k" in res.output
    res = cli.invoke(app, ["bench", "--quick", "--baselines-from", str(tmp_path),
                           "--out", str(tmp_path / "third")])
    assert res.exit_code == 2 and "not a benchmark run directory" in res.output
    assert not (tmp_path / "third").exists()
