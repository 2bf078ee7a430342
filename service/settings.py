"""The one settings object. Every field is an environment variable with the `TTA_` prefix."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


def _default_cache_dir() -> Path:
    import os

    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "tta"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="TTA_", extra="ignore")

    model: str = Field(
        "default",
        description="`default` (Qwen2.5-Coder-0.5B-Instruct), `tiny` (SmolLM2-135M-Instruct) "
        "or a path to a local Hugging Face model directory. Never downloaded.",
    )
    cache_dir: Path = Field(
        default_factory=_default_cache_dir,
        description="Where assembled GGUF files and materialised HF models are kept.",
    )
    engine: Literal["auto", "transformers", "llamacpp", "vllm"] = Field(
        "auto", description="Generation backend; `auto` picks the best one available."
    )
    device: str = Field("auto", description="`auto`, `cpu` or `cuda`.")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "auto",
        description="Training/inference dtype; `auto` = bf16 on GPUs and CPUs with native "
        "bf16 (AVX-512-BF16/AMX), fp32 otherwise (emulated bf16 is >4x slower).",
    )
    threads: int | None = Field(None, description="torch intra-op threads; default: all cores.")
    sandbox: Literal["bwrap", "unsafe"] = Field(
        "bwrap",
        description="`bwrap` isolates model-written code with bubblewrap and refuses to run "
        "without it; `unsafe` runs it unisolated (development only, warns loudly).",
    )
    sandbox_url: str | None = Field(
        None, description="If set, verify through a remote `tta sandbox serve` at this URL."
    )
    redis_url: str | None = Field(None, description="Redis URL; unset = embedded Redis.")


@lru_cache
def get_settings() -> Settings:
    return Settings()
