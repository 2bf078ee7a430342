"""The one interface every generation backend implements.

Prompts arrive as token ids, already rendered with the model's chat template by
`service.prompts`: the engine never re-renders them, so generation and SDPO training see
exactly the same tokens whatever the backend.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, Protocol

from adapters.lifecycle import Adapter


@dataclass(frozen=True)
class SamplingParams:
    """`n` completions per prompt. temperature 0 = greedy. `seed` makes a call
    reproducible on the same engine, model and thread count."""

    n: int = 8
    temperature: float = 1.0
    top_p: float = 1.0
    max_new_tokens: int = 512
    seed: int = 0


@dataclass
class Completion:
    text: str
    token_ids: list[int]  # sampled tokens, including the end-of-turn token if one was produced
    # log_softmax(logits / T) of each sampled token, as the engine computed it. Recorded for
    # checking engines against the trainer's rescoring; training does not read it (see the
    # importance ratio in adapters/trainer.py).
    logprobs: list[float]
    finish_reason: Literal["stop", "length"]


def stop_token_ids(model: Any, tokenizer: Any) -> set[int]:
    """Where a completion ends: the tokenizer's eos plus every eos id of the model's
    generation config (chat models end a turn with a token of their own). Every engine
    uses this set, so that they agree on where an attempt stops."""
    ids = set()
    eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    for e in eos if isinstance(eos, list) else [eos]:
        if e is not None:
            ids.add(int(e))
    if tokenizer.eos_token_id is not None:
        ids.add(int(tokenizer.eos_token_id))
    return ids


class Engine(Protocol):
    name: str

    def generate(
        self, prompts: list[list[int]], adapter: Adapter | None, sampling: SamplingParams
    ) -> list[list[Completion]]:
        """`sampling.n` completions for each prompt (outer list follows `prompts`).
        `adapter=None` samples the base model."""
        ...
