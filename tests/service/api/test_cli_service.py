"""`tta serve` in single-process mode (embedded Redis, in-process worker) driven by the
`tta submit | status | watch | cancel` client commands, as a user would."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.service.conftest import ANYTHING, free_port

ROOT = Path(__file__).parents[3]


def tta(*args, env, timeout=120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "service.cli", *args], env=env, cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout)


def test_serve_refuses_to_start_without_keys(tmp_path):
    env = dict(os.environ, TTA_API_KEYS="", TTA_AUTH="on", TTA_REDIS_URL="redis://127.0.0.1:1/0")
    r = tta("serve", "--no-worker", env=env, timeout=60)
    assert r.returncode == 2 and "no API keys configured" in r.stderr and "TTA_AUTH=off" in r.stderr


@pytest.mark.slow
def test_single_process_serve_and_client_commands(tmp_path):
    port = free_port()
    env = dict(os.environ, TTA_MODEL="tiny", TTA_ENGINE="transformers", TTA_AUTH="on", TTA_API_KEYS="cli-key",
               TTA_EMBEDDED_REDIS_DIR=str(tmp_path / "redis"), TTA_THREADS="1", PYTHONUNBUFFERED="1",
               TTA_CACHE_DIR=os.environ.get("TTA_CACHE_DIR", "/tmp/ttacache"),
               TTA_URL=f"http://127.0.0.1:{port}", TTA_API_KEY="cli-key")
    env.pop("TTA_REDIS_URL", None)
    log = open(tmp_path / "serve.log", "w")
    server = subprocess.Popen([sys.executable, "-m", "service.cli", "serve", "--port", str(port)], env=env, cwd=ROOT,
                              stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                r = httpx.get(f"http://127.0.0.1:{port}/readyz")
                if r.status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert server.poll() is None and time.monotonic() < deadline, (tmp_path / "serve.log").read_text()
            time.sleep(0.5)
        assert r.json()["checks"] == {"redis": True, "model_loaded": True}

        problem = tmp_path / "p.yaml"
        problem.write_text(json.dumps({"question": "Say hello.", "verifier": ANYTHING, "strategy": "best_of_k",
                                       "budget": {"max_attempts": 2}, "sampling": {"n": 2, "max_new_tokens": 8}}))
        r = tta("submit", str(problem), "--wait", "--wait-s", "90", env=env)
        assert r.returncode == 0, r.stderr
        job = json.loads(r.stdout)
        assert job["status"] == "solved" and job["attempts_used"] == 2

        r = tta("status", job["id"], env=env)
        assert r.returncode == 0 and "solved" in r.stderr and "2/2 attempts" in r.stderr
        r = tta("watch", job["id"], env=env)
        assert r.returncode == 0 and "SOLVED" in r.stderr, r.stderr
        r = tta("cancel", job["id"], env=env)
        assert r.returncode == 2 and "already finished (solved)" in r.stderr and "409" in r.stderr
        r = tta("status", "job_nope", env=dict(env, TTA_API_KEY="wrong"))
        assert r.returncode == 2 and "invalid API key" in r.stderr
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(20)
        except subprocess.TimeoutExpired:
            server.kill()
