"""`select_engine`: what `TTA_ENGINE` picks, and one clear message when a backend is missing."""

from __future__ import annotations

import importlib.util

import pytest

from adapters.lifecycle import AdapterPool
from service.engines import select_engine
from service.errors import EngineUnavailable
from service.settings import Settings


@pytest.mark.skipif(importlib.util.find_spec("vllm") is not None, reason="vllm is installed here")
def test_vllm_without_the_package_says_how_to_get_it(tiny_model):
    with pytest.raises(EngineUnavailable) as err:
        select_engine(Settings(model="tiny", engine="vllm"), tiny_model, AdapterPool(tiny_model.model))
    msg = str(err.value)
    assert "vllm" in msg and "scripts/setup_vllm.sh" in msg


def test_auto_on_cpu_never_picks_vllm(tiny_model):
    assert tiny_model.device.type == "cpu"
    engine = select_engine(Settings(model="tiny", engine="auto"), tiny_model, AdapterPool(tiny_model.model))
    expected = "llamacpp" if importlib.util.find_spec("llama_cpp") else "transformers"
    assert engine.name == expected
    if hasattr(engine, "close"):
        engine.close()
