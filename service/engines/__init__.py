"""Generation backends behind one interface (`base.Engine`); `select_engine` picks one."""

from __future__ import annotations

import importlib.util
from typing import TYPE_CHECKING

from service.errors import EngineUnavailable

if TYPE_CHECKING:
    from adapters.lifecycle import AdapterPool
    from service.engines.base import Engine
    from service.runtime import LoadedModel
    from service.settings import Settings


def available(package: str) -> bool:
    return importlib.util.find_spec(package) is not None


def select_engine(settings: Settings, lm: LoadedModel, pool: AdapterPool) -> Engine:
    choice = settings.engine
    if choice == "auto":
        # llama.cpp and vLLM engines land with their own issues; until then the reference
        # engine serves every device.
        choice = "transformers"
    if choice == "transformers":
        from service.engines.transformers import TransformersEngine

        return TransformersEngine(pool, lm.tokenizer, lm.device)
    raise EngineUnavailable(
        f"TTA_ENGINE={choice!r} is not available in this build yet; use 'transformers' or 'auto'."
    )
