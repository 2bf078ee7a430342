"""SDPO steps on a job's LoRA: build student/teacher batches, run the steps, guard collapse.

Memory: the default model's vocabulary is 151,936, so full fp32 logits for a round
(8 attempts x 256 tokens) would be ~1.2 GB per model. We never hold them:
- the teacher runs once per round (no grad) and keeps only its final hidden states and
  log-normaliser at response positions; at each step its log-probabilities are read at
  the student's top-k indices by gathering k rows of the output layer;
- the student's logits are computed in chunks of response positions under activation
  checkpointing, so only one chunk's [chunk, vocab] tensor is alive at a time.

The teacher is the model with the EMA of the LoRA weights (rate `teacher_ema`; 1.0 = the
student as it is at the start of the round), shown the verifier's feedback. It is fixed
for the whole round: within a round an EMA at rate r drifts by at most steps*r of the
student's change, and fixing it saves a teacher forward pass per step.

A fresh optimiser per round makes a round a pure function of (adapter weights, round
data), so a job resumed from a stored snapshot continues exactly.

The importance ratio (`is_clip`) is taken against the adapter as the round started, read
from the round's first pass: for this round's attempts that is the policy that sampled them;
for attempts replayed from earlier rounds (`replay_rounds`) it is not, and the clip then
bounds how far the round's steps move from where they started. The engines' sampling
log-probabilities would be the exact reference for those, but they are not comparable token
for token with the trainer's scores: they are taken at the sampling temperature and, on
llama.cpp, from the Q4 weights rather than the trainer's dequantized fp32 model.

Steps backtrack. Each pass measures the divergence at the current weights; when an update
made it worse, the update is undone and redone from the same point (same gradient, same
optimiser state) at half the step size. Adam's first steps are sign-like (every coordinate
moves by about lr whatever its gradient), so on the small divergences of a feedback-only
teacher (~1e-3 nats) a fixed lr often overshoots: measured on the default model, one step at
lr 1e-4 raised 0.0010 to 0.0059, and the old guard (stop, keep the start) then discarded the
whole round's training, leaving sdpo identical to best-of-k. Backtracking costs no extra
passes (the pass that detects the overshoot is one the loop would run anyway) and leaves a
round that moved the student toward the teacher whenever a small enough step exists. It does
cost one pass after the last step, to measure the weights it keeps: with one step per round
that is a third of the round's training. `guard: false` (the paper preset) skips both: every
step is taken as computed, as in the published method.
"""

from __future__ import annotations

import contextlib
import copy
import inspect
import math
import time
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from adapters.lifecycle import Adapter, AdapterPool
from adapters.options import SdpoOptions
from adapters.sdpo import per_token_loss


@dataclass(frozen=True)
class DistillSample:
    """One failed attempt to distil: the same response tokens under two prompts."""

    student_prompt: list[int]  # chat-templated question, ending where the answer starts
    teacher_prompt: list[int]  # chat-templated reprompt (question + feedback/solution)
    response: list[int]  # the attempt's sampled tokens
    advantage: float = 0.0  # group-relative, on the fraction of cases passed (sdpo.grpo_weight)


# Response positions per chunk of student logits: one [chunk, vocab] fp32 tensor is alive at a
# time (256 x 151,936 x 4 bytes = 156 MB on the default model).
CHUNK_TOKENS = 256
# Give up on the round (keeping the best weights seen) once backtracking has shrunk the step
# below lr * MIN_LR_FRAC: no useful step is left at that scale.
MIN_LR_FRAC = 1 / 16
# A prompt prefix common to a micro-batch is encoded once when it is at least this long;
# below it the extra forward call costs more than the tokens it saves.
MIN_SHARED_PREFIX = 16


@dataclass
class TrainReport:
    step_divergence: list[float] = field(default_factory=list)  # before each update
    loss_before: float = math.nan
    loss_after: float = math.nan  # divergence of the kept weights
    kept_step: int = 0  # number of accepted updates in the kept weights
    collapsed: bool = False  # backtracking ran out of step size
    backtracks: int = 0  # updates undone and redone at half the step
    final_lr: float = math.nan
    tokens: int = 0
    samples: int = 0  # attempts distilled (after `max_samples` and the gate)
    gate_examined: int = 0  # failures the gate scored (0 without `gate`)
    gate_margins: list[float] = field(default_factory=list)  # per scored failure: teacher minus student log p
    teacher_s: float = 0.0  # the teacher's forward pass (once per round)
    student_s: float = 0.0  # everything after it: the parts below, and bookkeeping
    forward_s: float = 0.0  # student forward passes of the steps (with autograd)
    backward_s: float = 0.0  # their backward passes
    optimizer_s: float = 0.0  # clipping, the saved points, AdamW steps, backtracking restores
    guard_s: float = 0.0  # the forward pass that measures the kept weights (no autograd)
    gate_s: float = 0.0  # the gate's student pass (no autograd); its teacher pass is in teacher_s


@dataclass
class _Packed:
    """Response-position tensors for a list of samples, flattened over tokens."""

    tokens: torch.Tensor  # [N] the response tokens
    row_ptr: list[tuple[int, int]]  # per sample: (offset, length) into the flat tensors
    advantage: torch.Tensor | None = None  # [N] each token's sample's advantage; None if all are 0


def _common_prefix(prompts: list[list[int]]) -> int:
    """Tokens every prompt starts with, capped one short of the shortest prompt."""
    limit = min(len(p) for p in prompts) - 1
    n = 0
    while n < limit and all(p[n] == prompts[0][n] for p in prompts):
        n += 1
    return max(n, 0)


class SDPOTrainer:
    def __init__(self, pool: AdapterPool, device: torch.device | str = "cpu", share_prefix: bool = True) -> None:
        self.pool = pool
        self.device = torch.device(device)
        self.share_prefix = share_prefix  # False: every sample encodes its whole prompt (the reference path)
        # transformers 5.24 renamed the cache argument (`past_key_values` -> `cache`); vLLM's venv
        # pins an older release that knows only the old name. Looked up once, not per pass.
        params = inspect.signature(self._body().forward).parameters
        self._cache_kw = "cache" if "cache" in params else "past_key_values"
        head = pool.base.get_output_embeddings()
        # The output layer runs in fp32 even when the body runs in bf16: log-probabilities
        # of a 150k vocabulary from bf16 logits are off by ~0.05 nats, larger than the
        # divergences we distil. The layer is frozen, so a one-off fp32 copy suffices.
        self.head_w: torch.Tensor = head.weight.detach().float()
        bias = getattr(head, "bias", None)
        self.head_b: torch.Tensor | None = None if bias is None else bias.detach().float()

    # -- forward helpers -----------------------------------------------------------------
    def _body(self) -> torch.nn.Module:
        return self.pool.base.get_decoder()

    def _hidden(self, prompts: list[list[int]], responses: list[list[int]]) -> torch.Tensor:
        """Final hidden states at the positions that predict each response token,
        concatenated over samples: [sum(len(response)), hidden].

        The prompt prefix the samples share (all of it for the student, whose n attempts answer
        one prompt; the chat template and question for the teacher's reprompts) is encoded once
        and its key/value cache reused by every sample, with autograd through it, instead of
        once per sample. That is exact: the same attention over the same keys, only summed in
        another order (tests/adapters/test_trainer.py compares the gradients)."""
        shared = _common_prefix(prompts)
        if self.share_prefix and len(prompts) > 1 and shared >= MIN_SHARED_PREFIX:
            return self._hidden_shared(prompts, responses, shared)
        seqs = [p + r for p, r in zip(prompts, responses)]
        width = max(len(s) for s in seqs)
        ids = torch.zeros(len(seqs), width, dtype=torch.long)
        att = torch.zeros(len(seqs), width, dtype=torch.long)
        for i, s in enumerate(seqs):
            ids[i, : len(s)] = torch.tensor(s)
            att[i, : len(s)] = 1
        out = self._body()(input_ids=ids.to(self.device), attention_mask=att.to(self.device))
        h = out.last_hidden_state
        picks = [h[i, len(p) - 1 : len(p) - 1 + len(r)] for i, (p, r) in enumerate(zip(prompts, responses))]
        return torch.cat(picks, dim=0)

    def _hidden_shared(self, prompts: list[list[int]], responses: list[list[int]], shared: int) -> torch.Tensor:
        body = self._body()
        pre = body(input_ids=torch.tensor([prompts[0][:shared]], device=self.device), use_cache=True)
        cache = getattr(pre, "cache", None) or pre.past_key_values
        cache.batch_repeat_interleave(len(prompts))
        tails = [p[shared:] + r for p, r in zip(prompts, responses)]
        width = max(len(t) for t in tails)
        ids = torch.zeros(len(tails), width, dtype=torch.long)
        att = torch.zeros(len(tails), shared + width, dtype=torch.long)
        att[:, :shared] = 1
        for i, t in enumerate(tails):
            ids[i, : len(t)] = torch.tensor(t)
            att[i, shared : shared + len(t)] = 1
        out = body(input_ids=ids.to(self.device), attention_mask=att.to(self.device), use_cache=True,
                   **{self._cache_kw: cache})
        h = out.last_hidden_state
        # The shared prefix stops at least one token short of every prompt, so the position that
        # predicts a response's first token (its prompt's last) lies in the tail.
        picks = [h[i, len(p) - shared - 1 : len(p) - shared - 1 + len(r)]
                 for i, (p, r) in enumerate(zip(prompts, responses))]
        return torch.cat(picks, dim=0)

    def _logits(self, h: torch.Tensor) -> torch.Tensor:
        out = h.float() @ self.head_w.T
        return out if self.head_b is None else out + self.head_b

    def _rows_logits(self, h: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        """Logits at given vocabulary indices only: h [c, H], idx [c, m] -> [c, m]."""
        out = torch.einsum("cmh,ch->cm", self.head_w[idx], h.float())
        return out if self.head_b is None else out + self.head_b[idx]

    @staticmethod
    def _pack(samples: list[DistillSample]) -> _Packed:
        ptr, off = [], 0
        for s in samples:
            ptr.append((off, len(s.response)))
            off += len(s.response)
        toks = torch.tensor([t for s in samples for t in s.response], dtype=torch.long)
        adv = None
        if any(s.advantage for s in samples):
            adv = torch.tensor([s.advantage for s in samples for _ in s.response], dtype=torch.float32)
        return _Packed(tokens=toks, row_ptr=ptr, advantage=adv)

    def _micro(self, samples: list[DistillSample], size: int) -> list[tuple[int, list[DistillSample]]]:
        out, off = [], 0
        for i in range(0, len(samples), size):
            chunk = samples[i : i + size]
            out.append((off, chunk))
            off += sum(len(s.response) for s in chunk)
        return out

    @torch.no_grad()
    def sequence_logprobs(self, adapter: Adapter | None, prompt: list[int], responses: list[list[int]],
                          micro_batch: int | None = None) -> list[float]:
        """log p(response | prompt) per response, summed over its tokens, under `adapter`
        (None: the base model). For measuring what a round of training did."""
        micro_batch = micro_batch or SdpoOptions().micro_batch
        out: list[float] = []
        ctx = self.pool.base_only() if adapter is None else contextlib.nullcontext()
        if adapter is not None:
            self.pool.activate(adapter)
        with ctx:
            for i in range(0, len(responses), micro_batch):
                chunk = responses[i:i + micro_batch]
                lp = self._token_logprobs([prompt] * len(chunk), chunk)
                out += [float(part.sum()) for part in lp.split([len(r) for r in chunk])]
        return out

    @torch.no_grad()
    def _token_logprobs(self, prompts: list[list[int]], responses: list[list[int]]) -> torch.Tensor:
        """log p(y_t | prompt, y_<t) of every response token under the active weights, flat [N]."""
        h = self._hidden(prompts, responses)
        toks = torch.tensor([t for r in responses for t in r], device=h.device)
        return torch.cat([F.log_softmax(self._logits(hc), -1).gather(-1, tc[:, None])[:, 0]
                          for hc, tc in zip(h.split(CHUNK_TOKENS), toks.split(CHUNK_TOKENS))])

    # -- teacher ---------------------------------------------------------------------------
    @torch.no_grad()
    def teacher_cache(self, adapter: Adapter, samples: list[DistillSample], opts: SdpoOptions) -> tuple[torch.Tensor, torch.Tensor]:
        """Teacher hidden states [N, H] and log-normalisers [N] at response positions."""
        self.pool.activate(adapter)
        hs = []
        with self.pool.ema_weights(adapter):
            for _, chunk in self._micro(samples, opts.micro_batch):
                hs.append(self._hidden([s.teacher_prompt for s in chunk], [s.response for s in chunk]).float())
        h = torch.cat(hs)
        lse = torch.cat([torch.logsumexp(self._logits(c).float(), -1) for c in h.split(CHUNK_TOKENS)])
        return h, lse

    def _gate(self, adapter: Adapter, samples: list[DistillSample], opts: SdpoOptions,
              report: TrainReport) -> tuple[list[DistillSample], tuple[torch.Tensor, torch.Tensor] | None]:
        """`gate`: the failures whose log-probability under the teacher is below the student's,
        with the teacher's cache for them. Scored a micro-batch at a time, in the given order,
        until `max_samples` are kept, so the gate costs a pass over the failures it reads, not all.

        Why: the token-level loss pulls each distilled attempt toward the teacher's view of it.
        Where the teacher, shown the feedback, likes a failure more than the student does, that
        pull raises the failure: the default model's teacher did so on 7 of the 16 failures of its
        dev-split check (bench/results/teacher_check.jsonl). Only the others carry the signal SDPO
        needs. The test uses no passing program, so it works at test time."""
        cap = opts.max_samples or len(samples)
        kept: list[DistillSample] = []
        h_kept: list[torch.Tensor] = []
        lse_kept: list[torch.Tensor] = []
        for _, chunk in self._micro(samples, opts.micro_batch):
            t = time.perf_counter()
            h_t, lse_t = self.teacher_cache(adapter, chunk, opts)
            toks = self._pack(chunk).tokens
            t_tok = torch.cat([self._rows_logits(hc, tc[:, None])[:, 0] - lc for hc, tc, lc in
                               zip(h_t.split(CHUNK_TOKENS), toks.split(CHUNK_TOKENS), lse_t.split(CHUNK_TOKENS))])
            report.teacher_s += time.perf_counter() - t
            t = time.perf_counter()
            self.pool.activate(adapter)
            s_tok = self._token_logprobs([s.student_prompt for s in chunk], [s.response for s in chunk])
            report.gate_s += time.perf_counter() - t
            lens = [len(s.response) for s in chunk]
            for s, h, lse, tt, st in zip(chunk, h_t.split(lens), lse_t.split(lens), t_tok.split(lens), s_tok.split(lens)):
                margin = float(tt.sum() - st.sum())
                report.gate_examined += 1
                report.gate_margins.append(margin)
                if margin < 0 and len(kept) < cap:
                    kept.append(s)
                    h_kept.append(h)
                    lse_kept.append(lse)
            if len(kept) >= cap:
                break
        return kept, ((torch.cat(h_kept), torch.cat(lse_kept)) if kept else None)

    # -- student ---------------------------------------------------------------------------
    def _chunk_loss(
        self,
        h_s: torch.Tensor,
        h_t: torch.Tensor,
        lse_t: torch.Tensor,
        toks: torch.Tensor,
        old: torch.Tensor | None,
        opts: SdpoOptions,
        adv: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        s_log = F.log_softmax(self._logits(h_s).float(), dim=-1)

        def teacher_at(idx: torch.Tensor | None) -> torch.Tensor:
            with torch.no_grad():
                if idx is None:
                    return self._logits(h_t).float() - lse_t[:, None]
                return self._rows_logits(h_t, idx).float() - lse_t[:, None]

        loss, div, s_tok = per_token_loss(s_log, teacher_at, toks, opts, old, adv)
        return loss.sum(), div.sum(), s_tok

    def _pass(
        self,
        adapter: Adapter,
        samples: list[DistillSample],
        packed: _Packed,
        teacher: tuple[torch.Tensor, torch.Tensor],
        old: torch.Tensor | None,
        opts: SdpoOptions,
        backward: bool,
        report: TrainReport | None = None,
    ) -> tuple[float, torch.Tensor]:
        """One pass over the round's samples. Returns (mean divergence, token log-probs);
        accumulates gradients of the mean loss when `backward`. Adds its forward and backward
        seconds to `report`."""
        fwd_s = bwd_s = 0.0
        n_tok = packed.tokens.numel()
        h_t, lse_t = teacher
        div_sum = 0.0
        s_toks = torch.empty(n_tok)
        self.pool.activate(adapter)
        for off, chunk in self._micro(samples, opts.micro_batch):
            t = time.perf_counter()
            with torch.set_grad_enabled(backward):
                h_s = self._hidden([s.student_prompt for s in chunk], [s.response for s in chunk])
                total = h_s.new_zeros(())
                for c0 in range(0, h_s.shape[0], CHUNK_TOKENS):
                    c1 = min(c0 + CHUNK_TOKENS, h_s.shape[0])
                    g0, g1 = off + c0, off + c1
                    args = (h_s[c0:c1], h_t[g0:g1], lse_t[g0:g1], packed.tokens[g0:g1],
                            None if old is None else old[g0:g1], opts,
                            None if packed.advantage is None else packed.advantage[g0:g1])
                    if backward:
                        loss, div, s_tok = checkpoint(self._chunk_loss, *args, use_reentrant=False)
                    else:
                        loss, div, s_tok = self._chunk_loss(*args)
                    total = total + loss
                    div_sum += float(div)
                    s_toks[g0:g1] = s_tok
                fwd_s += time.perf_counter() - t
                if backward:
                    t = time.perf_counter()
                    (total / n_tok).backward()
                    bwd_s += time.perf_counter() - t
        if report is not None:
            report.forward_s += fwd_s
            report.backward_s += bwd_s
        return div_sum / max(n_tok, 1), s_toks

    def train_round(self, adapter: Adapter, samples: list[DistillSample], opts: SdpoOptions) -> TrainReport:
        """Run `opts.steps` SDPO updates on `adapter` over `samples`; keep the best weights."""
        report = TrainReport()
        samples = [s for s in samples if s.response]
        if not samples or opts.steps <= 0:
            return report
        if opts.gate:
            samples, gated = self._gate(adapter, samples, opts, report)
            if gated is None:  # the teacher recognised no failure as wrong: nothing to learn from
                return report
            teacher = gated
        else:
            samples = samples[: opts.max_samples]
            t0 = time.perf_counter()
            teacher = self.teacher_cache(adapter, samples, opts)
            report.teacher_s = time.perf_counter() - t0
        packed = self._pack(samples)
        report.tokens, report.samples = packed.tokens.numel(), len(samples)

        t0 = time.perf_counter()
        params = list(self.pool.parameters(adapter).values())
        opt = torch.optim.AdamW(params, lr=opts.lr, weight_decay=0.0)
        if not opts.guard:
            return self._unguarded_steps(adapter, samples, packed, teacher, opts, params, opt, report, t0)
        lr = opts.lr
        old: torch.Tensor | None = None
        best_div = math.inf
        point: dict | None = None  # the best weights, their clipped gradient and the optimiser state there
        accepted = 0
        for step in range(opts.steps):
            opt.zero_grad(set_to_none=True)
            div, s_tok = self._pass(adapter, samples, packed, teacher, old, opts, backward=True, report=report)
            t_opt = time.perf_counter()
            if old is None:
                old = s_tok  # the importance ratio's reference: the adapter as the round started
            report.step_divergence.append(div)
            if div <= best_div:  # the last update helped (or this is the start): step from here
                if point is not None:
                    accepted += 1
                best_div = div
                torch.nn.utils.clip_grad_norm_(params, opts.max_grad_norm)
                point = {"weights": {n: t.clone() for n, t in self.pool.weights(adapter).items()},
                         "grads": [p.grad.clone() for p in params],
                         "opt": copy.deepcopy(opt.state_dict()), "accepted": accepted}
            else:  # it overshot: undo it, redo it from the same point at half the step
                report.backtracks += 1
                lr *= 0.5
                if lr < opts.lr * MIN_LR_FRAC:
                    report.collapsed = True
                    report.optimizer_s += time.perf_counter() - t_opt
                    break
                assert point is not None
                self.pool.load_weights(adapter, point["weights"])
                opt.load_state_dict(copy.deepcopy(point["opt"]))
                for p, g in zip(params, point["grads"]):
                    p.grad = g.clone()
            for group in opt.param_groups:
                group["lr"] = lr
            opt.step()
            report.optimizer_s += time.perf_counter() - t_opt
        opt.zero_grad(set_to_none=True)
        del opt
        report.loss_before = report.step_divergence[0]
        report.final_lr = lr
        after = math.nan
        if not report.collapsed:
            t = time.perf_counter()
            after, _ = self._pass(adapter, samples, packed, teacher, old, opts, backward=False)
            report.guard_s = time.perf_counter() - t
        if not report.collapsed and after <= best_div:
            report.kept_step, report.loss_after = accepted + 1, after
        else:
            assert point is not None
            self.pool.load_weights(adapter, point["weights"])
            report.kept_step, report.loss_after = point["accepted"], best_div
        # The teacher follows the kept student only: an undone update never reaches it.
        for _ in range(report.kept_step):
            self.pool.update_ema(adapter, opts.teacher_ema)
        report.student_s = time.perf_counter() - t0
        adapter.version += 1
        return report

    def _unguarded_steps(self, adapter: Adapter, samples: list[DistillSample], packed: _Packed, teacher: tuple[torch.Tensor, torch.Tensor],
                         opts: SdpoOptions, params: list[torch.nn.Parameter], opt: torch.optim.Optimizer,
                         report: TrainReport, t0: float) -> TrainReport:
        """`guard: false`: every step as computed, each followed by the teacher's EMA update, and
        no measuring pass after the last, so a round costs `steps` passes, not `steps + 1`."""
        old: torch.Tensor | None = None
        for _ in range(opts.steps):
            opt.zero_grad(set_to_none=True)
            div, s_tok = self._pass(adapter, samples, packed, teacher, old, opts, backward=True, report=report)
            t_opt = time.perf_counter()
            if old is None:
                old = s_tok
            report.step_divergence.append(div)
            torch.nn.utils.clip_grad_norm_(params, opts.max_grad_norm)
            opt.step()
            self.pool.update_ema(adapter, opts.teacher_ema)
            report.optimizer_s += time.perf_counter() - t_opt
        opt.zero_grad(set_to_none=True)
        report.loss_before = report.step_divergence[0]
        report.loss_after = math.nan  # not measured: that is the pass this mode saves
        report.kept_step = opts.steps
        report.final_lr = opts.lr
        report.student_s = time.perf_counter() - t0
        adapter.version += 1
        return report
