"""Typed errors. Each carries a stable `code`; the HTTP layer maps them to status codes once."""

from __future__ import annotations


class TTAError(Exception):
    code = "internal_error"

    def __init__(self, message: str, *, details: dict | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details or {}


class ModelNotInstalled(TTAError):
    code = "model_not_installed"


class ModelCorrupt(TTAError):
    code = "model_corrupt"


class InvalidProblem(TTAError):
    code = "invalid_problem"


class EngineUnavailable(TTAError):
    code = "engine_unavailable"
