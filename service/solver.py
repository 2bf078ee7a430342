"""The solve loop: generate -> verify -> feedback, for the three strategies on equal terms.

One loop, one attempt counter, one budget check; the strategies differ only in how a
round's prompts are built and what happens between rounds (docs/architecture.md §1):

  sdpo        n samples from base + this job's LoRA; SDPO steps on the round's failures
  best_of_k   n independent samples from the base model; nothing between rounds
  multi_turn  n conversations, one sample each; the feedback is appended in context

The loop is engine-agnostic (it talks to `Engine`) and model-agnostic (prompts are
rendered with the model's own chat template by `service.prompts`).
"""

from __future__ import annotations

import logging
import time
import uuid
from dataclasses import dataclass
from typing import Any, Callable, Protocol

from adapters.lifecycle import Adapter, AdapterPool
from adapters.trainer import DistillSample, SDPOTrainer
from sandbox.specs import VerifierSpec
from service import prompts, templates
from service.engines.base import Completion, Engine, SamplingParams
from service.events import (
    RoundStartEvent,
    SolverEvent,
    TrainedEvent,
    TrainingEvent,
    VerifiedEvent,
)
from service.schemas import (
    AttemptRecord,
    RoundRecord,
    RoundTimings,
    SolveRequest,
    SolveResult,
    SolveState,
    TrainStats,
    TrainTimings,
)

log = logging.getLogger(__name__)


class Verifier(Protocol):
    """`sandbox.verify_many`, or the remote sandbox client's method of the same shape."""

    def __call__(self, spec: VerifierSpec, responses: list[str], truncated: list[bool]) -> list[Any]: ...


@dataclass
class SolverDeps:
    """What a solve needs from the process: one model, its adapters, an engine, a verifier."""

    model_name: str
    tokenizer: Any
    pool: AdapterPool
    trainer: SDPOTrainer
    engine: Engine
    verify: Verifier


# Called after every finished round with the state and the adapter snapshot (sdpo only),
# before the next round starts: persisting both makes a crash lose at most one round.
Checkpoint = Callable[[SolveState, bytes | None], None]


def round_seed(seed: int, rnd: int) -> int:
    return (seed * 1_000_003 + rnd * 7919) % (2**31 - 1)


class Solver:
    def __init__(self, deps: SolverDeps) -> None:
        self.d = deps

    def solve(
        self,
        req: SolveRequest,
        *,
        job_id: str | None = None,
        on_event: Callable[[SolverEvent], None] | None = None,
        cancelled: Callable[[], bool] | None = None,
        checkpoint: Checkpoint | None = None,
        resume: tuple[SolveState, bytes | None] | None = None,
    ) -> SolveResult:
        """Run the loop until an attempt passes or the budget is spent. Never raises for
        a problem inside the loop: the result says `failed` with the reason instead.

        `on_event` gets each round's progress; the job's end is the result itself (a worker
        stores it, with its `done` event, in one transaction). `resume` continues a job
        from a checkpoint (state + adapter snapshot); rounds already recorded there are not
        run, nor counted, again."""
        job_id = job_id or uuid.uuid4().hex
        emit = on_event or (lambda e: None)
        is_cancelled = cancelled or (lambda: False)
        st = resume[0].model_copy(deep=True) if resume else SolveState()
        t0 = time.monotonic() - st.elapsed_s
        adapter: Adapter | None = None
        status, reason = "exhausted", None
        try:
            if req.strategy == "sdpo":
                blob = resume[1] if resume else None
                adapter = (self.d.pool.restore(job_id, blob) if blob
                           else self.d.pool.create(job_id, req.sdpo.lora, seed=req.seed))
            status, reason = self._loop(req, st, adapter, t0, emit, is_cancelled, checkpoint)
        except Exception as exc:  # the job must end with a reason, never silently
            log.exception("job %s failed", job_id)
            status, reason = "failed", f"{type(exc).__name__}: {exc}"
        finally:
            if adapter is not None:
                self.d.pool.delete(adapter)
        return self._result(req, st, status, reason, t0)

    # -- the loop ----------------------------------------------------------------------------
    def _loop(self, req, st: SolveState, adapter, t0, emit, is_cancelled, checkpoint) -> tuple[str, str | None]:
        b, s = req.budget, req.sampling
        student_prompt = prompts.student_prompt(self.d.tokenizer, req.problem)
        while True:
            used = len(st.attempts)
            if used >= b.max_attempts:
                return "exhausted", f"attempt budget spent ({b.max_attempts} attempts, none passed)"
            if b.max_rounds is not None and len(st.rounds) >= b.max_rounds:
                return "exhausted", f"round budget spent ({b.max_rounds} rounds, none passed)"
            if b.deadline_s is not None and time.monotonic() - t0 >= b.deadline_s:
                return "exhausted", f"deadline of {b.deadline_s:g} s passed after {used} attempts"
            if is_cancelled():
                return "cancelled", "cancelled by request"

            rnd = len(st.rounds)
            n = min(s.n, b.max_attempts - used)
            emit(RoundStartEvent(round=rnd, attempts_used=used, n=n))
            timings = RoundTimings()

            t = time.monotonic()
            batch, conv_of = self._generate(req, st, adapter, student_prompt, rnd, n)
            timings.generate_s = time.monotonic() - t

            t = time.monotonic()
            verdicts = self.d.verify(req.verifier, [c.text for c in batch], [c.finish_reason == "length" for c in batch])
            timings.verify_s = time.monotonic() - t

            indices = []
            for c, v, conv in zip(batch, verdicts, conv_of):
                idx = len(st.attempts)
                indices.append(idx)
                st.tokens.append(c.token_ids)
                st.attempts.append(AttemptRecord(
                    index=idx, round=rnd, conversation=conv, text=c.text, tokens=len(c.token_ids),
                    truncated=c.finish_reason == "length", verdict=v.verdict, score=v.score,
                    passed_cases=v.passed, total_cases=v.total, feedback=v.feedback, kind=v.kind,
                ))
            passes = sum(1 for i in indices if st.attempts[i].verdict == "pass")
            record = RoundRecord(round=rnd, attempts=indices, passes=passes, timings=timings,
                                 adapter_version=adapter.version if adapter else None)
            st.rounds.append(record)
            emit(VerifiedEvent(round=rnd, attempts_used=len(st.attempts), passes=passes,
                               kinds=[st.attempts[i].kind for i in indices]))
            if passes:
                return "solved", None

            more_to_come = len(st.attempts) < b.max_attempts and (b.max_rounds is None or len(st.rounds) < b.max_rounds)
            if req.strategy == "sdpo" and adapter is not None and more_to_come and req.sdpo.steps > 0:
                emit(TrainingEvent(round=rnd, steps=req.sdpo.steps))
                t = time.monotonic()
                record.train = self._train(req, st, adapter, rnd)
                timings.train_s = time.monotonic() - t
                record.adapter_version = adapter.version
                emit(TrainedEvent(round=rnd, loss_before=record.train.loss_before,
                                  loss_after=record.train.loss_after, collapsed=record.train.collapsed))
            elif req.strategy == "multi_turn":
                self._extend_conversations(req, st, batch, indices, conv_of)
            if checkpoint is not None:
                st.elapsed_s = time.monotonic() - t0
                with self.d.pool.lock:
                    blob = self.d.pool.snapshot(adapter) if adapter is not None else None
                checkpoint(st, blob)

    def _generate(self, req, st: SolveState, adapter, student_prompt, rnd, n) -> tuple[list[Completion], list[int]]:
        s = req.sampling
        params = dict(temperature=s.temperature, top_p=s.top_p, max_new_tokens=s.max_new_tokens,
                      seed=round_seed(req.seed, rnd))
        if req.strategy != "multi_turn":
            out = self.d.engine.generate([student_prompt], adapter if req.strategy == "sdpo" else None,
                                         SamplingParams(n=n, **params))[0]
            return out, [0] * len(out)
        if not st.conversations:
            base = prompts.messages(req.problem.question, req.problem.system_prompt)
            st.conversations = [list(base) for _ in range(s.n)]
            st.feedback = [[] for _ in range(s.n)]
        convs = list(range(n))
        rendered = [prompts.render(self.d.tokenizer, self._conversation_messages(req, st, i)) for i in convs]
        out = self.d.engine.generate(rendered, None, SamplingParams(n=1, **params))
        return [o[0] for o in out], convs

    def _conversation_messages(self, req, st: SolveState, i: int) -> list[dict[str, str]]:
        if req.multi_turn_mode == "conversation":
            return st.conversations[i]
        text = templates.multi_turn_feedback_only(req.problem.question, st.feedback[i])
        return prompts.messages(text, req.problem.system_prompt)

    def _extend_conversations(self, req, st: SolveState, batch, indices, conv_of) -> None:
        for c, idx, i in zip(batch, indices, conv_of):
            fb = st.attempts[idx].feedback
            st.feedback[i].append(fb)
            st.conversations[i] += [
                {"role": "assistant", "content": c.text},
                {"role": "user", "content": templates.MULTI_TURN_NEXT_TURN.format(feedback=fb)},
            ]

    def _train(self, req, st: SolveState, adapter: Adapter, rnd: int) -> TrainStats:
        first = max(0, rnd - req.sdpo.replay_rounds)
        student_prompt = prompts.student_prompt(self.d.tokenizer, req.problem)
        samples = []
        # Newest round first: `sdpo.max_samples` keeps the first attempts it is given.
        for rec in reversed(st.rounds[first : rnd + 1]):
            # a passing attempt is not reprompted; an "error" (the verifier could not judge it,
            # e.g. the sandbox was down) says nothing about the attempt
            distilled = [idx for idx in rec.attempts if st.attempts[idx].verdict == "fail" and st.tokens[idx]]
            fails = [st.attempts[idx] for idx in distilled]
            partials, advantages = prompts.round_signals(
                req.sdpo, [a.text for a in fails], [a.passed_cases for a in fails], [a.total_cases for a in fails])
            for idx, a, partial, advantage in zip(distilled, fails, partials, advantages, strict=True):
                samples.append(DistillSample(
                    student_prompt=student_prompt,
                    teacher_prompt=prompts.teacher_prompt(self.d.tokenizer, req.problem, a.feedback, partial=partial),
                    response=st.tokens[idx],
                    advantage=advantage,
                ))
        with self.d.pool.lock:
            rep = self.d.trainer.train_round(adapter, samples, req.sdpo)
        nan = lambda x: None if x != x else x  # noqa: E731  (NaN -> null in JSON)
        return TrainStats(
            steps=len(rep.step_divergence), step_divergence=rep.step_divergence,
            loss_before=nan(rep.loss_before), loss_after=nan(rep.loss_after), kept_step=rep.kept_step,
            collapsed=rep.collapsed, backtracks=rep.backtracks, final_lr=nan(rep.final_lr),
            tokens=rep.tokens, samples=rep.samples, gate_examined=rep.gate_examined,
            timings=TrainTimings(teacher_s=rep.teacher_s, forward_s=rep.forward_s, backward_s=rep.backward_s,
                                 optimizer_s=rep.optimizer_s, guard_s=rep.guard_s, gate_s=rep.gate_s),
        )

    # -- result ------------------------------------------------------------------------------
    def _result(self, req, st: SolveState, status, reason, t0) -> SolveResult:
        solved = next((a for a in st.attempts if a.verdict == "pass"), None)
        totals = RoundTimings(
            generate_s=sum(r.timings.generate_s for r in st.rounds),
            verify_s=sum(r.timings.verify_s for r in st.rounds),
            train_s=sum(r.timings.train_s for r in st.rounds),
        )
        return SolveResult(
            status=status, reason=reason, strategy=req.strategy, model=self.d.model_name,
            engine=self.d.engine.name, seed=req.seed,
            solution=solved.text if solved else None, solved_attempt=solved.index if solved else None,
            attempts_used=len(st.attempts), rounds=st.rounds, attempts=st.attempts,
            templates=templates.all_templates(), timings=totals, wall_s=time.monotonic() - t0,
            tokens_generated=sum(a.tokens for a in st.attempts),
        )
