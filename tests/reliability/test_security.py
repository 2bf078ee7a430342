"""Security through the service paths: the sandbox attack catalog as model answers via
`tta verify` and via the sandbox service the workers use, probes run by a job's own
verifier, the http verifier's SSRF guard as deployed (TTA_HTTP_VERIFIER=on, default
policy), and no secret in logs, Redis, metrics or job views.

Runs after the fault and load tests (file order), so the secrets scan covers what they
logged and stored too."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.reliability.live import ROOT
from tests.reliability.security import (
    fork_bomb_job,
    probe_job,
    secret_leaks,
    via_sandbox_service,
    via_tta_verify,
)
from tests.sandbox.attacks import CATALOG, Target, breaches

pytestmark = pytest.mark.slow


@pytest.fixture
def target(stack):
    """The attacks aim at the stack's Redis, API and sandbox ports and know its secrets."""
    t = Target(secrets=tuple(stack.secret_values),
               ports=(6379, stack.redis.port, stack.api_port, stack.sandbox_port))
    yield t
    t.close()


@pytest.mark.parametrize("attack", CATALOG, ids=[a.name for a in CATALOG])
def test_attack_as_answer_via_tta_verify(stack, target, attack, tmp_path):
    # the CLI runs with the service's secrets in its environment, as on an operator's shell
    env = stack.env()
    env.pop("TTA_SANDBOX_URL")  # in-process bubblewrap
    out = via_tta_verify(attack, target, env, tmp_path)
    assert out.contained, out


def test_attacks_as_answers_via_the_sandbox_service(stack, target):
    outcomes = via_sandbox_service(f"http://127.0.0.1:{stack.sandbox_port}", list(CATALOG), target)
    assert all(o.contained for o in outcomes), [o for o in outcomes if not o.contained]
    assert {o.verdict for o in outcomes} == {"fail"}, outcomes  # judged, not errored: the service held up


def test_job_whose_verifier_probes_the_sandbox(stack, target):
    """The probes run only once an attempt's code loads, and `check` passes only if every
    probe found the way closed: `solved` means they ran and found nothing open."""
    workers_before = {p.pid for p in stack.worker_processes()}
    job = stack.wait_final(stack.submit(probe_job(target, seed=80)))
    feedback = [a["feedback"] for a in job["result"]["attempts"]]
    assert job["status"] == "solved", feedback
    assert not breaches(target, feedback)
    assert {p.pid for p in stack.worker_processes()} == workers_before  # kill(-1) reached no worker
    stack.check_record(job)


def test_job_whose_verifier_forks_without_end(stack, target):
    job = stack.wait_final(stack.submit(fork_bomb_job(target, seed=81)))
    kinds = [a["kind"] for a in job["result"]["attempts"]]
    assert job["status"] == "exhausted" and {"timeout", "runtime_error", "memory"} & set(kinds), kinds
    assert not breaches(target, [a["feedback"] for a in job["result"]["attempts"]])
    stack.check_record(job)
    assert stack.ready() and len(stack.worker_processes()) == stack.workers


def test_http_verifier_refuses_loopback_and_private_targets(stack, target):
    """http verifiers are enabled on this stack, with the default policy: a job aimed at a
    listener on loopback gets a verifier error, and the listener hears nothing."""
    port = target.listener.getsockname()[1]
    job = stack.wait_final(stack.submit({
        "problem": {"question": "Say 42."}, "verifier": {"type": "http", "url": f"http://127.0.0.1:{port}/judge"},
        "strategy": "best_of_k", "budget": {"max_attempts": 1}, "sampling": {"n": 1, "max_new_tokens": 4},
        "seed": 90, "cache": False}))
    (attempt,) = job["result"]["attempts"]
    assert attempt["verdict"] == "error" and "non-public address 127.0.0.1; not allowed" in attempt["feedback"]
    assert not target.accepted()

    from sandbox.client import RemoteVerifier
    from sandbox.specs import HttpSpec

    with RemoteVerifier(f"http://127.0.0.1:{stack.sandbox_port}") as remote:
        for url in ("http://localhost:9/", "http://10.1.2.3/", "http://192.168.0.1/", "http://169.254.169.254/latest",
                    "http://[::1]:9/", "http://[::ffff:127.0.0.1]:9/", "http://0.0.0.0:9/"):
            v = remote.verify(HttpSpec(type="http", url=url, timeout_s=2, retries=0), "42")
            assert v.verdict == "error" and "not allowed" in v.feedback, (url, v)


def test_no_secret_in_logs_redis_metrics_or_job_views(stack):
    """API keys, the Redis password and URL and the http verifier's HMAC secret appear
    nowhere a user or an operator's tooling can read. Error paths are exercised first."""
    assert stack.http.get("/v1/jobs/job_x", headers={"Authorization": "Bearer wrong"}).status_code == 401
    # a worker that cannot reach its Redis says so (the URL with its password is redacted)
    dead = stack.env(TTA_REDIS_URL=f"redis://:{stack.redis.password}@127.0.0.1:1/0")
    r = subprocess.run([sys.executable, "-m", "service.cli", "worker"], env=dead, cwd=ROOT, capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 2 and "cannot reach Redis at redis://:***@127.0.0.1:1/0" in r.stderr, r.stderr
    (stack.logs / "dead-worker.log").write_text(r.stdout + r.stderr)
    leaks = secret_leaks(stack)
    assert not leaks, leaks
