"""`RemoteVerifier`: the `verify`/`verify_many` API over HTTP to a sandbox server."""

from __future__ import annotations

import time

import httpx
from pydantic import TypeAdapter, ValidationError

from sandbox.errors import VerifierUnreachable
from sandbox.retry import call_with_retries
from sandbox.specs import VerifierSpec
from sandbox.verifiers import Verification

_RESULTS = TypeAdapter(list[Verification])
_SPEC = TypeAdapter(VerifierSpec)


class RemoteVerifier:
    """Talks to `sandbox.server` at `url` (e.g. "http://sandbox:8080").

    Limits and HTTP policy are the server's; they cannot be chosen per call.
    Raises VerifierUnreachable when the server cannot be reached, times out, or
    answers something other than a list of Verification (with the server's message).

    A request that fails in transport (refused, reset, cut off: the server restarting; or
    timed out) is sent again up to `retries` times, `retry_backoff_s` apart, doubling; an
    answer, whatever its status, is not. Verification is a pure function of the attempt,
    so running it twice is harmless.
    """

    def __init__(self, url: str, *, timeout_s: float = 300.0, retries: int = 3, retry_backoff_s: float = 0.5,
                 transport: httpx.BaseTransport | None = None) -> None:
        self.url = url.rstrip("/")
        self.retries = retries
        self.retry_backoff_s = retry_backoff_s
        self._client = httpx.Client(
            base_url=self.url, timeout=httpx.Timeout(timeout_s, connect=5.0), transport=transport, trust_env=False
        )

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> RemoteVerifier:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def verify(self, spec: VerifierSpec, response: str, *, truncated: bool = False) -> Verification:
        """One attempt; see sandbox.verify."""
        return self.verify_many(spec, [response], [truncated])[0]

    def verify_many(
        self, spec: VerifierSpec, responses: list[str], truncated: list[bool] | None = None
    ) -> list[Verification]:
        """Several attempts in one request; results in input order."""
        body = {
            "spec": _SPEC.dump_python(spec, mode="json"),
            "responses": responses,
            "truncated": truncated,
        }
        tries = self.retries + 1
        try:
            resp = call_with_retries(lambda: self._client.post("/v1/verify", json=body),
                                     retry_on=httpx.TransportError, tries=tries, backoff_s=self.retry_backoff_s)
        except httpx.TransportError as exc:
            raise VerifierUnreachable(f"sandbox server {self.url} unreachable after {tries} tries: "
                                      f"{type(exc).__name__}: {exc}") from None
        except httpx.HTTPError as exc:
            raise VerifierUnreachable(f"sandbox server {self.url} unreachable: {type(exc).__name__}: {exc}") from None
        if resp.status_code != 200:
            raise VerifierUnreachable(f"sandbox server {self.url} answered HTTP {resp.status_code}: {resp.text[:500]}")
        try:
            return _RESULTS.validate_json(resp.content)
        except ValidationError as exc:
            raise VerifierUnreachable(f"sandbox server {self.url} sent a malformed answer: {exc}") from None

    def verify_many_or_errors(
        self, spec: VerifierSpec, responses: list[str], truncated: list[bool] | None = None
    ) -> list[Verification]:
        """`verify_many` with the contract of the in-process `sandbox.verify_many`: it never
        raises for a verifier failure. Once the retries are spent, every attempt comes back
        as verdict "error" (the verifier's fault, not the attempt's) with the reason as its
        feedback, so a job outlives a sandbox restart instead of failing."""
        started = time.monotonic()
        try:
            return self.verify_many(spec, responses, truncated)
        except VerifierUnreachable as exc:
            error = Verification(verdict="error", kind="error", score=0.0, passed=0, total=0,
                                 feedback=f"Verifier error: {exc}", timings={"total": time.monotonic() - started})
            return [error.model_copy() for _ in responses]

    def healthz(self) -> dict[str, object]:
        try:
            resp = self._client.get("/healthz")
            resp.raise_for_status()
        except httpx.HTTPError as exc:
            raise VerifierUnreachable(f"sandbox server {self.url} unreachable: {exc}") from None
        return dict(resp.json())
