"""The public contract: what a client sends (problem files and HTTP bodies alike) and
what a solve returns. Every field is documented where it is defined: here, and for the
`sdpo` knobs in `adapters.options`, which the trainer reads as they are."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from adapters.options import SdpoOptions
from sandbox.specs import VerifierSpec

Strategy = Literal["sdpo", "best_of_k", "multi_turn"]
JobStatus = Literal["queued", "running", "solved", "exhausted", "cancelled", "failed"]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Problem(_Model):
    question: str = Field(
        min_length=1, max_length=100_000, description="The task, as the user turn the model sees."
    )
    system_prompt: str | None = Field(
        None, max_length=20_000, description="Optional system turn (default: the model's own)."
    )


class Budget(_Model):
    max_attempts: int = Field(32, ge=1, le=4096, description="Sampled completions in total, all rounds.")
    max_rounds: int | None = Field(None, ge=1, le=1000, description="Rounds of generate -> verify (-> train).")
    deadline_s: float | None = Field(
        None, gt=0, le=86_400, description="Wall-clock limit in seconds; checked before each round."
    )


class Sampling(_Model):
    n: int = Field(8, ge=1, le=64, description="Attempts per round (the last round may sample fewer).")
    temperature: float = Field(1.0, ge=0.0, le=2.0, description="0 = greedy.")
    top_p: float = Field(1.0, gt=0.0, le=1.0, description="Nucleus sampling threshold.")
    max_new_tokens: int = Field(512, ge=1, le=8192, description="Per attempt; longer answers are cut and marked.")


class SolveRequest(_Model):
    """A problem, how to check it, and how to search for a solution."""

    problem: Problem
    verifier: VerifierSpec
    # best_of_k by default on both embedded models: on every set measured so far, sdpo's
    # training bought no attempts over plain sampling and cost most of its seconds (README,
    # "Which strategy by default"). sdpo stays one field away.
    strategy: Strategy = Field("best_of_k", description="best_of_k (default) | sdpo | multi_turn (docs/architecture.md §1).")
    budget: Budget = Field(default_factory=Budget)
    sampling: Sampling = Field(default_factory=Sampling)
    sdpo: SdpoOptions = Field(default_factory=SdpoOptions)
    multi_turn_mode: Literal["feedback_only", "conversation"] = Field(
        "feedback_only",
        description="multi_turn only: prompt = question + all feedback so far, or the full conversation.",
    )
    seed: int = Field(0, ge=0, le=2**31 - 1, description="Same seed, same model, same engine: same attempts.")


class ProblemFile(SolveRequest):
    """A problem file for `tta solve` (YAML or JSON): a SolveRequest plus free metadata."""

    meta: dict[str, Any] = Field(
        default_factory=dict, description="Free-form notes: name, source, measured base pass rate, ..."
    )

    @model_validator(mode="before")
    @classmethod
    def _question_shorthand(cls, data: Any) -> Any:
        # Files may say `question:` at the top level instead of `problem: {question: ...}`.
        if isinstance(data, dict) and "question" in data and "problem" not in data:
            data = dict(data)
            data["problem"] = {"question": data.pop("question")}
            if "system_prompt" in data:
                data["problem"]["system_prompt"] = data.pop("system_prompt")
        return data


# ---- results ------------------------------------------------------------------------


class AttemptRecord(_Model):
    index: int = Field(description="0-based, across the whole job.")
    round: int
    conversation: int = Field(0, description="multi_turn: which conversation produced it.")
    text: str
    tokens: int
    truncated: bool = Field(description="Cut at max_new_tokens.")
    verdict: Literal["pass", "fail", "error"]
    score: float
    passed_cases: int
    total_cases: int
    feedback: str
    kind: str = Field(description="Failure kind: wrong_answer, runtime_error, timeout, format, ...")


class RoundTimings(_Model):
    generate_s: float = 0.0
    verify_s: float = 0.0
    train_s: float = 0.0


class TrainTimings(_Model):
    """Where a training round's seconds went (they add up to about RoundTimings.train_s)."""

    teacher_s: float = Field(0.0, description="The teacher's forward pass over the round's failures (once).")
    forward_s: float = Field(0.0, description="The student's forward passes, one per step.")
    backward_s: float = Field(0.0, description="Their backward passes.")
    optimizer_s: float = Field(0.0, description="Gradient clipping, AdamW steps and backtracking restores.")
    guard_s: float = Field(0.0, description="The forward pass that measures the kept weights.")
    gate_s: float = Field(0.0, description="sdpo.gate: the student pass that scores the failures (the teacher's is in teacher_s).")


class TrainStats(_Model):
    steps: int
    step_divergence: list[float]
    loss_before: float | None = Field(description="Student-teacher divergence before the first step.")
    loss_after: float | None = Field(description="Divergence of the weights kept after the round.")
    kept_step: int = Field(description="Accepted updates in the kept weights.")
    collapsed: bool = Field(description="Backtracking ran out of step size; the best weights seen were kept.")
    backtracks: int = Field(0, description="Updates that raised the divergence, undone and redone at half the step.")
    final_lr: float | None = Field(None, description="The step size the round ended at.")
    tokens: int
    samples: int = Field(description="Failed attempts distilled.")
    gate_examined: int = Field(0, description="sdpo.gate: failures scored; the `samples` of them the teacher "
                               "found less likely than the student were distilled.")
    timings: TrainTimings = Field(default_factory=TrainTimings)


class RoundRecord(_Model):
    round: int
    attempts: list[int] = Field(description="Indices of this round's attempts.")
    passes: int
    adapter_version: int | None = None
    train: TrainStats | None = None
    timings: RoundTimings = Field(default_factory=RoundTimings)


class SolveResult(_Model):
    status: JobStatus
    reason: str | None = Field(None, description="Why the job ended (always set unless solved).")
    strategy: Strategy
    model: str
    engine: str
    seed: int
    solution: str | None = Field(None, description="The first passing attempt's text.")
    solved_attempt: int | None = None
    attempts_used: int
    rounds: list[RoundRecord]
    attempts: list[AttemptRecord]
    templates: dict[str, str]
    timings: RoundTimings = Field(description="Totals over all rounds.")
    wall_s: float
    tokens_generated: int


# ---- checkpoints (what workers hand on to each other; never sent to a client) ---------


class SolveState(BaseModel):
    """Everything a job has accumulated after its last finished round: with the adapter
    snapshot of that round, enough to resume the job exactly where it stood."""

    attempts: list[AttemptRecord] = Field(default_factory=list)
    rounds: list[RoundRecord] = Field(default_factory=list)
    # per attempt: the completion's tokens (needed to distil it later)
    tokens: list[list[int]] = Field(default_factory=list)
    # multi_turn: per conversation, the message history / the feedback so far
    conversations: list[list[dict[str, str]]] = Field(default_factory=list)
    feedback: list[list[str]] = Field(default_factory=list)
    elapsed_s: float = 0.0  # wall time spent before a resume (deadlines span restarts)
