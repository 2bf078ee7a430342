"""Device and dtype choice, and loading the base model + tokenizer for torch engines."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

from service.models import ResolvedModel, resolve_model
from service.settings import Settings

if TYPE_CHECKING:
    import torch
# torch is imported where it is used: `tta verify` and `tta sandbox serve` build only a
# verifier, and importing torch cost them ~2.5 s per call

log = logging.getLogger(__name__)


def auto_dtype_name(device_type: str) -> str:
    """What `TTA_DTYPE=auto` trains in: bf16 on a GPU, fp32 on a CPU.

    Not bf16 on CPUs that compute it natively (AVX-512-BF16, AMX), though training there is
    1.9-2.2x faster in bf16: every layer's output, LoRA delta included, is then rounded to 8
    bits of mantissa, which moved a round's measured divergence by 1.1e-4 to 5.4e-4 nats,
    far more than the changes the trainer's guard decides on. Measured on the dev split
    (bench/results/dtype_check.md, 4 rounds): the gradients agree (cosine 0.997-0.999), but
    the bf16 guard kept an update it read as a 4e-6 decrease which, read in fp32, raised the
    divergence by 1.8e-4; in fp32 the guard kept none of those updates.
    On a CPU without native bf16, bf16 is emulated and at least 4x slower (DESIGN §4)."""
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


@dataclass
class LoadedModel:
    resolved: ResolvedModel
    model: torch.nn.Module
    tokenizer: object
    device: torch.device
    dtype: torch.dtype


def load_model(settings: Settings) -> LoadedModel:
    """Resolve (assemble, verify, materialise) and load the configured model, offline."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if settings.threads:
        torch.set_num_threads(settings.threads)
    resolved = resolve_model(settings.model, settings.cache_dir)
    device = pick_device(settings.device)
    dtype = pick_dtype(settings.dtype, device)
    tok = AutoTokenizer.from_pretrained(resolved.hf_dir, local_files_only=True)
    model = AutoModelForCausalLM.from_pretrained(resolved.hf_dir, dtype=dtype, local_files_only=True)
    model.to(device).eval()
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    log.info("loaded %s on %s in %s", resolved.name, device, dtype)
    return LoadedModel(resolved=resolved, model=model, tokenizer=tok, device=device, dtype=dtype)


def build_verifier(settings: Settings):
    """In-process sandbox, or the remote sandbox service when TTA_SANDBOX_URL is set."""
    from functools import partial

    from sandbox.verifiers import verify_many

    if settings.sandbox_url:
        from sandbox.client import RemoteVerifier

        return RemoteVerifier(settings.sandbox_url).verify_many_or_errors
    return partial(verify_many, limits=settings.sandbox_limits, http_policy=settings.http_policy)


def build_solver_deps(settings: Settings, lm: LoadedModel | None = None):
    """Everything a `Solver` needs, built once per process."""
    from adapters.lifecycle import AdapterPool
    from adapters.trainer import SDPOTrainer
    from service.engines import select_engine
    from service.solver import SolverDeps

    lm = lm or load_model(settings)
    pool = AdapterPool(lm.model)
    return SolverDeps(
        model_name=lm.resolved.name,
        tokenizer=lm.tokenizer,
        pool=pool,
        trainer=SDPOTrainer(pool, lm.device),
        engine=select_engine(settings, lm, pool),
        verify=build_verifier(settings),
    )
