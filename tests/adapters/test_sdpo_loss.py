"""The maths of the SDPO loss: `per_token_loss`, the function the trainer runs, and its parts."""

import math

import pytest
import torch
import torch.nn.functional as F

from adapters.options import SdpoOptions
from adapters.sdpo import (
    divergence,
    group_advantages,
    importance_weights,
    per_token_loss,
    student_topk,
    token_level_loss,
    topk_divergence,
    with_tail,
)

V = 50
# The top-k JSD loss (token_level off), the setting most of these tests exercise.
JSD = SdpoOptions(token_level=False)


def sdpo_loss(student_logits, teacher_logits, tokens, mask, opts=JSD, sampling_tok_log=None):
    """`per_token_loss` reduced as the trainer reduces it: only the response positions
    (mask 1) are passed, and the loss and the monitored divergence are their means."""
    keep = mask.bool()
    s_log = F.log_softmax(student_logits.float(), -1)[keep]
    t_log = F.log_softmax(teacher_logits.float(), -1)[keep].detach()
    old = None if sampling_tok_log is None else sampling_tok_log[keep]
    loss, div, _ = per_token_loss(s_log, lambda idx: t_log if idx is None else t_log.gather(-1, idx),
                                  tokens[keep], opts, old)
    return loss.mean(), div.mean()


def _logits(*shape, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, V, generator=g) * 2.0


def _toks(*shape, seed=0):
    g = torch.Generator().manual_seed(seed + 100)
    return torch.randint(0, V, shape, generator=g)


@pytest.mark.parametrize("alpha", [0.0, 0.3, 0.5, 1.0])
@pytest.mark.parametrize("top_k", [None, 10])
@pytest.mark.parametrize("token_level", [False, True])
def test_loss_zero_when_teacher_equals_student(alpha, top_k, token_level):
    logits = _logits(2, 7)
    mask = torch.ones(2, 7)
    cfg = SdpoOptions(alpha=alpha if not token_level else 1.0, top_k=top_k, token_level=token_level)
    loss, div = sdpo_loss(logits, logits.clone(), _toks(2, 7), mask, cfg)
    assert abs(loss.item()) < 1e-6 and abs(div.item()) < 1e-6


def test_alpha_endpoints_match_hand_computed_kl():
    p = torch.tensor([0.7, 0.2, 0.1])
    q = torch.tensor([0.2, 0.5, 0.3])
    fwd = sum(pi * math.log(pi / qi) for pi, qi in zip(p.tolist(), q.tolist()))  # KL(T||S)
    rev = sum(qi * math.log(qi / pi) for pi, qi in zip(p.tolist(), q.tolist()))  # KL(S||T)
    teacher, student = p.log(), q.log()
    assert divergence(student, teacher, 0.0).item() == pytest.approx(fwd, rel=1e-5)
    assert divergence(student, teacher, 1.0).item() == pytest.approx(rev, rel=1e-5)


def test_jsd_hand_computed_and_symmetric_at_half():
    p = torch.tensor([0.7, 0.2, 0.1])
    q = torch.tensor([0.2, 0.5, 0.3])
    m = 0.5 * p + 0.5 * q
    by_hand = 0.5 * sum(a * math.log(a / b) for a, b in zip(q.tolist(), m.tolist())) + 0.5 * sum(
        a * math.log(a / b) for a, b in zip(p.tolist(), m.tolist())
    )
    assert divergence(q.log(), p.log(), 0.5).item() == pytest.approx(by_hand, rel=1e-5)
    assert divergence(q.log(), p.log(), 0.5).item() == pytest.approx(divergence(p.log(), q.log(), 0.5).item(), rel=1e-5)
    with pytest.raises(ValueError):
        divergence(q.log(), p.log(), 1.5)


@pytest.mark.parametrize("alpha", [0.0, 0.5, 1.0])
def test_topk_with_tail_equals_full_when_k_is_vocabulary(alpha):
    s, t = _logits(3, 5, seed=1), _logits(3, 5, seed=2)
    mask = torch.ones(3, 5)
    toks = _toks(3, 5)
    full, _ = sdpo_loss(s, t, toks, mask, SdpoOptions(alpha=alpha, top_k=None, token_level=False))
    topv, _ = sdpo_loss(s, t, toks, mask, SdpoOptions(alpha=alpha, top_k=V, token_level=False))
    assert topv.item() == pytest.approx(full.item(), abs=1e-5)
    # and with a real tail the top-k value differs from the full one, but stays close
    top10, _ = sdpo_loss(s, t, toks, mask, SdpoOptions(alpha=alpha, top_k=10, token_level=False))
    assert top10.item() != pytest.approx(full.item(), abs=1e-6)


def test_tail_bucket_holds_remaining_mass():
    logp = F.log_softmax(_logits(4), dim=-1)
    idx = student_topk(logp, 5)
    tailed = with_tail(logp.gather(-1, idx))
    assert tailed.shape[-1] == 6
    assert torch.allclose(tailed.exp().sum(-1), torch.ones(4), atol=1e-5)


def test_loss_is_positionwise_so_prompt_and_padding_never_enter():
    # The trainer passes response positions only. That excludes the prompt and padding
    # exactly because each position's loss depends on that position's inputs alone.
    s, t = _logits(2, 6, seed=3), _logits(2, 6, seed=4)
    toks = _toks(2, 6)
    resp = torch.tensor([[0, 0, 1, 1, 1, 0], [0, 1, 1, 1, 1, 1]], dtype=torch.bool)
    for opts in (JSD, SdpoOptions(token_level=True)):
        def per_pos(sl, tl):
            s_log, t_log = F.log_softmax(sl, -1), F.log_softmax(tl, -1).detach()
            return per_token_loss(s_log, lambda idx: t_log if idx is None else t_log.gather(-1, idx), toks, opts)[0]

        loss = per_pos(s, t)
        # Changing anything at the other positions leaves the response positions' loss unchanged ...
        s2, t2 = s.clone(), t.clone()
        s2[~resp] = torch.randn_like(s2[~resp]) * 10
        t2[~resp] = torch.randn_like(t2[~resp]) * 10
        assert torch.allclose(per_pos(s2, t2)[resp], loss[resp], rtol=1e-6, atol=0)
        # ... and the response positions' loss sends no gradient to the other positions.
        s3 = s.clone().requires_grad_()
        per_pos(s3, t)[resp].mean().backward()
        assert torch.all(s3.grad[~resp] == 0)
        assert torch.any(s3.grad[resp] != 0)


def test_no_gradient_reaches_the_teacher():
    s = _logits(2, 4, seed=5).requires_grad_()
    t = _logits(2, 4, seed=6).requires_grad_()
    for cfg in (JSD, SdpoOptions(token_level=True, alpha=1.0), SdpoOptions(top_k=None, alpha=0.0, token_level=False)):
        loss, _ = sdpo_loss(s, t, _toks(2, 4), torch.ones(2, 4), cfg)
        loss.backward()
        assert t.grad is None
        assert s.grad is not None and s.grad.abs().sum() > 0
        s.grad = None


def test_token_level_gradient_is_reverse_kl_score_function():
    s = torch.tensor([0.1, -0.3, 0.8]).log_softmax(-1).requires_grad_()
    t = torch.tensor([0.5, 0.2, -0.1]).log_softmax(-1)
    loss = token_level_loss(s[0], t[0])
    loss.backward()
    # d/ds [sg(s0 - t0) * s0] = (s0 - t0) at index 0, 0 elsewhere
    assert s.grad[0].item() == pytest.approx((s[0] - t[0]).item())
    assert s.grad[1].item() == 0.0


def test_token_level_monitor_refuses_a_step_toward_a_teacher_that_endorses_the_failure():
    # The teacher rates the sampled (failed) tokens above the student: the loss's descent
    # step pulls them up, which raises the monitored mean log-ratio, so backtracking (keep a
    # step only if the monitor falls) refuses it. Where the teacher rates them below the
    # student, the same step lowers the monitor and is kept.
    torch.manual_seed(0)
    toks = torch.full((6,), 2)
    cfg = SdpoOptions(token_level=True, is_clip=None)
    for shift, refused in ((1.0, True), (-1.0, False)):
        logits = torch.randn(6, 5, requires_grad=True)
        t = torch.randn(6, 5).log_softmax(-1)
        t[:, 2] += shift
        loss, div = sdpo_loss(logits.log_softmax(-1), t, toks, torch.ones(6), cfg)
        loss.backward()
        with torch.no_grad():
            _, div_after = sdpo_loss((logits - 0.05 * logits.grad).log_softmax(-1), t, toks, torch.ones(6), cfg)
        assert (div_after > div).item() is refused


def test_negative_only_pushes_down_and_never_pulls_up():
    # student over-rates token 0 (teacher finds it less likely), under-rates token 1
    s = torch.tensor([[2.0, 0.0, 0.0], [0.0, 0.0, 0.0]]).log_softmax(-1).requires_grad_()
    t = torch.tensor([[0.0, 0.0, 0.0], [0.0, 2.0, 0.0]]).log_softmax(-1)
    toks = torch.tensor([0, 1])
    loss, div = sdpo_loss(s, t, toks, torch.ones(2), SdpoOptions(token_level=True, negative_only=True, is_clip=None))
    loss.backward()
    assert s.grad[0, 0] > 0  # descent lowers the over-rated sampled token
    assert s.grad[1].abs().sum() == 0  # the under-rated one gets no push at all
    assert div.item() == pytest.approx((s[0, 0] - t[0, 0]).item() / 2)  # monitored: positive part only
    full, _ = sdpo_loss(s, t, toks, torch.ones(2), SdpoOptions(token_level=True, is_clip=None))
    s.grad = None
    full.backward()
    assert s.grad[1, 1] < 0  # the plain token-level loss would pull it up


def test_negative_only_needs_the_token_level_loss():
    from pydantic import ValidationError

    from service.schemas import SdpoOptions

    with pytest.raises(ValidationError, match="set token_level: true"):
        SdpoOptions(negative_only=True, token_level=False)
    assert SdpoOptions(negative_only=True).negative_only  # token_level is the default


def test_importance_ratio_is_clipped_and_detached():
    cur = torch.tensor([0.0, -1.0, -3.0], requires_grad=True)
    old = torch.tensor([-2.0, -1.0, -1.0])
    w = importance_weights(cur, old, clip=2.0)
    assert torch.allclose(w, torch.tensor([2.0, 1.0, math.exp(-2.0)]))
    assert not w.requires_grad
    # applied in the loss: weights scale the per-token loss
    s, t, toks = _logits(1, 3, seed=7), _logits(1, 3, seed=8), _toks(1, 3)
    base, _ = sdpo_loss(s, t, toks, torch.ones(1, 3), SdpoOptions(is_clip=2.0, token_level=False))
    s_tok = F.log_softmax(s, -1).gather(-1, toks.unsqueeze(-1)).squeeze(-1)
    same, _ = sdpo_loss(s, t, toks, torch.ones(1, 3), SdpoOptions(is_clip=2.0, token_level=False), sampling_tok_log=s_tok)
    assert same.item() == pytest.approx(base.item(), rel=1e-6)  # ratio 1 on the sampling policy
    far, _ = sdpo_loss(s, t, toks, torch.ones(1, 3), SdpoOptions(is_clip=2.0, token_level=False), sampling_tok_log=s_tok - 5)
    assert far.item() == pytest.approx(2.0 * base.item(), rel=1e-5)  # clipped at 2


def test_topk_divergence_is_zero_between_equal_distributions():
    s = F.log_softmax(_logits(2, seed=9), -1)
    idx = student_topk(s, 3)
    d = topk_divergence(s.gather(-1, idx), s.gather(-1, idx), 0.5)
    assert torch.allclose(d, torch.zeros(2), atol=1e-6)


def test_group_advantages_standardise_the_round_s_scores():
    adv = group_advantages([0.0, 0.5, 1.0, 0.5])
    assert sum(adv) == pytest.approx(0.0, abs=1e-12)
    assert sum(a * a for a in adv) / len(adv) == pytest.approx(1.0)
    assert adv[2] > adv[1] == adv[3] > adv[0]
    assert group_advantages([0.4, 0.4]) == [0.0, 0.0]  # nobody did better: no signal
    assert group_advantages([]) == []


@pytest.mark.parametrize("token_level", [False, True])
def test_grpo_term_adds_minus_w_a_grad_log_p_and_leaves_the_monitor_alone(token_level):
    s_logits = _logits(6, seed=1).requires_grad_()
    t_log = F.log_softmax(_logits(6, seed=2), -1)
    toks = _toks(6)
    adv = torch.tensor([1.5, 1.5, 1.5, -0.5, -0.5, -0.5])
    lookup = lambda idx: t_log if idx is None else t_log.gather(-1, idx)  # noqa: E731
    plain = SdpoOptions(token_level=token_level, top_k=10)
    mixed = plain.model_copy(update={"grpo_weight": 0.7})
    grads, divs = [], []
    for opts, a in ((plain, None), (mixed, adv), (mixed, None)):
        s_logits.grad = None
        loss, div, _ = per_token_loss(F.log_softmax(s_logits, -1), lookup, toks, opts, None, a)
        loss.sum().backward()
        grads.append(s_logits.grad.clone())
        divs.append(div)
    s_logits.grad = None
    F.log_softmax(s_logits, -1).gather(-1, toks[:, None])[:, 0].mul(adv).sum().backward()
    assert torch.allclose(grads[1], grads[0] - 0.7 * s_logits.grad, atol=1e-6)
    assert torch.equal(grads[2], grads[0])  # no advantages given: the plain loss
    assert torch.equal(divs[1], divs[0])
