"""The `http` verifier: POST the attempt to the client's own verifier, with SSRF guards.

Off unless the operator enables it (`HttpPolicy(enabled=True)`). Before every request
the host name is resolved and EVERY address must be public (not loopback, private,
link-local, multicast, reserved or unspecified) unless it lies in `allow_networks` or
the host is in `allow_hosts`. For plain http the request then goes to the checked
address itself (with the original Host header), so a second DNS answer cannot swap in
an internal address. Redirects are never followed. The body is signed with
HMAC-SHA256 under `secret` in the header `X-TTA-Signature: sha256=<hex>`.

Not guaranteed: for https the TLS connection resolves the name again (certificate
checks need the name), so a DNS-rebinding attacker with a valid certificate for the
name could race the check; proxies configured in the environment are ignored.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import socket
import time
from typing import Literal
from urllib.parse import urlsplit, urlunsplit

import httpx
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    model_validator,
)

from sandbox.errors import HttpVerifierRefused, VerifierUnreachable
from sandbox.retry import call_with_retries

SIGNATURE_HEADER = "X-TTA-Signature"
_MAX_BODY = 1 << 20


class _ServerError(Exception):
    """A 5xx answer, tried again like a failure in transport."""


class HttpPolicy(BaseModel):
    """What the `http` verifier may contact. The default refuses everything."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = Field(False, description="Allow `http` verifiers at all.")
    secret: SecretStr | None = Field(None, description="HMAC-SHA256 key for the X-TTA-Signature header; unsigned if unset.")
    allow_hosts: tuple[str, ...] = Field(
        (), description="Host names allowed even when they resolve to non-public addresses (exact, lower-case match)."
    )
    allow_networks: tuple[str, ...] = Field(
        (), description="CIDR networks allowed even though non-public, e.g. '127.0.0.1/32' for a local test verifier."
    )
    max_timeout_s: float = Field(30.0, gt=0, description="Upper bound on a spec's timeout_s.")

    @model_validator(mode="after")
    def _networks_parse(self) -> HttpPolicy:
        for net in self.allow_networks:
            ipaddress.ip_network(net, strict=False)
        return self


class RemoteVerdict(BaseModel):
    """What the client's verifier must answer (extra fields are ignored)."""

    verdict: Literal["pass", "fail"] | None = None
    passed: bool | None = None
    score: float | None = Field(None, ge=0, le=1)
    feedback: str = ""

    @model_validator(mode="after")
    def _has_outcome(self) -> RemoteVerdict:
        if self.verdict is None and self.passed is None:
            raise ValueError("answer needs `verdict` ('pass'|'fail') or `passed` (bool)")
        return self

    @property
    def is_pass(self) -> bool:
        return self.verdict == "pass" if self.verdict is not None else bool(self.passed)


def sign(secret: str, body: bytes) -> str:
    """The signature header value for `body`: "sha256=" + hex HMAC-SHA256."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def _public(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return not (
        ip.is_loopback or ip.is_private or ip.is_link_local or ip.is_multicast or ip.is_reserved or ip.is_unspecified
        or not ip.is_global
    )


def check_target(url: str, policy: HttpPolicy) -> str:
    """Returns the address to connect to for `url`; raises HttpVerifierRefused if policy forbids it."""
    if not policy.enabled:
        raise HttpVerifierRefused("http verifiers are disabled on this server")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise HttpVerifierRefused(f"not an http(s) URL: {url!r}")
    host = parts.hostname.lower()
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise VerifierUnreachable(f"cannot resolve {host!r}: {exc}") from None
    allowed_nets = [ipaddress.ip_network(n, strict=False) for n in policy.allow_networks]
    addresses = []
    for info in infos:
        ip = ipaddress.ip_address(str(info[4][0]).split("%")[0])
        if not (_public(ip) or host in policy.allow_hosts or any(ip in net for net in allowed_nets)):
            raise HttpVerifierRefused(f"{host!r} resolves to non-public address {ip}; not allowed")
        addresses.append(str(ip))
    if not addresses:
        raise VerifierUnreachable(f"{host!r} has no address")
    return addresses[0]


def call_http_verifier(
    url: str, payload: dict[str, object], *, policy: HttpPolicy, timeout_s: float, retries: int,
    transport: httpx.BaseTransport | None = None,
) -> RemoteVerdict:
    """POSTs `payload` (plus `sent_at`) and returns the parsed answer.

    A request that fails (refused, reset, timed out) or is answered 5xx is sent again, up
    to `retries` times, at once. Raises HttpVerifierRefused (policy), VerifierUnreachable
    (network or 5xx once the tries are spent, non-JSON or malformed answer, redirects).
    """
    address = check_target(url, policy)
    parts = urlsplit(url)
    headers = {"Content-Type": "application/json", "User-Agent": "tta-sandbox"}
    target = url
    if parts.scheme == "http":
        # connect to the address we checked, not to a fresh DNS answer
        host_header = parts.netloc.rsplit("@", 1)[-1]
        ip_netloc = f"[{address}]" if ":" in address else address
        if parts.port:
            ip_netloc += f":{parts.port}"
        target = urlunsplit((parts.scheme, ip_netloc, parts.path or "/", parts.query, ""))
        headers["Host"] = host_header
    body = json.dumps({**payload, "sent_at": time.time()}, separators=(",", ":")).encode()
    if policy.secret is not None:
        headers[SIGNATURE_HEADER] = sign(policy.secret.get_secret_value(), body)
    timeout = min(timeout_s, policy.max_timeout_s)
    with httpx.Client(timeout=timeout, follow_redirects=False, trust_env=False, transport=transport) as client:

        def post() -> httpx.Response:
            resp = client.post(target, content=body, headers=headers)
            if resp.status_code >= 500:
                raise _ServerError(f"HTTP {resp.status_code}")
            return resp

        try:
            # at once: the attempt's verification waits on this, and each try may take `timeout`
            resp = call_with_retries(post, retry_on=(httpx.HTTPError, _ServerError), tries=retries + 1, backoff_s=0.0)
        except (httpx.HTTPError, _ServerError) as exc:
            last_error = str(exc) if isinstance(exc, _ServerError) else f"{type(exc).__name__}: {exc}"
            raise VerifierUnreachable(f"the verifier at {url} did not answer after {retries + 1} attempts ({last_error})") from None
    if 300 <= resp.status_code < 400:
        raise VerifierUnreachable(f"the verifier answered a redirect (HTTP {resp.status_code}); redirects are not followed")
    if resp.status_code != 200:
        raise VerifierUnreachable(f"the verifier answered HTTP {resp.status_code}")
    if len(resp.content) > _MAX_BODY:
        raise VerifierUnreachable("the verifier's answer is too large")
    try:
        return RemoteVerdict.model_validate_json(resp.content)
    except ValidationError as exc:
        raise VerifierUnreachable(f"malformed verifier answer: {exc.errors()[0]['msg']}") from None
