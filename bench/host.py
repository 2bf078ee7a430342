"""Which machine timed a benchmark run. Each record carries it so a report can say when its
seconds axis compares runs timed on different machines: baselines imported with
`--baselines-from` were timed wherever that run was, and training on a CPU without native
bf16 is several times slower (DESIGN §4). Attempts and tokens do not depend on the machine."""

from __future__ import annotations

import os
import platform
import sys
from functools import lru_cache
from pathlib import Path

from service.runtime import cpu_has_native_bf16


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


@lru_cache
def host_label() -> str:
    """E.g. 'AMD EPYC 9R14 96-Core Processor, 2 CPUs, fp32 CPU training' or '..., GPU NVIDIA H200'."""
    parts = [cpu_model(), f"{os.cpu_count()} CPUs"]
    torch = sys.modules.get("torch")  # only when the run loaded it: never import torch just for a label
    if torch is not None and torch.cuda.is_available():
        parts.append(f"GPU {torch.cuda.get_device_name(0)}")
    else:
        parts.append("bf16 CPU training" if cpu_has_native_bf16() else "fp32 CPU training")
    return ", ".join(parts)
