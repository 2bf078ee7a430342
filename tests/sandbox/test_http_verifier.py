"""HTTP verifier: SSRF guards by default; a signed round trip to an allow-listed local server."""

from __future__ import annotations

import hashlib
import hmac
import json

import pytest

from sandbox import HttpPolicy, HttpSpec, verify
from sandbox.http_verifier import SIGNATURE_HEADER
from tests.sandbox.local_http import QuietHandler, serving

SECRET = "test-secret"


class _Judge(QuietHandler):
    seen: list[dict] = []

    def do_POST(self) -> None:  # noqa: N802 - http.server's naming
        body = self.read_body()
        expected = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
        if not hmac.compare_digest(self.headers.get(SIGNATURE_HEADER, ""), expected):
            self.reply(401)
            return
        data = json.loads(body)
        _Judge.seen.append(data)
        ok = data["response"].strip() == "42"
        self.reply(200, {"verdict": "pass" if ok else "fail", "feedback": "" if ok else "Not the answer."})


class _Overloaded(QuietHandler):
    """Answers 503 to the first `failures` requests of a test, then passes every attempt."""

    failures = 0
    seen = 0

    def do_POST(self) -> None:  # noqa: N802 - http.server's naming
        self.read_body()
        type(self).seen += 1
        self.reply(503 if self.seen <= self.failures else 200, {"verdict": "pass"})


@pytest.fixture()
def judge_url():
    with serving(_Judge) as url:
        yield f"{url}/judge"


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


@pytest.mark.parametrize(("retries", "verdict"), [(2, "pass"), (1, "error")])
def test_a_5xx_is_tried_again_up_to_the_spec_retries(retries, verdict):
    _Overloaded.failures, _Overloaded.seen = 2, 0
    with serving(_Overloaded) as url:
        spec = HttpSpec(type="http", url=f"{url}/judge", timeout_s=2, retries=retries)
        result = verify(spec, "42", http_policy=HttpPolicy(enabled=True, allow_networks=("127.0.0.1/32",)))
    assert result.verdict == verdict, result.feedback
    assert _Overloaded.seen == retries + 1
    if verdict == "error":
        assert f"did not answer after {retries + 1} attempts (HTTP 503)" in result.feedback
