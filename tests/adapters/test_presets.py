"""Named SDPO settings: a preset fills what a request leaves out, and never more."""

import pytest
from pydantic import ValidationError

from adapters.options import PRESETS, SdpoOptions


def test_paper_preset_is_the_published_setting():
    o = SdpoOptions(preset="paper")
    assert (o.steps, o.token_level, o.alpha, o.top_k, o.teacher_ema, o.guard, o.max_samples) == \
        (1, False, 1.0, 20, 0.01, False, None)
    assert o.lr == SdpoOptions().lr  # the LoRA lr is not the paper's full fine-tuning lr


def test_explicit_fields_override_the_preset_and_survive_a_round_trip():
    o = SdpoOptions.model_validate({"preset": "paper", "lr": 3e-5, "guard": True, "lora": {"layers": 4}})
    assert (o.lr, o.guard, o.steps, o.lora.layers) == (3e-5, True, 1, 4)
    # A stored job re-validates its options: the dump must come back identical.
    assert SdpoOptions.model_validate(o.model_dump()) == o


def test_unknown_preset_is_a_validation_error_naming_the_choices():
    with pytest.raises(ValidationError, match="paper"):
        SdpoOptions(preset="fast")


def test_every_preset_is_a_valid_setting():
    for name, fields in PRESETS.items():
        SdpoOptions.model_validate(fields)
        SdpoOptions(preset=name)


@pytest.mark.parametrize("bad", [[{}], {"name": "paper"}, 3])
def test_a_preset_of_the_wrong_type_is_a_validation_error_not_a_crash(bad):
    # found by the API fuzzer: a list here raised TypeError (unhashable) inside the validator
    with pytest.raises(ValidationError, match="preset"):
        SdpoOptions.model_validate({"preset": bad})


def test_paper_cpu_is_the_paper_preset_priced_for_a_cpu_and_a_partial_lora_keeps_its_layers():
    o = SdpoOptions(preset="paper-cpu")
    paper = SdpoOptions(preset="paper")
    assert (o.max_samples, o.lora.layers) == (4, 4)
    assert o.model_dump(exclude={"preset", "max_samples", "lora"}) == paper.model_dump(exclude={"preset", "max_samples", "lora"})
    # a request that sets another LoRA field keeps the preset's layers; one that sets layers wins
    given = SdpoOptions.model_validate({"preset": "paper-cpu", "lora": {"rank": 8}})
    assert (given.lora.rank, given.lora.layers) == (8, 4)
    assert SdpoOptions.model_validate({"preset": "paper-cpu", "lora": {"layers": None}}).lora.layers is None
    assert SdpoOptions.model_validate(given.model_dump()) == given
