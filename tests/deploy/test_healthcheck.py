"""docker/healthcheck.py against real services: the sandbox server, and worker heartbeats in a
real Redis (127.0.0.1:6379, under a namespace of this test's own)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import uuid

import pytest
import redis

from tests.deploy.conftest import ROOT, _free_port, start_guarded_sandbox, stop

SCRIPT = ROOT / "docker" / "healthcheck.py"
REDIS_URL = "redis://127.0.0.1:6379/0"


def _check(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=60,
                          cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT), **(env or {})))


def test_sandbox_check_passes_when_bubblewrap_isolates(sandbox_server):
    assert _check("sandbox", sandbox_server.url + "/healthz").returncode == 0
    assert _check("http", sandbox_server.url + "/healthz").returncode == 0


def test_sandbox_check_fails_when_bubblewrap_cannot_run():
    # the same server with no bwrap on its PATH answers /healthz 200, but cannot isolate
    server = start_guarded_sandbox({"PATH": "/nonexistent"})
    try:
        out = _check("sandbox", server.url + "/healthz")
        assert out.returncode == 1 and "bubblewrap" in out.stderr
        assert _check("http", server.url + "/healthz").returncode == 0  # why the sandbox needs its own check
    finally:
        stop(server)


def test_http_check_fails_on_an_error_status_or_no_service(sandbox_server):
    assert _check("http", sandbox_server.url + "/no-such-page").returncode == 1
    assert _check("http", f"http://127.0.0.1:{_free_port()}/readyz").returncode == 1


@pytest.fixture
def namespace():
    r = redis.Redis.from_url(REDIS_URL)
    try:
        r.ping()
    except redis.ConnectionError:
        pytest.fail("these tests need the Redis at 127.0.0.1:6379 (scripts/test.sh starts one)")
    ns = f"tta-deploytest-{uuid.uuid4().hex[:8]}"
    yield ns, r
    for key in r.scan_iter(f"{ns}:*"):
        r.delete(key)


def _beat(namespace, name: str, age_s: float) -> None:
    from service.settings import Settings
    from service.store import Store

    store = Store.from_settings(Settings(redis_url=REDIS_URL, redis_namespace=namespace[0]))
    store.r.hset(store.k_workers, name, json.dumps({"ts": time.time() - age_s, "job": None, "adapters": 0}))


def _worker_check(namespace, **env: str) -> subprocess.CompletedProcess:
    return _check("worker", env={"TTA_REDIS_URL": REDIS_URL, "TTA_REDIS_NAMESPACE": namespace[0], **env})


def test_worker_check_follows_this_hosts_heartbeat(namespace):
    out = _worker_check(namespace)
    assert out.returncode == 1 and "no heartbeat" in out.stderr
    _beat(namespace, "some-other-host-1-abcdef", 0)  # another container's worker does not count
    assert _worker_check(namespace).returncode == 1
    _beat(namespace, f"{socket.gethostname()}-42-abcdef", 3600)
    out = _worker_check(namespace)
    assert out.returncode == 1 and "last heartbeat" in out.stderr
    _beat(namespace, f"{socket.gethostname()}-42-abcdef", 1)
    assert _worker_check(namespace).returncode == 0


def test_worker_check_uses_an_explicit_worker_name(namespace):
    _beat(namespace, f"{socket.gethostname()}-42-abcdef", 1)
    assert _worker_check(namespace, TTA_WORKER_NAME="gpu-7").returncode == 1
    _beat(namespace, "gpu-7", 1)
    assert _worker_check(namespace, TTA_WORKER_NAME="gpu-7").returncode == 0


def test_worker_check_refuses_without_redis_url():
    env = {k: v for k, v in os.environ.items() if k != "TTA_REDIS_URL"}
    out = subprocess.run([sys.executable, str(SCRIPT), "worker"], capture_output=True, text=True, timeout=60,
                         cwd=ROOT, env=dict(env, PYTHONPATH=str(ROOT)))
    assert out.returncode == 1 and "TTA_REDIS_URL" in out.stderr
