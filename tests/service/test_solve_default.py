"""The default model end to end (Qwen2.5-Coder-0.5B-Instruct): the main job of the README.

Slow-ish (a minute or two on 2 cores) but it is what users run, so CI runs it."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from service.schemas import SolveResult

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "fibonacci_json.yaml"


def test_bundled_examples_default_to_best_of_k():
    """The default strategy costs no training (README, "Which strategy by default"); an
    example that pinned sdpo would bill every newcomer for it."""
    from service.problem_file import load_problem_file

    for path in sorted((ROOT / "examples").glob("*.yaml")):
        assert load_problem_file(path).strategy == "best_of_k", path.name


@pytest.mark.slow
def test_tta_solve_bundled_example_on_default_model():
    """The main job with SDPO opted in: the path where every part (engine, verifier, trainer,
    adapter) runs, where the default strategy would skip the trainer."""
    env = {**os.environ, "TTA_MODEL": "default"}
    proc = subprocess.run(
        [sys.executable, "-m", "service.cli", "solve", str(EXAMPLE), "--json", "--max-attempts", "8", "--seed", "0",
         "--strategy", "sdpo"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=1200,
    )
    assert proc.returncode in (0, 1), proc.stderr[-2000:]
    res = SolveResult.model_validate(json.loads(proc.stdout))
    assert res.model == "default" and res.strategy == "sdpo"
    assert res.status in ("solved", "exhausted") and res.attempts_used <= 8
    assert (proc.returncode == 0) == (res.status == "solved")
    for rnd in res.rounds[:-1]:  # every failed round but the last is followed by SDPO steps
        assert rnd.passes == 0 and rnd.train is not None and rnd.train.steps >= 1
        # the default (token-level) loss reports the mean student-teacher log-ratio on the
        # sampled tokens, which may have either sign; what must hold is that it was measured
        assert rnd.train.loss_before is not None and rnd.train.loss_before != 0.0
    if res.status == "solved":
        assert res.attempts[res.solved_attempt].verdict == "pass"


@pytest.fixture(scope="module")
def default_deps():
    from service.settings import Settings
    from service.wiring import build_solver_deps

    return build_solver_deps(Settings(model="default", engine="transformers"))


@pytest.mark.slow
def test_sdpo_round_on_default_model_reduces_divergence(default_deps):
    """One SDPO round on real failed attempts with real feedback moves the student toward
    the feedback-informed teacher, and leaves the base weights alone."""
    import torch

    from adapters.options import SdpoOptions
    from adapters.trainer import DistillSample
    from service import prompts, templates
    from service.engines.base import SamplingParams
    from service.problem_file import load_problem_file

    d = default_deps
    pf = load_problem_file(EXAMPLE)
    q = pf.problem.question
    prompt = prompts.render(d.tokenizer, prompts.messages(q))
    outs = d.engine.generate([prompt], None, SamplingParams(n=8, max_new_tokens=48, seed=5))[0]
    vs = d.verify(pf.verifier, [o.text for o in outs], [o.finish_reason == "length" for o in outs])
    failed = [(o, v) for o, v in zip(outs, vs) if v.verdict == "fail"]
    assert failed, "seed 5: some of 8 attempts fail (base rate ~25%)"
    samples = [DistillSample(prompt, prompts.render(d.tokenizer, prompts.messages(templates.reprompt(q, v.feedback))),
                             o.token_ids) for o, v in failed]
    adapter = d.pool.create("default-probe", pf.sdpo.lora, seed=0)
    try:
        base = {n: p.detach().clone() for n, p in d.pool.model.named_parameters() if "lora_" not in n}
        # The default steps and lr. At lr 1e-5 with bf16 training (a native-bf16 CPU) the one
        # step raised the divergence (0.00261 -> 0.00264) and backtracking rightly kept the
        # start, so the test failed on that machine while the trainer behaved as designed.
        rep = d.trainer.train_round(adapter, samples, SdpoOptions(teacher_ema=1.0, token_level=False))
        assert rep.loss_before > 0 and min(rep.step_divergence[1:] + [rep.loss_after]) < rep.loss_before, rep
        assert rep.loss_after <= rep.loss_before  # the kept weights are never worse than the start
        assert all(torch.equal(p, base[n]) for n, p in d.pool.model.named_parameters() if "lora_" not in n)
    finally:
        d.pool.delete(adapter)
