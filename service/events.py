"""A job's progress events: one model per kind, told apart by `type`. Part of the contract:
the store appends them to the job's Redis stream and the API relays that stream as SSE
(`event:` = the type, `data:` = the JSON below).

Each kind has one owner, the one module that emits it:

  kind              owner               when
  queued            service.store.jobs  the job is submitted (not for a cache hit)
  cancel_requested  service.store.jobs  DELETE of a running job: its worker stops within a round
  claimed           service.store.work  a worker takes the job; delivery > 1: a resume
  round_start       service.solver      a round starts sampling
  verified          service.solver      the round's attempts are judged
  training          service.solver      SDPO steps on the round's failures start
  trained           service.solver      ... and end
  checkpoint        service.store.work  the round is stored (attempts, state, adapter)
  done              service.store.base  the job is final: written with its final record (`_finish`)

A field its emitter did not give is absent from the JSON, not null: a `done` of a job given
up after too many deliveries has no `attempts_used`, only a cache hit's has `cached_from`.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, model_serializer

from service.schemas import JobStatus


class _Event(BaseModel):
    # Unknown fields are ignored, not refused: a `tta watch` stays readable against a newer
    # server that adds a field to an event.
    model_config = ConfigDict(extra="ignore", frozen=True)

    ts: float | None = Field(None, description="Unix time the store appended the event (absent before).")

    @model_serializer(mode="wrap")
    def _given_fields_only(self, handler) -> dict[str, Any]:
        data = handler(self)
        return {k: v for k, v in data.items() if k == "type" or k in self.model_fields_set}


class QueuedEvent(_Event):
    type: Literal["queued"] = "queued"
    attempts_used: int


class ClaimedEvent(_Event):
    type: Literal["claimed"] = "claimed"
    worker: str
    delivery: int = Field(description="How many times the queue has handed the job out, this time included.")
    resumed_from_round: int = Field(description="Rounds already stored: the worker goes on from there.")


class RoundStartEvent(_Event):
    type: Literal["round_start"] = "round_start"
    round: int
    attempts_used: int
    n: int = Field(description="Attempts this round samples.")


class VerifiedEvent(_Event):
    type: Literal["verified"] = "verified"
    round: int
    attempts_used: int
    passes: int
    kinds: list[str] = Field(description="Per attempt of the round, its verdict kind: `passed`, or how it failed.")


class TrainingEvent(_Event):
    type: Literal["training"] = "training"
    round: int
    steps: int


class TrainedEvent(_Event):
    type: Literal["trained"] = "trained"
    round: int
    loss_before: float | None
    loss_after: float | None
    collapsed: bool


class CheckpointEvent(_Event):
    type: Literal["checkpoint"] = "checkpoint"
    round: int
    attempts_used: int
    adapter: bool = Field(description="An adapter snapshot was stored with the round.")


class CancelRequestedEvent(_Event):
    type: Literal["cancel_requested"] = "cancel_requested"


class DoneEvent(_Event):
    type: Literal["done"] = "done"
    status: JobStatus
    reason: str | None
    attempts_used: int | None = None
    solved_attempt: int | None = None
    cached_from: str | None = Field(None, description="A cache hit: the job whose result this is.")


Event = Annotated[
    QueuedEvent | ClaimedEvent | RoundStartEvent | VerifiedEvent | TrainingEvent | TrainedEvent | CheckpointEvent
    | CancelRequestedEvent | DoneEvent,
    Field(discriminator="type"),
]
# The solver's part of the stream: what `Solver.solve(on_event=...)` hands its caller.
SolverEvent = RoundStartEvent | VerifiedEvent | TrainingEvent | TrainedEvent

_EVENT = TypeAdapter(Event)


def parse_event(data: dict[str, Any] | str | bytes) -> Event:
    """The event of a JSON text or a decoded dict (as stored, or as an SSE client got it)."""
    if isinstance(data, (str, bytes)):
        return _EVENT.validate_json(data)
    return _EVENT.validate_python(data)
