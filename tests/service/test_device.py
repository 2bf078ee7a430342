"""What `TTA_DTYPE` trains in, and that a benchmark's host label says the same."""

from __future__ import annotations

import os

import pytest
import torch

from bench import host
from service.device import pick_dtype
from service.settings import get_settings


def test_auto_trains_in_fp32_on_any_cpu_and_bf16_on_a_gpu():
    # fp32 on CPUs with native bf16 too: bf16 rounding is larger than what the guard decides on
    assert pick_dtype("auto", torch.device("cpu")) is torch.float32
    assert pick_dtype("auto", torch.device("cuda")) is torch.bfloat16


def test_an_explicit_dtype_wins():
    assert pick_dtype("bfloat16", torch.device("cpu")) is torch.bfloat16
    assert pick_dtype("float32", torch.device("cuda")) is torch.float32


@pytest.mark.skipif(torch.cuda.is_available(), reason="the label names the GPU there")
@pytest.mark.parametrize(("setting", "label"), [("auto", "fp32"), ("float32", "fp32"), ("bfloat16", "bf16")])
def test_host_label_names_the_dtype_this_process_trains_in(monkeypatch, setting, label):
    monkeypatch.setenv("TTA_DTYPE", setting)
    get_settings.cache_clear()
    host.host_label.cache_clear()
    try:
        assert host.host_label().endswith(f", {label} CPU training")
    finally:
        get_settings.cache_clear()
        host.host_label.cache_clear()


@pytest.mark.parametrize(("flags", "level"), [
    ("fpu sse2 avx avx2 fma avx512f avx512_bf16", "AVX-512-BF16"),
    ("fpu sse2 avx avx2 fma avx512f", "AVX-512"),
    ("fpu sse2 avx avx2 fma", "AVX2"),
    ("fpu sse2 avx", "no AVX2"),
])
def test_host_label_says_which_vector_extensions_timed_it(flags, level):
    """The same 'AMD EPYC, 2 CPUs' has been an AVX-512-BF16 machine and an AVX2-only one, and
    generation speed differs about 2x between them: the label must tell them apart."""
    assert host.cpu_vector_level(f"flags\t\t: {flags}".split(":", 1)[1]) == level
    assert host.cpu_vector_level() in host.host_label()


def test_a_run_s_command_carries_the_settings_it_ran_under(monkeypatch):
    for key in [k for k in os.environ if k.startswith("TTA_")]:
        monkeypatch.delenv(key)
    assert host.reproduce("bench.sdpo_cost", ["--n", "16"]) == "python -m bench.sdpo_cost --n 16"
    monkeypatch.setenv("TTA_MODEL", "coder-1.5b")
    monkeypatch.setenv("TTA_DTYPE", "bfloat16")
    assert host.reproduce("bench.sdpo_cost", ["--sdpo", '{"steps": 1}']) == (
        "TTA_DTYPE=bfloat16 TTA_MODEL=coder-1.5b python -m bench.sdpo_cost --sdpo '{\"steps\": 1}'")
