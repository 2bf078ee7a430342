"""Which machine timed a benchmark run. Each record carries it so a report can say when its
seconds axis compares runs timed on different machines: baselines imported with
`--baselines-from` were timed wherever that run was, and the training dtype changes training
time 2x or more (service.device.auto_dtype_name). Attempts and tokens do not depend on the
machine; kept updates can depend on the dtype (bench/results/dtype_check.md)."""

from __future__ import annotations

import os
import platform
import shlex
import sys
from functools import lru_cache
from pathlib import Path

from service.device import dtype_name
from service.settings import get_settings


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo, e.g. 'AMD EPYC 9R14 96-Core Processor'; on Linux
    `platform.processor()` says only 'x86_64'."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def cpu_vector_level(flags: str | None = None) -> str:
    """The widest vector extension the CPU reports: 'AVX-512-BF16', 'AVX-512', 'AVX2' or 'no AVX2'.
    It matters to every timing here: llama.cpp generated 1.9x faster per attempt on an
    AVX-512-BF16 EPYC than on an AVX2-only one (bench/results/sdpo_cost.jsonl), while fp32
    training ran at about the same speed on both."""
    if flags is None:
        try:
            flags = next((line for line in Path("/proc/cpuinfo").read_text().splitlines()
                          if line.startswith("flags")), "")
        except OSError:
            flags = ""
    have = set(flags.split())
    if "avx512_bf16" in have:
        return "AVX-512-BF16"
    if "avx512f" in have:
        return "AVX-512"
    return "AVX2" if "avx2" in have else "no AVX2"


SHORT = {"float32": "fp32", "bfloat16": "bf16", "float16": "fp16"}


@lru_cache
def host_label() -> str:
    """E.g. 'AMD EPYC 9R14 96-Core Processor, AVX2, 2 CPUs, fp32 CPU training' or '..., GPU NVIDIA H200'.
    The dtype is the one this process trains in (`TTA_DTYPE`, resolved as the trainer does)."""
    parts = [cpu_model(), cpu_vector_level(), f"{os.cpu_count()} CPUs"]
    torch = sys.modules.get("torch")  # only when the run loaded it: never import torch just for a label
    if torch is not None and torch.cuda.is_available():
        parts.append(f"GPU {torch.cuda.get_device_name(0)}")
    else:
        dtype = dtype_name(get_settings().dtype, "cpu")
        parts.append(f"{SHORT.get(dtype, dtype)} CPU training")
    return ", ".join(parts)


def reproduce(module: str, argv: list[str] | None = None) -> str:
    """The command that reproduces this run: the `TTA_` settings it ran under, then
    `python -m module` and its arguments, e.g. 'TTA_MODEL=coder-1.5b python -m bench.sdpo_cost
    --n 16'. The settings matter as much as the flags: the model and the training dtype are
    settings."""
    env = [f"{k}={shlex.quote(v)}" for k, v in sorted(os.environ.items()) if k.startswith("TTA_")]
    return " ".join([*env, "python", "-m", module, shlex.join(sys.argv[1:] if argv is None else argv)]).rstrip()
