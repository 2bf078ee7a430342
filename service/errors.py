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


# ---- HTTP service and job store (service/app.py, store.py, worker.py) --------------------


class Unauthorized(TTAError):
    code = "unauthorized"


class JobNotFound(TTAError):
    code = "job_not_found"


class AdapterNotFound(TTAError):
    code = "adapter_not_found"


class JobConflict(TTAError):
    """The job is in a state that does not allow the operation (e.g. cancelling a finished job)."""

    code = "job_conflict"


class InvalidRequest(TTAError):
    code = "invalid_request"


class PayloadTooLarge(TTAError):
    code = "payload_too_large"


class TooManyJobs(TTAError):
    code = "too_many_jobs"


class StoreUnavailable(TTAError):
    code = "store_unavailable"


class ServiceMisconfigured(TTAError):
    code = "service_misconfigured"


class LeaseLost(TTAError):
    """A worker found that another worker owns its job now (its lease had expired)."""

    code = "lease_lost"


class ModelNotServed(TTAError):
    """An OpenAI-style `model` that names a strategy or model this service does not run."""

    code = "model_not_found"
