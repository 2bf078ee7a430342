"""The SDPO knobs of one request, declared once with their docs and defaults.

These are the public contract's `sdpo` and `sdpo.lora` fields (`service.schemas` reuses
them as they are), and what the trainer, the loss and the adapter pool read: nothing on the
adapters side declares a default of its own. Pydantic only, no torch, so that the API
process can validate a request without loading the training stack.
"""

from __future__ import annotations

from typing import Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, model_validator

# The linear layers of the Llama/Qwen2 block, all of which carry the adapter by default.
ALL_LINEAR = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


class _Options(BaseModel):
    model_config = ConfigDict(extra="forbid")


class LoraOptions(_Options):
    # Rank 4 since the dev-split sweep (bench/results/sdpo_sweep_token_level.md): the only
    # setting whose pass-probability factor interval lay above 1x (1.15x, 1.04x-1.29x); rank 16
    # gave 0.63x there. Same scale (alpha / rank = 2) as before.
    rank: int = Field(4, ge=1, le=256, description="LoRA rank r.")
    alpha: int = Field(8, ge=1, le=1024, description="LoRA scaling numerator (scale = alpha / rank).")
    targets: list[str] = Field(
        default_factory=lambda: list(ALL_LINEAR),
        min_length=1,
        description="Names of the linear layers that carry the adapter (checked against the served model).",
    )
    layers: int | None = Field(
        None, ge=1, le=512,
        description="Put the adapter on the top N decoder blocks only (null = every block; checked against the "
        "served model). Autograd then records nothing below the lowest adapted block, so backward and its saved "
        "activations shrink with N; the gradient of the adapted weights is the same as it would be there.",
    )


# Named settings a request can start from (`{"preset": "paper", "lr": 3e-5}`): a preset fills
# the fields the request leaves out, and an explicit field always wins.
# "paper" is the published test-time setting: one step per round of attempts, reverse KL on
# the student's top-20 tokens plus a tail, an EMA teacher at rate 0.01, every attempt distilled,
# every step taken as computed (no guard). The paper fine-tunes all weights at lr 1e-6; a LoRA
# needs its own lr. On the default model's hard dev split no lr helped: chained over 3 rounds,
# the pass factor fell to 0.93x at 3e-5 and 0.77x at 1e-4 (bench/README.md, "The paper preset
# on the hard dev split"). On coder-1.5b the field's default did help: 1.05x (1.01x-1.11x) after
# 3 chained rounds on the edge dev split, rising each round ("The paper preset and the attempt
# gate on the 1.5B"). So the preset sets none, and the field's default applies; 1e-4 is
# measured on one model and lr is not swept there yet.
# "paper-cpu" is "paper" priced for a CPU: the adapter on the top 4 blocks only and at most 4
# failures distilled per round. One round of 16 then costs 1.49x best-of-k's seconds per attempt
# on the default model and 1.51x on coder-1.5b (AVX-512-BF16, fp32; bench/results/sdpo_cost.jsonl),
# peak RSS 4.6 and 10.4 GB. It is the setting measured in the chained sweeps named above.
PresetName = Literal["paper", "paper-cpu"]
_PAPER: dict[str, Any] = {"steps": 1, "token_level": False, "alpha": 1.0, "top_k": 20, "teacher_ema": 0.01,
                          "max_samples": None, "replay_rounds": 0, "guard": False}
PRESETS: dict[str, dict[str, Any]] = {
    "paper": _PAPER,
    "paper-cpu": {**_PAPER, "max_samples": 4, "lora": {"layers": 4}},
}
assert set(get_args(PresetName)) == set(PRESETS)


class SdpoOptions(_Options):
    preset: PresetName | None = Field(
        None, description="Start from a named setting (the fields given beside it override it): "
        "'paper' = the published test-time SDPO (1 step per round, reverse KL top-20, EMA teacher 0.01, no guard); "
        "'paper-cpu' = the same with the adapter on the top 4 blocks and at most 4 failures a round, about 1.5x "
        "best-of-k's seconds per attempt on 2 CPU cores.",
    )
    steps: int = Field(4, ge=0, le=64, description="Gradient steps after each failed round.")
    lr: float = Field(
        1e-4, gt=0, le=1e-2,
        description="AdamW learning rate (constant). 3e-4 overshot on short answers (divergence rose after one step).",
    )
    alpha: float = Field(
        0.5, ge=0.0, le=1.0,
        description="Divergence: 0 = forward KL(teacher||student), 1 = reverse KL, between = generalised JSD.",
    )
    top_k: int | None = Field(
        100, ge=1, le=1_000_000, description="Distil over the student's top-k tokens plus a tail bucket; null = full vocabulary."
    )
    token_level: bool = Field(
        True,
        description="Reverse KL estimated on the sampled tokens only; ignores alpha and top_k. The default since the "
        "dev-split sweep (bench/results/sdpo_sweep.md): on the default model, distilling the full top-k distribution "
        "cut the pass probability of one attempt to 0.08x, this left it at 1.0-1.1x. false = the top-k JSD/KL loss.",
    )
    negative_only: bool = Field(
        False,
        description="With token_level: only push down the failed attempt's tokens that the feedback-shown teacher "
        "finds less likely; never pull tokens up toward the teacher (for models that use feedback poorly).",
    )
    teacher_ema: float = Field(
        0.05, gt=0.0, le=1.0,
        description="EMA rate of the teacher's LoRA weights per step; 1.0 = teacher is the student at round start.",
    )
    is_clip: float | None = Field(
        2.0, gt=0,
        description="Clip of the importance ratio pi_theta / pi_round_start when a round's steps reuse its samples; "
        "null = no ratio.",
    )
    replay_rounds: int = Field(
        0, ge=0, le=16, description="Also distil the failures of this many earlier rounds."
    )
    max_samples: int | None = Field(
        None, ge=1, le=1024,
        description="Distil at most this many failed attempts per round (null = all): the round's own first, then "
        "replayed ones. Training time per round scales with it; attempts are independent draws, so the first m "
        "are a fair sample of the round.",
    )
    guard: bool = Field(
        True,
        description="Keep a round's update only if a measuring pass after it finds the divergence no higher "
        "(and backtrack an overshooting step). false = take every step as computed and save that pass; the guard "
        "cannot read a small step's effect through bf16 rounding, so without it bf16 training is usable (on GPUs "
        "and CPUs with native bf16).",
    )
    gate: bool = Field(
        False,
        description="Distil only the failed attempts the feedback-shown teacher recognises as wrong: those whose "
        "log-probability under the teacher is below the student's (summed over the attempt's tokens). Needs no "
        "passing program. Failures are scored in order until `max_samples` are kept; a round whose every failure "
        "the teacher rates at least as likely as the student trains nothing. Costs one student pass without "
        "autograd over the failures it scores.",
    )
    demonstration: Literal["none", "best_partial"] = Field(
        "none",
        description='What the teacher sees of the failed round beside each attempt\'s own feedback. "best_partial": '
        "the code of the round's attempt that passed the most test cases (if it passed any, and more than this "
        "attempt), with its score; needs a verifier with several cases (python_tests; HumanEval checks count one "
        "case per assert). On coder-1.5b over 3 chained rounds, pooled over HumanEval/65 and /119: 1.00x against the "
        "paper-cpu preset's 1.03x (bench/results/sdpo_sweep_partial.md), not separable.",
    )
    grpo_weight: float = Field(
        0.0,
        ge=0.0,
        le=10.0,
        description="Weight of a group-relative policy-gradient term mixed into the distillation loss: each failed "
        "attempt's tokens get -w * A * log p, where A is its fraction of test cases passed, standardised over the "
        "round's failures (GRPO's advantage on partial credit). 0 turns it off; a round whose failures all scored "
        "the same adds nothing. Needs a verifier with several cases. At w=1 on coder-1.5b over 3 chained rounds, "
        "pooled over HumanEval/65 and /119: 1.02x against the paper-cpu preset's 1.03x "
        "(bench/results/sdpo_sweep_partial.md), not separable.",
    )
    max_grad_norm: float = Field(1.0, gt=0, description="Gradient clipping.")
    micro_batch: int = Field(4, ge=1, le=64, description="Sequences per forward pass (memory vs speed).")
    lora: LoraOptions = Field(default_factory=LoraOptions)

    @model_validator(mode="before")
    @classmethod
    def _fill_from_preset(cls, data: Any) -> Any:
        # an unhashable or unknown preset is left for the field's own check to reject with a 422
        preset = data.get("preset") if isinstance(data, dict) else None
        if isinstance(preset, str) and preset in PRESETS:
            merged = {**PRESETS[preset], **data}
            for key, value in PRESETS[preset].items():  # a nested field given in part keeps the rest
                if isinstance(value, dict) and isinstance(data.get(key), dict):
                    merged[key] = {**value, **data[key]}
            return merged
        return data

    @model_validator(mode="after")
    def _negative_only_is_token_level(self) -> "SdpoOptions":
        if self.negative_only and not self.token_level:
            raise ValueError("negative_only applies to the token-level loss: set token_level: true as well")
        return self
