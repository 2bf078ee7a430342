"""The SDPO distillation loss: pure functions of log-probabilities.

Student: pi_theta(. | x, y_<t), the model with the request's LoRA on its own attempt y.
Teacher: sg[pi(. | x, f, y_<t)], the same model shown the verifier's feedback f, scoring
the same tokens y. The loss pulls the student's next-token distribution toward the
teacher's at every response position (Huebotter et al., 2026, "Reinforcement Learning
via Self-Distillation"; the knobs mirror their reference configuration).

`per_token_loss` is the loss the service runs (the trainer sums it over a round's response
tokens and divides by their count); the functions above it are its parts. The knobs it reads
are `adapters.options.SdpoOptions`.

Conventions: all log-probabilities are natural-log, computed in float32; "per-token"
tensors have the shape of `tokens`, one entry per response position. Nothing here touches a
model: the trainer feeds these functions.
"""

from __future__ import annotations

import math
from typing import Callable

import torch

from adapters.options import SdpoOptions

# log(1 - sum p) is undefined when the top-k already hold all the mass (k = vocabulary);
# capping the log-sum just below 0 gives the tail a vanishing, finite probability.
_TAIL_LOGSUM_CAP = -1e-7


def kl(p_log: torch.Tensor, q_log: torch.Tensor) -> torch.Tensor:
    """KL(p || q) over the last dimension, from log-probabilities. 0 * log 0 counts as 0."""
    p = p_log.exp()
    return torch.where(p > 0, p * (p_log - q_log), torch.zeros_like(p)).sum(-1)


def divergence(student_log: torch.Tensor, teacher_log: torch.Tensor, alpha: float) -> torch.Tensor:
    """Per-position divergence between two distributions given as log-probabilities.

    alpha = 0: forward KL(teacher || student); alpha = 1: reverse KL(student || teacher)
    (the paper's objective); in between: the generalised Jensen-Shannon divergence
    (1 - alpha) KL(S || M) + alpha KL(T || M) with M = (1 - alpha) S + alpha T.
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must lie in [0, 1], got {alpha}")
    if alpha == 0.0:
        return kl(teacher_log, student_log)
    if alpha == 1.0:
        return kl(student_log, teacher_log)
    a = torch.tensor(alpha, dtype=student_log.dtype, device=student_log.device)
    mix_log = torch.logaddexp(student_log + torch.log1p(-a), teacher_log + torch.log(a))
    return (1 - a) * kl(student_log, mix_log) + a * kl(teacher_log, mix_log)


def with_tail(topk_log: torch.Tensor) -> torch.Tensor:
    """Append one bucket holding the probability mass outside the given top-k entries."""
    logsum = torch.logsumexp(topk_log, dim=-1, keepdim=True).clamp(max=_TAIL_LOGSUM_CAP)
    return torch.cat([topk_log, torch.log(-torch.expm1(logsum))], dim=-1)


def student_topk(student_log: torch.Tensor, k: int) -> torch.Tensor:
    """Indices of the student's k most likely tokens (the reference distils on the
    student's support, so the teacher is read at the same indices)."""
    return student_log.detach().topk(min(k, student_log.shape[-1]), dim=-1).indices


def topk_divergence(student_topk_log: torch.Tensor, teacher_topk_log: torch.Tensor, alpha: float) -> torch.Tensor:
    """Divergence over k entries plus the tail bucket (both tensors gathered at the same indices)."""
    return divergence(with_tail(student_topk_log), with_tail(teacher_topk_log), alpha)


def token_level_loss(
    student_tok_log: torch.Tensor, teacher_tok_log: torch.Tensor, negative_only: bool = False
) -> torch.Tensor:
    """Reverse KL estimated on the sampled tokens: sg(log pi_s - log pi_t) * log pi_s.

    Its gradient is the score-function (REINFORCE) estimate of grad KL(S || T) on tokens
    sampled from the student; its value is not a divergence (the trainer monitors the
    log-ratio instead, see `per_token_loss`).

    `negative_only` keeps the positive log-ratios only: a failed attempt's tokens that the
    teacher (shown the feedback) finds less likely than the student does are pushed down, and
    nothing is pulled up. The mass freed goes to the student's own alternatives in proportion
    to their probability, not to the teacher's: for a model whose feedback-conditioned
    predictions are worse than its own (the 0.5B default on HumanEval), that keeps the
    teacher's credit assignment (which tokens the feedback implicates) without its bias.
    """
    ratio = (student_tok_log - teacher_tok_log).detach()
    if negative_only:
        ratio = ratio.clamp(min=0.0)
    return ratio * student_tok_log


def importance_weights(
    student_tok_log: torch.Tensor, sampling_tok_log: torch.Tensor, clip: float
) -> torch.Tensor:
    """pi_theta(y_t) / pi_sampling(y_t), clamped above at `clip`; no gradient flows."""
    log_ratio = (student_tok_log - sampling_tok_log).detach().clamp(-20.0, 20.0)
    return log_ratio.exp().clamp(max=clip)


# Given indices [..., m] (or None for the whole vocabulary), the teacher's log-probabilities
# there. A lookup rather than a tensor lets the trainer avoid materialising the teacher's
# full [tokens, vocab] logits: it reads only the k rows of the output layer it needs.
TeacherLookup = Callable[[torch.Tensor | None], torch.Tensor]


def group_advantages(scores: list[float]) -> list[float]:
    """GRPO's advantage: each score minus the group's mean, over the group's standard deviation
    (population); all zeros when every score is the same (no attempt did better than another)."""
    if not scores:
        return []
    mean = sum(scores) / len(scores)
    std = math.sqrt(sum((s - mean) ** 2 for s in scores) / len(scores))
    if std < 1e-8:
        return [0.0] * len(scores)
    return [(s - mean) / std for s in scores]


def per_token_loss(
    student_log: torch.Tensor,
    teacher_at: TeacherLookup,
    tokens: torch.Tensor,
    opts: SdpoOptions,
    sampling_tok_log: torch.Tensor | None = None,
    advantage: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The SDPO loss at each response position: what the trainer runs, and what the tests check.

    `student_log [..., V]` are the student's log-probabilities, `tokens [...]` the attempt's
    tokens y_t (what each position predicts), `sampling_tok_log [...]` the log-probabilities
    of those tokens under the adapter the round started from (None: no importance ratio),
    `advantage [...]` each position's attempt's group-relative advantage (`opts.grpo_weight`
    mixes in -w * A * log pi_s(y_t), REINFORCE on the sampled tokens: exact on the round's
    first step, where the student is the policy that sampled them).
    Every position is computed from its own inputs only, so the caller passes response
    positions alone and prompt and padding never enter the loss.

    Returns (loss, divergence, student token log-probs): the loss carries gradients to
    `student_log` only; the divergence is the detached value we monitor (KL/JSD, or the
    log-ratio for the token-level variant); the token log-probs are detached.
    """
    s_tok = student_log.gather(-1, tokens.unsqueeze(-1)).squeeze(-1)
    if opts.token_level:
        t_tok = teacher_at(tokens.unsqueeze(-1)).squeeze(-1).detach()
        loss = token_level_loss(s_tok, t_tok, opts.negative_only)
        # Monitored: the mean log-ratio, not 1/2 (log pi_s - log pi_t)^2 (the function this
        # gradient descends). Backtracking keeps an update only if the monitor falls, so this
        # makes it a guard: an update must make the failed attempts less likely relative to
        # the teacher. When the teacher, shown the feedback, rates the failures above the
        # student (mean log-ratio < 0), no update passes and the round leaves the adapter
        # unchanged. Measured on the dev split (bench/results/sdpo_monitor.md): on such
        # rounds training to the squared objective cut the passing programs' probability to
        # 0.26x and 0.13x; the guard left it at 1.00x.
        div = (s_tok - t_tok).detach()
        if opts.negative_only:
            div = div.clamp(min=0.0)
    else:
        if opts.top_k is None:
            loss = divergence(student_log, teacher_at(None).detach(), opts.alpha)
        else:
            idx = student_topk(student_log, opts.top_k)
            loss = topk_divergence(student_log.gather(-1, idx), teacher_at(idx).detach(), opts.alpha)
        div = loss.detach()
    if opts.is_clip is not None and sampling_tok_log is not None:
        loss = loss * importance_weights(s_tok, sampling_tok_log, opts.is_clip)
    if opts.grpo_weight and advantage is not None:
        # not in the monitored divergence: the guard reads the distillation alone
        loss = loss - opts.grpo_weight * advantage.detach() * s_tok
    return loss, div, s_tok.detach()
