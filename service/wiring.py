"""The composition root: load the configured model and build what a solve needs from the
settings (the model, its adapter pool and trainer, the engine, the verifier), once per process."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

from service.device import pick_device, pick_dtype
from service.settings import Settings
from service.weights import ResolvedModel, resolve_model

if TYPE_CHECKING:
    import torch
# torch is imported where it is used: `tta verify` and `tta sandbox serve` build only a
# verifier, and importing torch cost them ~2.5 s per call

log = logging.getLogger(__name__)


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
