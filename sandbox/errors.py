"""Typed errors of the sandbox package.

Callers (the service) map these to HTTP once; inside the package they are raised
where the problem arises and never swallowed into a verdict silently.
"""

from __future__ import annotations


class SandboxError(RuntimeError):
    """Base class of every error this package raises on purpose."""


class SandboxUnavailable(SandboxError):
    """Isolation cannot be provided, so untrusted code is refused.

    Raised when bubblewrap is missing or cannot create its namespaces, or when
    bwrap failed to set up a run. The runner fails closed: it never falls back
    to running code unisolated unless mode "unsafe" was chosen explicitly.
    """


class VerifierUnreachable(SandboxError):
    """A remote verifier (the sandbox server or a client's HTTP verifier) did not answer."""


class HttpVerifierRefused(SandboxError):
    """The HTTP verifier's target is not allowed by the policy (disabled, or an SSRF-prone address)."""
