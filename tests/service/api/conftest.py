"""Fixtures of the API tests: an in-process app (no model), and a live stack of real processes
(uvicorn + two workers on the tiny model). Redis and the settings come from tests/service."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from tests.service.conftest import KEY, free_port


@pytest.fixture
def client(settings):
    """The app in-process, with no worker: jobs stay queued unless a test moves them."""
    from fastapi.testclient import TestClient

    from service.app import create_app

    with TestClient(create_app(settings), headers={"Authorization": f"Bearer {KEY}"}) as c:
        yield c


# ---- the live stack ------------------------------------------------------------------------------


@dataclass
class Stack:
    url: str
    redis_url: str
    namespace: str
    workers: dict[str, subprocess.Popen] = field(default_factory=dict)
    http: httpx.Client | None = None


def _env(redis_url: str, namespace: str, **extra) -> dict:
    env = dict(os.environ)
    env.update({
        "TTA_MODEL": "tiny", "TTA_ENGINE": "transformers", "TTA_REDIS_URL": redis_url,
        "TTA_REDIS_NAMESPACE": namespace, "TTA_API_KEYS": KEY, "TTA_LEASE_S": "4", "TTA_THREADS": "1",
        "TTA_CACHE_DIR": os.environ.get("TTA_CACHE_DIR", "/tmp/ttacache"), "TTA_LOG_LEVEL": "WARNING",
        "TTA_MAX_ACTIVE_JOBS_PER_KEY": "20", "PYTHONUNBUFFERED": "1",
    })
    env.update(extra)
    return env


@pytest.fixture(scope="module")
def stack(redis_url, tmp_path_factory):
    """`tta serve --no-worker` under uvicorn plus two `tta worker` processes (w1, w2)."""
    namespace = "ttalive-" + uuid.uuid4().hex[:8]
    port = free_port()
    logs = tmp_path_factory.mktemp("stack-logs")
    procs: list[subprocess.Popen] = []

    def spawn(args, name, **extra):
        out = open(logs / f"{name}.log", "w")
        p = subprocess.Popen([sys.executable, "-m", "service.cli", *args], env=_env(redis_url, namespace, **extra),
                             stdout=out, stderr=subprocess.STDOUT, cwd=Path(__file__).parents[3])
        procs.append(p)
        return p

    st = Stack(url=f"http://127.0.0.1:{port}", redis_url=redis_url, namespace=namespace)
    spawn(["serve", "--no-worker", "--port", str(port), "--log-level", "warning"], "api")
    for name in ("w1", "w2"):
        st.workers[name] = spawn(["worker"], name, TTA_WORKER_NAME=name)
    st.http = httpx.Client(base_url=st.url, headers={"Authorization": f"Bearer {KEY}"}, timeout=30)
    try:
        _wait_ready(st, logs)
        yield st
    finally:
        st.http.close()
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGKILL)
        for p in procs:
            p.wait(10)


def _wait_ready(st: Stack, logs: Path, timeout: float = 150.0) -> None:
    import redis

    r = redis.Redis.from_url(st.redis_url)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            ok = st.http.get("/readyz").status_code == 200
        except httpx.HTTPError:
            ok = False
        if ok and r.hlen(f"{st.namespace}:v1:workers") >= 2:
            return
        dead = [n for n, p in st.workers.items() if p.poll() is not None]
        if dead:
            break
        time.sleep(0.5)
    tails = "\n".join(f"--- {f.name}\n{f.read_text()[-2000:]}" for f in sorted(logs.iterdir()))
    raise RuntimeError(f"the live stack did not come up:\n{tails}")


def wait_status(http: httpx.Client, jid: str, statuses=("solved", "exhausted", "cancelled", "failed"),
                timeout: float = 120.0) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        job = http.get(f"/v1/jobs/{jid}").json()
        if job["status"] in statuses:
            return job
        if time.monotonic() > deadline:
            raise AssertionError(f"job {jid} still {job['status']} after {timeout} s: {job}")
        time.sleep(0.3)
