"""Per-request LoRA adapters on one shared base model.

One `AdapterPool` holds the base model (frozen) wrapped once in a PEFT model; each job
gets its own named adapter, created on demand and deleted when the job ends, so memory
does not grow with the number of jobs served. Snapshots are safetensors bytes (weights +
the LoRA settings in the header metadata), which is what the store persists per round and
what the HTTP API hands out.

Not thread-safe by itself: callers serialise access with `pool.lock`, because PEFT has one
*active* adapter per model and generation/training switch it.
"""

from __future__ import annotations

import json
import re
import struct
import threading
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Iterator

import torch
from peft import LoraConfig, PeftModel, get_peft_model
from peft.utils import get_peft_model_state_dict, set_peft_model_state_dict
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from adapters.options import LoraOptions

SNAPSHOT_FORMAT = "tta-lora/1"


def peft_config(spec: LoraOptions, num_layers: int) -> LoraConfig:
    """PEFT's config for `spec` on a model of `num_layers` decoder blocks."""
    if spec.layers is not None and spec.layers > num_layers:
        raise ValueError(f"lora.layers={spec.layers}, but the model has {num_layers} decoder blocks")
    top = None if spec.layers is None else list(range(num_layers - spec.layers, num_layers))
    # No dropout: a round must be a pure function of (weights, round data) so that a resumed
    # job continues exactly, and dropout would draw random masks at every step.
    return LoraConfig(
        r=spec.rank,
        lora_alpha=spec.alpha,
        lora_dropout=0.0,
        target_modules=list(spec.targets),
        layers_to_transform=top,
        layers_pattern=None if top is None else "layers",
        bias="none",
        task_type="CAUSAL_LM",
    )


@dataclass
class Adapter:
    """A job's adapter. `version` increases with every training round; engines that cache
    adapters (llama.cpp, vLLM) must key on (name, version), never on name alone."""

    name: str
    spec: LoraOptions
    version: int = 0
    ema: dict[str, torch.Tensor] = field(default_factory=dict)  # teacher weights, same keys


def adapter_name(job_id: str) -> str:
    # PEFT uses the name as a module key: keep it an identifier, and away from "lora_".
    return "job_" + re.sub(r"[^0-9A-Za-z_]", "_", job_id)


class AdapterPool:
    def __init__(self, base_model: torch.nn.Module) -> None:
        for p in base_model.parameters():
            p.requires_grad_(False)
        self.base = base_model
        self.model: PeftModel | None = None
        self.adapters: dict[str, Adapter] = {}
        self.lock = threading.RLock()

    @property
    def num_layers(self) -> int:
        """Decoder blocks of the base model (what `lora.layers` counts from the top)."""
        return int(self.base.config.num_hidden_layers)

    # -- creation and deletion -------------------------------------------------------
    def create(self, job_id: str, spec: LoraOptions, seed: int = 0) -> Adapter:
        name = adapter_name(job_id)
        if name in self.adapters:
            raise ValueError(f"adapter for job {job_id!r} already exists")
        # LoRA A is initialised randomly: seed it so that a job is reproducible.
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            if self.model is None:
                self.model = get_peft_model(self.base, peft_config(spec, self.num_layers), adapter_name=name)
            else:
                self.model.add_adapter(name, peft_config(spec, self.num_layers))
        adapter = Adapter(name=name, spec=spec)
        self.adapters[name] = adapter
        adapter.ema = {k: v.detach().clone() for k, v in self.weights(adapter).items()}
        return adapter

    def delete(self, adapter: Adapter) -> None:
        if adapter.name not in self.adapters:
            return
        assert self.model is not None
        self.model.delete_adapter(adapter.name)
        del self.adapters[adapter.name]

    # -- access ------------------------------------------------------------------------
    def activate(self, adapter: Adapter) -> PeftModel:
        """Make `adapter` the one applied in forward passes; its weights become trainable."""
        assert self.model is not None
        self.model.set_adapter(adapter.name)
        return self.model

    @contextmanager
    def base_only(self) -> Iterator[torch.nn.Module]:
        """Forward passes without any adapter (best-of-k, multi-turn, base teacher)."""
        if self.model is None or not self.adapters:
            # No adapter left: the injected LoRA layers hold nothing and act as identity.
            # (PEFT's disable_adapter would look up the deleted active adapter.)
            yield self.base
        else:
            with self.model.disable_adapter():
                yield self.model

    def parameters(self, adapter: Adapter) -> dict[str, torch.nn.Parameter]:
        """The adapter's own parameters, keyed by module path (live, trainable)."""
        assert self.model is not None
        marker = f".{adapter.name}."
        return {n: p for n, p in self.model.named_parameters() if marker in n}

    def weights(self, adapter: Adapter) -> dict[str, torch.Tensor]:
        return {n: p.data for n, p in self.parameters(adapter).items()}

    def load_weights(self, adapter: Adapter, tensors: dict[str, torch.Tensor]) -> None:
        with torch.no_grad():
            for n, p in self.parameters(adapter).items():
                p.copy_(tensors[n])

    @contextmanager
    def ema_weights(self, adapter: Adapter) -> Iterator[None]:
        """Temporarily put the EMA (teacher) weights in place of the student's."""
        saved = {n: t.clone() for n, t in self.weights(adapter).items()}
        self.load_weights(adapter, adapter.ema)
        try:
            yield
        finally:
            self.load_weights(adapter, saved)

    def update_ema(self, adapter: Adapter, rate: float) -> None:
        with torch.no_grad():
            for n, t in self.weights(adapter).items():
                adapter.ema[n].lerp_(t, rate)

    # -- persistence ---------------------------------------------------------------------
    def snapshot(self, adapter: Adapter) -> bytes:
        """The adapter (student and EMA teacher) as safetensors bytes.

        Student tensors use PEFT's state-dict keys (loadable by `PeftModel`); the EMA copy
        is stored under an `ema::` prefix."""
        assert self.model is not None
        tensors = {
            k: v.detach().to(torch.float32).contiguous()
            for k, v in get_peft_model_state_dict(self.model, adapter_name=adapter.name).items()
        }
        for n, t in adapter.ema.items():
            tensors["ema::" + n.replace(f".{adapter.name}.", ".")] = t.to(torch.float32).contiguous()
        meta = {
            "format": SNAPSHOT_FORMAT,
            "lora": adapter.spec.model_dump_json(),
            "version": str(adapter.version),
        }
        return st_save(tensors, metadata=meta)

    def restore(self, job_id: str, blob: bytes) -> Adapter:
        """Recreate a job's adapter from `snapshot` bytes (replacing any existing one)."""
        meta, tensors = read_snapshot(blob)
        # Snapshots written before the LoRA settings became LoraOptions also record dropout,
        # which was always 0.0.
        spec = LoraOptions.model_validate({k: v for k, v in meta["lora"].items() if k != "dropout"})
        name = adapter_name(job_id)
        if name in self.adapters:
            self.delete(self.adapters[name])
        adapter = self.create(job_id, spec)
        assert self.model is not None
        student = {k: v for k, v in tensors.items() if not k.startswith("ema::")}
        set_peft_model_state_dict(self.model, student, adapter_name=name)
        for n in adapter.ema:
            adapter.ema[n] = tensors["ema::" + n.replace(f".{name}.", ".")].clone()
        adapter.version = int(meta["version"])
        return adapter


def read_snapshot(blob: bytes) -> tuple[dict, dict[str, torch.Tensor]]:
    # The safetensors header is an 8-byte little-endian length followed by JSON.
    (n,) = struct.unpack("<Q", blob[:8])
    header = json.loads(blob[8 : 8 + n])
    meta = header.get("__metadata__", {})
    if meta.get("format") != SNAPSHOT_FORMAT:
        raise ValueError("not a tta LoRA snapshot (format marker missing)")
    return {"lora": json.loads(meta["lora"]), "version": meta["version"]}, st_load(blob)
