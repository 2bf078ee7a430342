"""SDPO steps on a real (tiny) model: what changes, what must not, and that it learns."""

import pytest
import torch

from adapters.options import LoraOptions, SdpoOptions
from adapters.trainer import DistillSample
from service import prompts, templates
from service.engines.base import SamplingParams

QUESTION = "Write a Python function `add(a, b)` that returns the sum of a and b, in a ```python block."


@pytest.fixture(scope="module")
def failed_attempt(tiny_deps):
    """A real attempt of the tiny model and the real verifier's feedback on it."""
    from sandbox.specs import PythonTestsSpec

    d = tiny_deps
    spec = PythonTestsSpec(type="python_tests", format="assert", entry_point="add",
                           tests="def check(candidate):\n    assert candidate(2, 3) == 5\n    assert candidate(-1, 1) == 7\n")
    prompt = prompts.render(d.tokenizer, prompts.messages(QUESTION))
    outs = d.engine.generate([prompt], None, SamplingParams(n=2, max_new_tokens=48, seed=3))[0]
    vs = d.verify(spec, [o.text for o in outs], [o.finish_reason == "length" for o in outs])
    assert all(v.verdict == "fail" for v in vs)  # the second assert is unsatisfiable
    teacher = prompts.render(d.tokenizer, prompts.messages(templates.reprompt(QUESTION, vs[0].feedback)))
    return [DistillSample(prompt, teacher, o.token_ids) for o in outs], vs[0].feedback


def _opts(**kw) -> SdpoOptions:
    # The top-k JSD loss these tests were written for. model_copy does not validate: the
    # collapse tests ask for step sizes beyond what a request may.
    return SdpoOptions(token_level=False).model_copy(update=kw)


def _base_params(model):
    return {n: p.detach().clone() for n, p in model.named_parameters() if "lora_" not in n}


def test_sdpo_step_changes_only_lora_and_reduces_divergence(tiny_deps, failed_attempt):
    d = tiny_deps
    samples, feedback = failed_attempt
    assert feedback  # real feedback text reached the teacher prompt
    adapter = d.pool.create("t-step", LoraOptions(rank=8, alpha=16), seed=0)
    try:
        base = _base_params(d.pool.model)
        lora_before = {n: t.clone() for n, t in d.pool.weights(adapter).items()}
        rep = d.trainer.train_round(adapter, samples, _opts(steps=3, lr=1e-3, teacher_ema=1.0))
        after = _base_params(d.pool.model)
        assert base.keys() == after.keys()
        assert all(torch.equal(base[n], after[n]) for n in base), "base weights must stay bit-identical"
        changed = [n for n, t in d.pool.weights(adapter).items() if not torch.equal(t, lora_before[n])]
        assert changed, "LoRA weights must move"
        assert rep.loss_before > 0
        assert rep.loss_after < rep.loss_before, rep
        assert adapter.version == 1
    finally:
        d.pool.delete(adapter)


def test_gradients_reach_only_lora_parameters(tiny_deps, failed_attempt):
    d = tiny_deps
    samples, _ = failed_attempt
    adapter = d.pool.create("t-grad", LoraOptions(rank=4, alpha=8), seed=0)
    try:
        cfg = _opts(alpha=0.5)
        teacher = d.trainer.teacher_cache(adapter, samples, cfg)
        assert not teacher[0].requires_grad and teacher[0].grad_fn is None
        d.trainer._pass(adapter, samples, d.trainer._pack(samples), teacher, None, cfg, backward=True)
        with_grad = {n for n, p in d.pool.model.named_parameters() if p.grad is not None}
        assert with_grad, "the student must receive gradients"
        assert all(f".{adapter.name}." in n for n in with_grad), sorted(with_grad)[:3]
        for p in d.pool.model.parameters():
            p.grad = None
    finally:
        d.pool.delete(adapter)


def test_collapse_guard_keeps_best_weights(tiny_deps, failed_attempt):
    d = tiny_deps
    samples, _ = failed_attempt
    adapter = d.pool.create("t-collapse", LoraOptions(rank=8, alpha=16), seed=0)
    try:
        # An absurd learning rate blows the divergence up; the guard must stop and restore.
        rep = d.trainer.train_round(adapter, samples, _opts(steps=4, lr=5e-1, max_grad_norm=1e9, teacher_ema=1.0))
        assert rep.kept_step < len(rep.step_divergence) or rep.collapsed
        assert rep.loss_after == min(rep.step_divergence)
    finally:
        d.pool.delete(adapter)


def test_overshooting_step_is_undone_and_retried_smaller(tiny_deps, failed_attempt):
    """A step size that overshoots must not throw the round away (the old guard kept the
    start, so sdpo sampled exactly like best-of-k): the update is undone, redone at half the
    step from the same point, and the round still ends closer to the teacher."""
    d = tiny_deps
    samples, _ = failed_attempt
    adapter = d.pool.create("t-backtrack", LoraOptions(rank=8, alpha=16), seed=0)
    try:
        base = _base_params(d.pool.model)
        rep = d.trainer.train_round(adapter, samples, _opts(steps=6, lr=3e-2, teacher_ema=1.0))
        assert rep.backtracks >= 1 and rep.final_lr < 3e-2, rep
        assert rep.loss_after < rep.loss_before, rep
        assert rep.kept_step >= 1 and not rep.collapsed, rep
        assert all(torch.equal(p, base[n]) for n, p in d.pool.model.named_parameters() if "lora_" not in n)
    finally:
        d.pool.delete(adapter)


def test_shared_prefix_encoding_gives_the_same_teacher_loss_and_gradients(tiny_deps, failed_attempt):
    """Encoding a micro-batch's common prompt prefix once (student: the whole prompt; teacher:
    up to where the feedback differs) is exact: the teacher's hidden states, the divergence,
    the token log-probabilities and every LoRA gradient match the per-sample path."""
    d = tiny_deps
    samples, feedback = failed_attempt
    other = prompts.render(d.tokenizer, prompts.messages(templates.reprompt(QUESTION, "Wrong answer on add(0, 0).")))
    samples = [samples[0], DistillSample(samples[1].student_prompt, other, samples[1].response)]
    adapter = d.pool.create("t-share", LoraOptions(rank=4, alpha=8), seed=0)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():  # lora_B starts at zero: move it so that the adapter shapes the outputs
        for p in d.pool.parameters(adapter).values():
            p.add_(0.02 * torch.randn(p.shape, generator=g))
    params = d.pool.parameters(adapter)
    opts = _opts(token_level=True)
    got = {}
    try:
        for share in (False, True):
            d.trainer.share_prefix = share
            teacher = d.trainer.teacher_cache(adapter, samples, opts)
            for p in params.values():
                p.grad = None
            div, toks = d.trainer._pass(adapter, samples, d.trainer._pack(samples), teacher, None, opts, backward=True)
            got[share] = (teacher, div, toks, {n: p.grad.clone() for n, p in params.items()})
    finally:
        d.trainer.share_prefix = True
        for p in params.values():
            p.grad = None
        d.pool.delete(adapter)
    (h0, l0), div0, tok0, g0 = got[False]
    (h1, l1), div1, tok1, g1 = got[True]
    torch.testing.assert_close(h1, h0, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(l1, l0, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(tok1, tok0, rtol=1e-4, atol=1e-5)
    assert div1 == pytest.approx(div0, rel=1e-4, abs=1e-7)
    assert any(v.abs().max() > 0 for v in g0.values())
    for n in g0:
        scale = float(g0[n].abs().max()) + 1e-12
        assert float((g1[n] - g0[n]).abs().max()) <= 1e-3 * scale, n


def test_lora_on_the_top_blocks_stops_autograd_there_with_the_same_gradient(tiny_deps, failed_attempt):
    """`lora.layers=2`: the adapter exists in the top two blocks only, the blocks below run
    without autograd (nothing recorded, nothing saved for backward), and the gradient of the
    top blocks' LoRA equals that of an all-block adapter whose lower blocks are still the
    identity (lora_B = 0) and whose top blocks hold the same weights."""
    d = tiny_deps
    samples, _ = failed_attempt
    top = d.pool.num_layers - 2
    full = d.pool.create("t-full", LoraOptions(rank=4, alpha=8), seed=0)
    part = d.pool.create("t-top2", LoraOptions(rank=4, alpha=8, layers=2), seed=0)
    blocks = d.pool.base.get_decoder().layers
    seen: dict[int, bool] = {}
    hooks = [blocks[i].register_forward_hook(
        lambda m, a, out, i=i: seen.__setitem__(i, (out[0] if isinstance(out, tuple) else out).requires_grad))
        for i in (0, top - 1, top)]
    opts = _opts(token_level=True)
    g = torch.Generator().manual_seed(0)
    try:
        pf, pp = d.pool.parameters(full), d.pool.parameters(part)
        assert pp and all(f".layers.{top}." in n or f".layers.{top + 1}." in n for n in pp)
        with torch.no_grad():
            for n, p in pp.items():
                p.copy_(0.02 * torch.randn(p.shape, generator=g))
                pf[n.replace(f".{part.name}.", f".{full.name}.")].copy_(p)
        grads = {}
        for a in (full, part):
            teacher = d.trainer.teacher_cache(a, samples, opts)
            seen.clear()
            d.trainer._pass(a, samples, d.trainer._pack(samples), teacher, None, opts, backward=True)
            grads[a.name] = {n.replace(f".{a.name}.", "."): p.grad.clone() for n, p in d.pool.parameters(a).items()
                             if p.grad is not None}
            if a is part:
                assert seen == {0: False, top - 1: False, top: True}
            else:
                assert seen[0] and seen[top]
    finally:
        for h in hooks:
            h.remove()
        for a in (full, part):
            for p in d.pool.parameters(a).values():
                p.grad = None
            d.pool.delete(a)
    gp = grads[part.name]
    assert set(gp) < set(grads[full.name]) and any(v.abs().max() > 0 for v in gp.values())
    for n, v in gp.items():
        scale = float(v.abs().max()) + 1e-12
        assert float((grads[full.name][n] - v).abs().max()) <= 1e-4 * scale, n


def test_max_samples_distils_only_the_first_attempts(tiny_deps, failed_attempt):
    d = tiny_deps
    samples, _ = failed_attempt
    adapter = d.pool.create("t-max", LoraOptions(rank=4, alpha=8), seed=0)
    try:
        rep = d.trainer.train_round(adapter, samples, _opts(steps=1, max_samples=1))
    finally:
        d.pool.delete(adapter)
    assert (rep.samples, rep.tokens) == (1, len(samples[0].response))
    assert len(samples) == 2 and len(samples[1].response) > 0


def test_unguarded_round_takes_every_step_and_no_measuring_pass(tiny_deps, failed_attempt):
    """guard: false (the paper preset): `steps` updates, each one followed by the teacher's EMA,
    none undone, and no pass after the last; the guarded round of the same overshooting lr
    backtracks instead."""
    d = tiny_deps
    samples, _ = failed_attempt
    adapter = d.pool.create("t-unguarded", LoraOptions(rank=4, alpha=8), seed=0)
    try:
        teacher_before = {n: t.clone() for n, t in adapter.ema.items()}
        rep = d.trainer.train_round(adapter, samples, _opts(steps=3, lr=5e-1, max_grad_norm=1e9, teacher_ema=0.5,
                                                            guard=False))
        assert rep.kept_step == 3 and rep.backtracks == 0 and not rep.collapsed
        assert len(rep.step_divergence) == 3 and rep.guard_s == 0.0
        assert rep.loss_after != rep.loss_after  # NaN: not measured
        moved = [n for n, t in adapter.ema.items() if not torch.equal(t, teacher_before[n])]
        assert moved, "the EMA teacher must follow the student"
        assert adapter.version == 1
    finally:
        d.pool.delete(adapter)
    guarded = d.pool.create("t-guarded", LoraOptions(rank=4, alpha=8), seed=0)
    try:
        rep = d.trainer.train_round(guarded, samples, _opts(steps=3, lr=5e-1, max_grad_norm=1e9, teacher_ema=0.5))
        assert rep.backtracks > 0 and rep.kept_step < 3, rep
    finally:
        d.pool.delete(guarded)


def _gate_samples(d, samples):
    """The same failed attempt twice: once under a teacher prompt that asks for exactly it (the
    teacher likes it more than the student: the gate drops it), once under one that asks for
    something else (the teacher likes it less: kept)."""
    s = samples[0]
    text = d.tokenizer.decode(s.response, skip_special_tokens=True)
    liked = prompts.render(d.tokenizer, prompts.messages(f"Reply with exactly this text and nothing else:\n\n{text}"))
    unliked = prompts.render(d.tokenizer, prompts.messages("Reply with the single word NO and nothing else."))
    return DistillSample(s.student_prompt, liked, s.response), DistillSample(s.student_prompt, unliked, s.response)


def test_gate_distils_only_the_failures_the_teacher_likes_less(tiny_deps, failed_attempt):
    d = tiny_deps
    liked, unliked = _gate_samples(d, failed_attempt[0])
    adapter = d.pool.create("t-gate", LoraOptions(rank=4, alpha=8), seed=0)
    try:
        # the margins the gate reports are the sequence log-probs' difference, measured apart
        student = d.trainer.sequence_logprobs(adapter, liked.student_prompt, [liked.response])[0]
        expect = [d.trainer.sequence_logprobs(adapter, s.teacher_prompt, [s.response])[0] - student
                  for s in (liked, unliked)]
        assert expect[0] > 0 > expect[1], expect
        rep = d.trainer.train_round(adapter, [liked, unliked], _opts(steps=1, gate=True, micro_batch=1))
        assert rep.gate_examined == 2 and rep.samples == 1, rep
        assert rep.gate_margins == pytest.approx(expect, abs=1e-3)
        assert rep.tokens == len(unliked.response) and rep.gate_s > 0
    finally:
        d.pool.delete(adapter)


def test_gated_round_trains_as_a_round_on_the_kept_failures_alone(tiny_deps, failed_attempt):
    """The teacher cache the gate hands on is the one the round would have built for the kept
    failures: the same update, weight for weight."""
    d = tiny_deps
    liked, unliked = _gate_samples(d, failed_attempt[0])
    weights = []
    for name, batch, gate in (("t-gated", [liked, unliked], True), ("t-kept", [unliked], False)):
        adapter = d.pool.create(name, LoraOptions(rank=4, alpha=8), seed=0)
        try:
            # one failure per micro-batch: the teacher then encodes the kept failure alone in both
            # rounds, and Adam's sign-like first step cannot magnify batching's float noise
            d.trainer.train_round(adapter, batch, _opts(steps=2, lr=1e-3, gate=gate, guard=False, micro_batch=1))
            weights.append({n: t.clone() for n, t in d.pool.weights(adapter).items()})
        finally:
            d.pool.delete(adapter)
    gated, kept = weights
    assert any(float(t.abs().sum()) > 0 for n, t in kept.items() if "lora_B" in n), "the round must train"
    # parameter names carry the job id; both adapters list the same layers in the same order
    for (n, a), b in zip(kept.items(), gated.values()):
        assert torch.allclose(a, b, atol=1e-6), n


def test_gate_that_keeps_nothing_trains_nothing(tiny_deps, failed_attempt):
    d = tiny_deps
    liked, _ = _gate_samples(d, failed_attempt[0])
    adapter = d.pool.create("t-gate-none", LoraOptions(rank=4, alpha=8), seed=0)
    try:
        before = {n: t.clone() for n, t in d.pool.weights(adapter).items()}
        rep = d.trainer.train_round(adapter, [liked, liked], _opts(steps=2, gate=True))
        assert (rep.gate_examined, rep.samples, rep.step_divergence) == (2, 0, [])
        assert all(torch.equal(t, before[n]) for n, t in d.pool.weights(adapter).items())
        assert adapter.version == 0  # the engine keeps serving the adapter it has
    finally:
        d.pool.delete(adapter)


def test_gate_stops_scoring_once_max_samples_are_kept(tiny_deps, failed_attempt):
    d = tiny_deps
    liked, unliked = _gate_samples(d, failed_attempt[0])
    adapter = d.pool.create("t-gate-cap", LoraOptions(rank=4, alpha=8), seed=0)
    try:
        rep = d.trainer.train_round(adapter, [unliked, liked, liked], _opts(steps=1, gate=True, max_samples=1,
                                                                             micro_batch=1))
        assert (rep.gate_examined, rep.samples) == (1, 1), rep
    finally:
        d.pool.delete(adapter)


def test_grpo_term_raises_the_better_failure_and_lowers_the_worse(tiny_deps, failed_attempt):
    """Teacher prompt = student prompt, so the token-level distillation has no gradient at the
    round's start and only the group-relative term moves the adapter: up on the attempt that
    passed more cases (advantage +1), down on the other (-1)."""
    d = tiny_deps
    samples, _ = failed_attempt
    better = DistillSample(samples[0].student_prompt, samples[0].student_prompt, samples[0].response, advantage=1.0)
    worse = DistillSample(samples[1].student_prompt, samples[1].student_prompt, samples[1].response, advantage=-1.0)
    prompt = better.student_prompt
    adapter = d.pool.create("t-grpo", LoraOptions(rank=4, alpha=8), seed=0)
    try:
        before = d.trainer.sequence_logprobs(adapter, prompt, [better.response, worse.response])
        opts = SdpoOptions(steps=1, lr=1e-2, guard=False, grpo_weight=1.0)
        d.trainer.train_round(adapter, [better, worse], opts)
        after = d.trainer.sequence_logprobs(adapter, prompt, [better.response, worse.response])
        assert after[0] > before[0] and after[1] < before[1], (before, after)
    finally:
        d.pool.delete(adapter)
    # the same attempts with the advantages swapped move the other way
    flipped = d.pool.create("t-grpo-flipped", LoraOptions(rank=4, alpha=8), seed=0)
    try:
        swapped = [DistillSample(x.student_prompt, x.teacher_prompt, x.response, advantage=-x.advantage) for x in (better, worse)]
        d.trainer.train_round(flipped, swapped, opts)
        again = d.trainer.sequence_logprobs(flipped, prompt, [better.response, worse.response])
        assert again[0] < before[0] and again[1] > before[1], (before, again)
    finally:
        d.pool.delete(flipped)
