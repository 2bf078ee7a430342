"""The llama.cpp engine against the transformers reference, on the tiny model.

llama.cpp runs the Q4_1 GGUF; the reference runs the same weights dequantized (the
materialised HF directory, bf16 or fp32 by CPU) through PEFT. They compute differently
(llama.cpp quantizes activations to 8 bits for its Q4_1 dot products, the reference may
round logits to bf16, and both sum in their own order), so greedy outputs agree only until
the first near-tie between the reference's top two logits.

Tolerance, measured here (tiny model; base, and q/v LoRA r=4 with random lora_B): logprobs
of the same tokens differ by < 0.25 nats; where greedy outputs diverged, the reference's
top-2 margin at that position was 0.0-0.25 logits (e.g. `add` vs `a` after "def "),
while agreeing positions had margins of 1-9. So the tests require: the outputs agree
token for token up to their end, or they diverge only at a position where the reference's
top-2 margin is below `TIE` = 0.5 logits, and not before `AGREE` tokens for the base model.
"""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch

pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed (the llama.cpp engine is optional)")

from adapters.options import LoraOptions  # noqa: E402
from service import prompts  # noqa: E402
from service.engines.base import SamplingParams  # noqa: E402
from service.engines.llamacpp import LlamaCppEngine  # noqa: E402

QUESTIONS = [
    "Write a Python function `add(a, b)` returning a + b, in a ```python block.",
    "What is the capital of France? Answer in one sentence.",
    "List three prime numbers.",
    "Explain in one sentence what a hash map is.",
]
ATTN = ("q_proj", "k_proj", "v_proj", "o_proj")
ALL7 = ATTN + ("gate_proj", "up_proj", "down_proj")

TIE = 0.5  # logits: a divergence is only allowed where the reference is this close to a tie
AGREE = 8  # base model: measured first divergences were later than this on QUESTIONS
NEW = 16


@pytest.fixture(scope="module")
def engine(tiny_model, tiny_deps):
    e = LlamaCppEngine(tiny_model.resolved.gguf, tiny_deps.pool, tiny_model.tokenizer, n_ctx=2048, n_seq_max=8)
    yield e
    e.close()


@pytest.fixture
def adapter(tiny_deps):
    """A job adapter whose lora_B is visibly non-zero (fresh LoRA is the identity)."""
    made = []

    def make(targets=("q_proj", "v_proj"), scale=0.2, seed=0, name="llamacpp-test"):
        a = tiny_deps.pool.create(name, LoraOptions(rank=4, alpha=8, targets=targets), seed=seed)
        perturb(tiny_deps.pool, a, scale, seed)
        made.append(a)
        return a

    yield make
    for a in made:
        tiny_deps.pool.delete(a)


def perturb(pool, a, scale, seed):
    g = torch.Generator().manual_seed(seed + 1000)
    with pool.lock, torch.no_grad():
        for n, p in pool.parameters(a).items():
            if "lora_B" in n:
                p.copy_(torch.randn(p.shape, generator=g) * scale)


def rendered(tokenizer, qs=QUESTIONS):
    return [prompts.render(tokenizer, prompts.messages(q)) for q in qs]


def greedy(n_new=NEW):
    return SamplingParams(n=1, temperature=0.0, max_new_tokens=n_new, seed=0)


def changed(xs, ys):
    """Different tokens, or the same tokens with visibly different log-probabilities."""
    for x, y in zip(xs, ys):
        if x[0].token_ids != y[0].token_ids:
            return True
        if max(abs(u - v) for u, v in zip(x[0].logprobs, y[0].logprobs)) > 0.05:
            return True
    return False


def common_prefix(a, b):
    k = 0
    while k < min(len(a), len(b)) and a[k] == b[k]:
        k += 1
    return k


def margin(model, prompt, prefix):
    """The reference's top-2 logit gap at the next position after prompt + prefix."""
    with torch.no_grad():
        logits = model(torch.tensor([prompt + prefix])).logits[0, -1].float()
    top = logits.topk(2).values
    return float(top[0] - top[1])


def assert_agree(ours, ref, ps, model, need=0):
    for o, r, p in zip(ours, ref, ps):
        a, b = o[0].token_ids, r[0].token_ids
        k = common_prefix(a, b)
        if k == min(len(a), len(b)):  # agreeing all the way: same stop decision too
            assert len(a) == len(b) or NEW in (len(a), len(b))
            continue
        assert k >= need, (k, a, b)
        gap = margin(model, p, b[:k])
        assert gap < TIE, f"diverged at token {k} where the reference was not near a tie (gap {gap:.3f})"


# -- (a) tokenisation and stop tokens -----------------------------------------------------
def test_tokenisation_and_stop_tokens_agree_with_hf(engine, tiny_model):
    tok = tiny_model.tokenizer
    msgs = [
        [{"role": "user", "content": "hi"}],
        [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Sum 2 and 3.\n```python\nx = 1\n```"}],
        [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b <ok>"}, {"role": "user", "content": "Ünïcödé ✓"}],
    ]
    for m in msgs:
        text = tok.apply_chat_template(m, add_generation_prompt=True, tokenize=False)
        ids = prompts.render(tok, m)
        assert engine.tokenize(text) == ids
        assert engine._check_prompt(ids) == ids  # no BOS doubling to undo here
    ll = engine.ll
    assert engine.stop_ids == set(tiny_deps_stop_ids(tiny_model))
    for t in engine.stop_ids:
        assert ll.llama_vocab_is_eog(engine.vocab, t)
    assert ll.llama_vocab_eos(engine.vocab) in engine.stop_ids


def tiny_deps_stop_ids(lm):
    from adapters.lifecycle import AdapterPool
    from service.engines.transformers import TransformersEngine

    return TransformersEngine(AdapterPool(lm.model), lm.tokenizer, lm.device).stop_ids


# -- (b) greedy agreement with the reference, base model ------------------------------------
def test_greedy_base_agrees_with_transformers(engine, tiny_deps, tiny_model):
    ps = rendered(tiny_model.tokenizer)[:3]
    ours = engine.generate(ps, None, greedy())
    ref = tiny_deps.engine.generate(ps, None, greedy())
    with tiny_deps.pool.lock, tiny_deps.pool.base_only() as model:
        assert_agree(ours, ref, ps, model, need=AGREE)
    # Same tokens -> nearly the same log-probabilities (T=1 when greedy).
    for o, r in zip(ours, ref):
        k = common_prefix(o[0].token_ids, r[0].token_ids)
        for x, y in zip(o[0].logprobs[:k], r[0].logprobs[:k]):
            assert abs(x - y) < 0.25


# -- (c) adapters: agreement, effect, versions ---------------------------------------------
def test_adapter_matches_peft_and_versions_are_never_stale(engine, tiny_deps, tiny_model, adapter):
    ps = rendered(tiny_model.tokenizer)[:2]
    a = adapter()
    base = engine.generate(ps, None, greedy())
    ours = engine.generate(ps, a, greedy())
    ref = tiny_deps.engine.generate(ps, a, greedy())
    with tiny_deps.pool.lock:
        assert_agree(ours, ref, ps, tiny_deps.pool.activate(a))
    assert changed(ours, base)
    assert engine.loaded_adapters() == {a.name: 0}
    old = engine._adapters[a.name].handle

    perturb(tiny_deps.pool, a, 0.2, seed=1)  # what a training round does ...
    a.version += 1  # ... and then it bumps the version
    ours2 = engine.generate(ps, a, greedy())
    ref2 = tiny_deps.engine.generate(ps, a, greedy())
    with tiny_deps.pool.lock:
        assert_agree(ours2, ref2, ps, tiny_deps.pool.activate(a))
    assert changed(ours2, ours)
    assert engine.loaded_adapters() == {a.name: 1}
    assert engine._adapters[a.name].handle != old  # old handle freed, a fresh one serves v1

    # A job's end (adapter deleted from the pool) frees its handle at the next call.
    tiny_deps.pool.delete(a)
    engine.generate(ps[:1], None, greedy(2))
    assert engine.loaded_adapters() == {}
    assert list(engine._dir.iterdir()) == []  # no adapter files left behind


# -- (d) each supported target set converts and loads -----------------------------------------
@pytest.mark.parametrize("targets", [ATTN, ALL7], ids=["attention", "all-linear"])
def test_target_sets_convert_and_load(engine, tiny_deps, tiny_model, adapter, targets):
    a = adapter(targets=targets, scale=0.1, name=f"llamacpp-{len(targets)}")
    ps = rendered(tiny_model.tokenizer)[:1]
    ours = engine.generate(ps, a, greedy(12))
    ref = tiny_deps.engine.generate(ps, a, greedy(12))
    with tiny_deps.pool.lock:
        assert_agree(ours, ref, ps, tiny_deps.pool.activate(a))
    assert engine.loaded_adapters()[a.name] == 0


# -- (e) sampling contract ---------------------------------------------------------------
def test_seeds_logprobs_and_finish_reasons(engine, tiny_model):
    ps = rendered(tiny_model.tokenizer)[:1]
    s = SamplingParams(n=4, temperature=1.0, top_p=0.95, max_new_tokens=12, seed=3)
    a = engine.generate(ps, None, s)[0]
    b = engine.generate(ps, None, s)[0]
    c = engine.generate(ps, None, replace(s, seed=4))[0]
    assert [x.token_ids for x in a] == [x.token_ids for x in b]
    assert [x.token_ids for x in a] != [x.token_ids for x in c]
    assert len({tuple(x.token_ids) for x in a}) > 1  # rows differ within one call
    for x in a + c:
        assert len(x.logprobs) == len(x.token_ids) > 0
        assert all(math.isfinite(v) and v <= 0 for v in x.logprobs)
        stopped = x.token_ids[-1] in engine.stop_ids
        assert x.finish_reason == ("stop" if stopped else "length")
        assert stopped or len(x.token_ids) == 12
    short = engine.generate(ps, None, replace(s, max_new_tokens=2))[0]
    assert all(x.finish_reason == "length" and len(x.token_ids) == 2 for x in short)


def test_parallel_and_sequential_decode_agree(engine, tiny_model):
    """Both decode modes sample each row from the same per-row generator; greedy rows
    must agree over the measured prefix (batch shapes change float summation order)."""
    ps = rendered(tiny_model.tokenizer)[:2]
    s = SamplingParams(n=3, temperature=0.0, max_new_tokens=16, seed=0)
    par = engine.generate(ps, None, s)
    engine.parallel = False
    try:
        seq = engine.generate(ps, None, s)
    finally:
        engine.parallel = True
    for p_rows, s_rows in zip(par, seq):
        for x, y in zip(p_rows, s_rows):
            assert common_prefix(x.token_ids, y.token_ids) >= min(AGREE, len(x.token_ids))


# -- (f) the solve loop on this engine -----------------------------------------------------
def test_sdpo_solve_end_to_end(engine, tiny_deps):
    from service.solver import Solver
    from tests.engine_cases import unsolvable_sdpo_request

    req = unsolvable_sdpo_request()
    res = Solver(replace(tiny_deps, engine=engine)).solve(req)
    assert res.engine == "llamacpp" and res.status == "exhausted", res.reason
    assert res.attempts_used == 4 and [len(r.attempts) for r in res.rounds] == [2, 2]
    assert res.rounds[0].train is not None and res.rounds[1].adapter_version == 1
    assert not tiny_deps.pool.adapters
    engine.generate(rendered(tiny_deps.tokenizer)[:1], None, greedy(1))
    assert engine.loaded_adapters() == {}
