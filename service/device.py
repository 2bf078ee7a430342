"""Where the model runs and in what precision: device and dtype choice (`TTA_DEVICE`,
`TTA_DTYPE`). torch is imported where it is used, so that resolving a dtype name (bench host
labels) costs nothing."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch


def auto_dtype_name(device_type: str) -> str:
    """What `TTA_DTYPE=auto` trains in: bf16 on a GPU, fp32 on a CPU.

    Not bf16 on CPUs that compute it natively (AVX-512-BF16, AMX), though training there is
    1.9-2.2x faster in bf16: every layer's output, LoRA delta included, is then rounded to 8
    bits of mantissa, which moved a round's measured divergence by 1.1e-4 to 5.4e-4 nats,
    far more than the changes the trainer's guard decides on. Measured on the dev split
    (bench/results/dtype_check.md, 4 rounds): the gradients agree (cosine 0.997-0.999), but
    the bf16 guard kept an update it read as a 4e-6 decrease which, read in fp32, raised the
    divergence by 1.8e-4; in fp32 the guard kept none of those updates. Without the guard
    the case for bf16 is small on the settings that make sdpo cheap (top 4 blocks, 4 failures
    a round): it cut sdpo's cost per attempt from 1.43x to 1.39x best-of-k's on the default
    model and from 1.74x to 1.58x on the 1.5B (bench/results/sdpo_cost.jsonl, 2026-12-04).
    On a CPU without native bf16, bf16 is emulated and at least 4x slower
    (docs/architecture.md §3)."""
    return "bfloat16" if device_type == "cuda" else "float32"


def dtype_name(setting: str, device_type: str) -> str:
    """`TTA_DTYPE` resolved for a device, without importing torch (bench host labels use it)."""
    return auto_dtype_name(device_type) if setting == "auto" else setting


def pick_device(setting: str) -> torch.device:
    import torch

    if setting == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(setting)


def pick_dtype(setting: str, device: torch.device) -> torch.dtype:
    import torch

    return getattr(torch, dtype_name(setting, device.type))
