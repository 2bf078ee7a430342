"""`RemoteVerifier`: the `verify`/`verify_many` API over HTTP to a sandbox server."""

from __future__ import annotations

import httpx
from pydantic import TypeAdapter, ValidationError

from sandbox.errors import VerifierUnreachable
from sandbox.specs import VerifierSpec
from sandbox.verifiers import Verification

_RESULTS = TypeAdapter(list[Verification])
_SPEC = TypeAdapter(VerifierSpec)


class RemoteVerifier:
    """Talks to `sandbox.server` at `url` (e.g. "http://sandbox:8080").

    Limits and HTTP policy are the server's; they cannot be chosen per call.
    Raises VerifierUnreachable when the server cannot be reached, times out, or
    answers something other than a list of Verification (with the server's message).
    """

    def __init__(self, url: str, *, timeout_s: float = 300.0, transport: httpx.BaseTransport | None = None) -> None:
        self.url = url.rstrip("/")
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
        try:
            resp = self._client.post("/v1/verify", json=body)
        except httpx.HTTPError as exc:
            raise VerifierUnreachable(f"sandbox server {self.url} unreachable: {type(exc).__name__}: {exc}") from None
        if resp.status_code != 200:
            raise VerifierUnreachable(f"sandbox server {self.url} answered HTTP {resp.status_code}: {resp.text[:500]}")
        try:
            return _RESULTS.validate_json(resp.content)
        except ValidationError as exc:
            raise VerifierUnreachable(f"sandbox server {self.url} sent a malformed answer: {exc}") from None

    def healthz(self) -> dict[str, object]:
        try:
            resp = self._client.get("/healthz")
            resp.raise_for_status()
        except httpx.HTTPError as exc:
            raise VerifierUnreachable(f"sandbox server {self.url} unreachable: {exc}") from None
        return dict(resp.json())
