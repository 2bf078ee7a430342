"""Verifiers: judge attempts, run untrusted code isolated, write the feedback a model learns from.

Public API (everything else is internal):
  verify(spec, response, *, truncated=False, limits=None, http_policy=None, runner=None) -> Verification
  verify_many(spec, responses, truncated=None, *, limits=None, http_policy=None, runner=None, max_parallel=2)
  VerifierSpec (the spec union) and its members; Verification; SandboxLimits; HttpPolicy
  Runner / RunResult (isolated execution), extract_code, RemoteVerifier, create_app
  Errors: SandboxError, SandboxUnavailable, VerifierUnreachable, HttpVerifierRefused
This package knows nothing of models and never imports `service`.
"""

from sandbox.client import RemoteVerifier
from sandbox.errors import (
    HttpVerifierRefused,
    SandboxError,
    SandboxUnavailable,
    VerifierUnreachable,
)
from sandbox.extract import extract_code
from sandbox.http_verifier import HttpPolicy
from sandbox.limits import SandboxLimits
from sandbox.runner import Runner, RunResult
from sandbox.specs import (
    ExactSpec,
    HttpSpec,
    MathSpec,
    PythonTestsSpec,
    RegexSpec,
    TestCase,
    VerifierSpec,
)
from sandbox.verifiers import Verification, verify, verify_many


def create_app(*args, **kwargs):  # type: ignore[no-untyped-def]
    """See sandbox.server.create_app (imported lazily: FastAPI is only needed to serve)."""
    from sandbox.server import create_app as _create_app

    return _create_app(*args, **kwargs)


__all__ = [
    "ExactSpec",
    "HttpPolicy",
    "HttpSpec",
    "HttpVerifierRefused",
    "MathSpec",
    "PythonTestsSpec",
    "RegexSpec",
    "RemoteVerifier",
    "RunResult",
    "Runner",
    "SandboxError",
    "SandboxLimits",
    "SandboxUnavailable",
    "TestCase",
    "Verification",
    "VerifierSpec",
    "VerifierUnreachable",
    "create_app",
    "extract_code",
    "verify",
    "verify_many",
]
