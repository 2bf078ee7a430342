"""HTTP verifier: SSRF guards by default; a signed round trip to an allow-listed local server."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest

from sandbox import HttpPolicy, HttpSpec, verify
from sandbox.http_verifier import SIGNATURE_HEADER

SECRET = "test-secret"


class _Judge(BaseHTTPRequestHandler):
    seen: list[dict] = []

    def do_POST(self) -> None:  # noqa: N802 - http.server's naming
        body = self.rfile.read(int(self.headers["Content-Length"]))
        expected = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
        if not hmac.compare_digest(self.headers.get(SIGNATURE_HEADER, ""), expected):
            self.send_response(401)
            self.end_headers()
            return
        data = json.loads(body)
        _Judge.seen.append(data)
        ok = data["response"].strip() == "42"
        answer = {"verdict": "pass" if ok else "fail", "feedback": "" if ok else "Not the answer."}
        out = json.dumps(answer).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture()
def judge_url():
    server = HTTPServer(("127.0.0.1", 0), _Judge)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/judge"
    server.shutdown()


def _spec(url: str) -> HttpSpec:
    return HttpSpec(type="http", url=url, timeout_s=2, retries=0)


def test_disabled_by_default(judge_url):
    result = verify(_spec(judge_url), "42")
    assert result.verdict == "error" and "disabled" in result.feedback


@pytest.mark.parametrize(
    "url",
    ["http://127.0.0.1:9/x", "http://localhost:9/x", "http://10.1.2.3/x", "http://169.254.169.254/latest", "http://[::1]:9/", "http://0.0.0.0:9/"],
)
def test_non_public_targets_refused(url):
    result = verify(_spec(url), "42", http_policy=HttpPolicy(enabled=True, secret=SECRET))
    assert result.verdict == "error" and "not allowed" in result.feedback


def test_allow_listed_local_server_round_trip(judge_url):
    policy = HttpPolicy(enabled=True, secret=SECRET, allow_networks=("127.0.0.1/32",))
    assert verify(_spec(judge_url), "42", http_policy=policy).verdict == "pass"
    wrong = verify(_spec(judge_url), "41", http_policy=policy)
    assert wrong.verdict == "fail" and wrong.feedback == "Not the answer."
    assert _Judge.seen[-1]["response"] == "41" and "sent_at" in _Judge.seen[-1]


def test_bad_signature_is_an_error(judge_url):
    policy = HttpPolicy(enabled=True, secret="wrong", allow_networks=("127.0.0.1/32",))
    result = verify(_spec(judge_url), "42", http_policy=policy)
    assert result.verdict == "error" and "401" in result.feedback


def test_unreachable_is_an_error():
    policy = HttpPolicy(enabled=True, allow_networks=("127.0.0.1/32",))
    result = verify(_spec("http://127.0.0.1:9/none"), "42", http_policy=policy)
    assert result.verdict == "error" and "did not answer" in result.feedback
