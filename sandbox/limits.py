"""Resource limits and isolation mode of one sandboxed execution."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

MIB = 1024 * 1024  # the limits below are given in MiB


class SandboxLimits(BaseModel):
    """Limits applied to every sandboxed run (one run = all test cases of one attempt).

    The defaults suit short competitive-programming style programs on a small
    machine. `mode="unsafe"` runs code WITHOUT any isolation (no namespaces, the
    host filesystem and network are reachable); it exists for development
    machines without bubblewrap and must be chosen explicitly (the service maps
    `TTA_SANDBOX=unsafe` to it).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    mode: Literal["bwrap", "unsafe"] = Field(
        "bwrap",
        description='"bwrap": namespaces + rlimits (the default, fails closed without bubblewrap). '
        '"unsafe": rlimits only, no isolation at all.',
    )
    cpu_s: int = Field(10, ge=1, le=600, description="CPU seconds for the whole process (RLIMIT_CPU), all cases together.")
    memory_mb: int = Field(
        1024, ge=64, le=65536, description="Address space per process in MiB (RLIMIT_AS); virtual, not resident, memory."
    )
    max_processes: int = Field(
        32,
        ge=4,
        le=4096,
        description="Processes and threads the sandbox uid may hold (RLIMIT_NPROC); bwrap itself uses 2 of them.",
    )
    max_file_mb: int = Field(16, ge=1, le=4096, description="Largest file the code may write, in MiB (RLIMIT_FSIZE).")
    max_open_files: int = Field(64, ge=16, le=65536, description="Open file descriptors per process (RLIMIT_NOFILE).")
    tmpfs_mb: int = Field(64, ge=1, le=4096, description="Size of each private tmpfs (/tmp and the work directory), in MiB.")
    wall_timeout_s: float = Field(
        30.0, gt=0, le=3600, description="Wall-clock limit of the whole run; the process tree is killed when it passes."
    )
    output_cap_bytes: int = Field(
        64 * 1024,
        ge=1024,
        le=64 * 1024 * 1024,
        description="Bytes kept of stdout and of stderr each; the rest is drained and dropped, with a visible marker.",
    )
    channel_cap_bytes: int = Field(
        8 * 1024 * 1024,
        ge=4096,
        le=256 * 1024 * 1024,
        description="Bytes kept of the harness's result channel (per-case records).",
    )
