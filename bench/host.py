"""Which machine timed a benchmark run. Each record carries it so a report can say when its
seconds axis compares runs timed on different machines: baselines imported with
`--baselines-from` were timed wherever that run was, and the training dtype changes training
time 2x or more (service.device.auto_dtype_name). Attempts and tokens do not depend on the
machine; kept updates can depend on the dtype (bench/results/dtype_check.md)."""

from __future__ import annotations

import os
import platform
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


SHORT = {"float32": "fp32", "bfloat16": "bf16", "float16": "fp16"}


@lru_cache
def host_label() -> str:
    """E.g. 'AMD EPYC 9R14 96-Core Processor, 2 CPUs, fp32 CPU training' or '..., GPU NVIDIA H200'.
    The dtype is the one this process trains in (`TTA_DTYPE`, resolved as the trainer does)."""
    parts = [cpu_model(), f"{os.cpu_count()} CPUs"]
    torch = sys.modules.get("torch")  # only when the run loaded it: never import torch just for a label
    if torch is not None and torch.cuda.is_available():
        parts.append(f"GPU {torch.cuda.get_device_name(0)}")
    else:
        dtype = dtype_name(get_settings().dtype, "cpu")
        parts.append(f"{SHORT.get(dtype, dtype)} CPU training")
    return ", ".join(parts)
