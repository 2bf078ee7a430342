"""What every `tta` command shares: the stderr console, the one way a command fails, and
quiet, offline third-party libraries."""

from __future__ import annotations

import os
from typing import NoReturn

import typer
from rich.console import Console

err = Console(stderr=True)


def quiet_libraries() -> None:
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never reach for a hub
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import warnings

    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=UserWarning, module="peft")


def fail(message: str, code: int = 2) -> NoReturn:
    """One line on stderr naming what to fix, then exit `code` (2: bad input or option)."""
    err.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)
