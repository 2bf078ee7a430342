"""The sandbox server through a real uvicorn on a free port, and RemoteVerifier against it."""

from __future__ import annotations

import socket
import threading
import time

import pytest
import uvicorn
from fastapi.testclient import TestClient

from sandbox import (
    MathSpec,
    PythonTestsSpec,
    RemoteVerifier,
    SandboxLimits,
    Verification,
    VerifierUnreachable,
    create_app,
)
from tests.sandbox.local_http import QuietHandler, serving

SPEC = PythonTestsSpec(type="python_tests", format="stdio", cases=[{"input": "2\n", "output": "4\n"}])
LIMITS = SandboxLimits(wall_timeout_s=10)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server_url():
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(LIMITS), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 15
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=5)


def test_remote_round_trip(server_url, runner):
    with RemoteVerifier(server_url, timeout_s=30) as remote:
        assert remote.healthz()["isolation"] is True
        good = remote.verify(SPEC, "```python\nprint(int(input()) ** 2)\n```")
        assert good.verdict == "pass"
        results = remote.verify_many(SPEC, ["```python\nprint(5)\n```", "no code"], [False, True])
        assert [r.kind for r in results] == ["wrong_answer", "truncated"]
        assert remote.verify(MathSpec(type="math", answer="1/2"), "\\boxed{0.5}").verdict == "pass"


def test_bad_request_is_a_clear_error(server_url):
    with TestClient(create_app(LIMITS)) as client:
        resp = client.post("/v1/verify", json={"spec": {"type": "regex", "pattern": "("}, "responses": ["x"]})
        assert resp.status_code == 422 and "regular expression" in resp.text
        resp = client.post(
            "/v1/verify", json={"spec": {"type": "exact", "answer": "a"}, "responses": ["a", "b"], "truncated": [True]}
        )
        assert resp.status_code == 422


def test_unreachable_server_raises_typed_error():
    with RemoteVerifier(f"http://127.0.0.1:{_free_port()}", timeout_s=2) as remote:
        with pytest.raises(VerifierUnreachable, match="unreachable"):
            remote.verify(SPEC, "```python\nprint(4)\n```")


class _Restarting(QuietHandler):
    """Drops the first `drops` requests of a test without an answer (a server going down),
    then answers `status` with one passing Verification."""

    drops = 0
    status = 200
    seen = 0

    def do_POST(self) -> None:  # noqa: N802 - http.server's naming
        self.read_body()
        type(self).seen += 1
        if self.seen <= self.drops:
            self.close_connection = True
            return
        answer = Verification(verdict="pass", kind="passed", score=1.0, passed=1, total=1, feedback="")
        self.reply(self.status, [answer.model_dump(mode="json")])


@pytest.fixture()
def restarting():
    _Restarting.drops, _Restarting.status, _Restarting.seen = 0, 200, 0
    with serving(_Restarting) as url:
        yield url


def test_a_request_cut_off_is_sent_again(restarting):
    _Restarting.drops = 2
    with RemoteVerifier(restarting, timeout_s=5, retries=2, retry_backoff_s=0.01) as remote:
        assert remote.verify(SPEC, "```python\nprint(4)\n```").verdict == "pass"
    assert _Restarting.seen == 3


def test_an_answer_is_not_sent_again_whatever_its_status(restarting):
    _Restarting.status = 500
    with RemoteVerifier(restarting, timeout_s=5, retries=2, retry_backoff_s=0.01) as remote:
        with pytest.raises(VerifierUnreachable, match="answered HTTP 500"):
            remote.verify(SPEC, "```python\nprint(4)\n```")
    assert _Restarting.seen == 1
