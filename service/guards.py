"""Request guards of the HTTP API: bearer API keys and the request size limit.

Auth policy (docs/architecture.md §6: open only when explicitly disabled):
  TTA_AUTH=on (default) with TTA_API_KEYS="k1,k2"  -> `Authorization: Bearer <key>` required on /v1/*
  TTA_AUTH=on with no keys                         -> the app refuses to start (ServiceMisconfigured)
  TTA_AUTH=off                                     -> open; every caller is the key id "anonymous"
/healthz, /readyz, /metrics and the docs stay open (probes and scrapers carry no key).
"""

from __future__ import annotations

import hmac

from fastapi import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.errors import ServiceMisconfigured, Unauthorized
from service.http_errors import error_response
from service.settings import Settings
from service.store import key_id


class ApiKeys:
    def __init__(self, settings: Settings) -> None:
        self.enabled = settings.auth != "off"
        self.keys = settings.api_key_list
        if self.enabled and not self.keys:
            raise ServiceMisconfigured(
                "no API keys configured: set TTA_API_KEYS=key1,key2 (clients send `Authorization: Bearer <key>`), "
                "or run an open service explicitly with TTA_AUTH=off")

    def __call__(self, request: Request) -> str:
        """FastAPI dependency: the caller's key id (scope of idempotency keys and limits)."""
        if not self.enabled:
            return key_id(None)
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Unauthorized("missing API key: send `Authorization: Bearer <key>`")
        token = token.strip()
        if not any(hmac.compare_digest(token.encode(), k.encode()) for k in self.keys):
            raise Unauthorized("invalid API key")
        return key_id(token)


class BodySizeLimit:
    """413 for bodies over `max_bytes`: by Content-Length up front (the server holds the
    client to it), and by counting the bytes of a chunked body before the app sees it."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    def _too_large(self) -> object:
        return error_response(413, "payload_too_large",
                              f"request body larger than the limit of {self.max_bytes} bytes",
                              {"limit_bytes": self.max_bytes})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        for name, value in scope.get("headers", []):
            if name == b"content-length":
                try:
                    if int(value) > self.max_bytes:
                        return await self._too_large()(scope, receive, send)
                except ValueError:
                    pass
        if not any(name == b"content-length" for name, _ in scope.get("headers", [])) and scope["method"] in (
                "POST", "PUT", "PATCH"):
            # No Content-Length (chunked): read the body here, at most max_bytes + 1, then replay it.
            # (An exception raised while the framework reads would come back as a 400.)
            chunks, seen, more = [], 0, True
            while more:
                msg = await receive()
                if msg["type"] != "http.request":
                    return
                chunks.append(msg.get("body", b""))
                seen += len(chunks[-1])
                more = msg.get("more_body", False)
                if seen > self.max_bytes:
                    return await self._too_large()(scope, receive, send)
            body, replayed = b"".join(chunks), False

            async def replay() -> Message:
                nonlocal replayed
                if not replayed:
                    replayed = True
                    return {"type": "http.request", "body": body, "more_body": False}
                return await receive()

            return await self.app(scope, replay, send)
        await self.app(scope, receive, send)
