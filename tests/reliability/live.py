"""Real processes for the reliability suite and `bench/reliability.py`: a private
redis-server that can be stopped and started again on the same port and AOF directory
(with a password), `tta sandbox serve`, and `tta serve` with its `--workers`.

Everything runs on loopback and is killed at `close()`. Logs of every process are kept in
`logs/`, so a test can read what the processes wrote (the secrets scan reads them all).
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psutil
import redis

from tests.service.conftest import _redis_server_binary, free_port

ROOT = Path(__file__).resolve().parents[2]
FINAL = ("solved", "exhausted", "cancelled", "failed")


def _wait(predicate, timeout: float, what: str, poll: float = 0.1):
    deadline = time.monotonic() + timeout
    while True:
        got = predicate()
        if got:
            return got
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not within {timeout:g} s")
        time.sleep(poll)


def kill_tree(proc: subprocess.Popen | None, sig: int = signal.SIGKILL) -> None:
    if proc is None or proc.poll() is not None:
        return
    try:
        children = psutil.Process(proc.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        children = []
    for p in [*children, psutil.Process(proc.pid)]:
        try:
            p.send_signal(sig)
        except psutil.NoSuchProcess:
            pass
    try:
        proc.wait(15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


class RedisServer:
    """A private redis-server; `stop()` + `start()` is a restart that keeps port, password
    and AOF directory, so what was written survives as far as AOF makes it survive."""

    def __init__(self, *, password: str | None = None, appendfsync: str = "everysec") -> None:
        self.port = free_port()
        self.password = password
        self.appendfsync = appendfsync
        self.dir = tempfile.mkdtemp(prefix="tta-rel-redis-")
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port, password=self.password, socket_connect_timeout=2, socket_timeout=10)

    def start(self) -> None:
        args = [_redis_server_binary(), "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                "--appendonly", "yes", "--appendfsync", self.appendfsync, "--dir", self.dir]
        if self.password:
            args += ["--requirepass", self.password]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

        def up() -> bool:
            try:
                return bool(self.client().ping())
            except redis.RedisError:
                return False

        _wait(up, 20, "redis-server up")

    def stop(self, sig: int = signal.SIGTERM) -> None:
        """SIGTERM: a clean shutdown (AOF flushed). SIGKILL: a crash (up to `appendfsync` lost)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(20)

    def close(self) -> None:
        self.stop(signal.SIGKILL)
        shutil.rmtree(self.dir, ignore_errors=True)


@dataclass
class Stack:
    """`tta serve --no-worker --workers N` (the API and N worker processes), `tta sandbox
    serve` that the workers verify through (TTA_SANDBOX_URL), and a Redis with a password.

    `api_keys` and `redis.password` are the secrets the suite checks never leak."""

    logs: Path
    workers: int = 2
    lease_s: float = 3.0
    extra_env: dict[str, str] = field(default_factory=dict)
    namespace: str = field(default_factory=lambda: "ttarel-" + uuid.uuid4().hex[:8])
    api_keys: tuple[str, str] = field(default_factory=lambda: ("key-" + secrets.token_hex(12),
                                                               "key-" + secrets.token_hex(12)))
    redis: RedisServer = field(default_factory=lambda: RedisServer(password="pw-" + secrets.token_hex(12)))
    hmac_secret: str = field(default_factory=lambda: "hmac-" + secrets.token_hex(12))
    api_port: int = field(default_factory=free_port)
    sandbox_port: int = field(default_factory=free_port)
    api: subprocess.Popen | None = None
    sandbox: subprocess.Popen | None = None
    extra_workers: dict[str, subprocess.Popen] = field(default_factory=dict)
    http: httpx.Client | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    @property
    def secret_values(self) -> list[str]:
        return [*self.api_keys, self.redis.password or "", self.redis.url, self.hmac_secret]

    def env(self, **extra: str) -> dict[str, str]:
        env = dict(os.environ)
        env.update({
            "TTA_MODEL": "tiny", "TTA_ENGINE": "transformers", "TTA_REDIS_URL": self.redis.url,
            "TTA_REDIS_NAMESPACE": self.namespace, "TTA_API_KEYS": ",".join(self.api_keys),
            "TTA_LEASE_S": str(self.lease_s), "TTA_THREADS": "1", "TTA_MAX_DELIVERIES": "4",
            "TTA_CACHE_DIR": os.environ.get("TTA_CACHE_DIR", "/tmp/ttacache"), "TTA_LOG_LEVEL": "INFO",
            "TTA_MAX_ACTIVE_JOBS_PER_KEY": "200", "TTA_SANDBOX_URL": f"http://127.0.0.1:{self.sandbox_port}",
            # http verifiers on, with the default policy: non-public targets must stay refused
            "TTA_HTTP_VERIFIER": "on", "TTA_HTTP_VERIFIER_SECRET": self.hmac_secret, "PYTHONUNBUFFERED": "1",
        })
        env.update(self.extra_env)
        env.update(extra)
        return env

    def _spawn(self, args: list[str], name: str, **extra: str) -> subprocess.Popen:
        out = open(self.logs / f"{name}.log", "a")
        return subprocess.Popen([sys.executable, "-m", "service.cli", *args], env=self.env(**extra), stdout=out,
                                stderr=subprocess.STDOUT, cwd=ROOT)

    # -- lifecycle ------------------------------------------------------------------------------
    def start(self, timeout: float = 240.0) -> Stack:
        self.logs.mkdir(parents=True, exist_ok=True)
        self.redis.start()
        if self.workers:
            self.start_sandbox()
        self.api = self._spawn(["serve", "--no-worker", "--workers", str(self.workers), "--port", str(self.api_port),
                                "--log-level", "info"], "api")
        self.http = httpx.Client(base_url=self.url, headers={"Authorization": f"Bearer {self.api_keys[0]}"},
                                 timeout=httpx.Timeout(30, read=120))
        try:
            self.wait_workers(self.workers, timeout)
        except Exception:
            self.close()
            raise
        return self

    def close(self) -> None:
        if self.http is not None:
            self.http.close()
        for p in [*self.extra_workers.values(), self.api, self.sandbox]:
            kill_tree(p)
        self.redis.close()

    def ready(self) -> bool:
        try:
            return self.http.get("/readyz").status_code == 200
        except httpx.HTTPError:
            return False

    def live_workers(self) -> list[str]:
        """Names of workers whose heartbeat is fresh."""
        import json

        r = self.redis.client()
        beats = {k.decode(): json.loads(v) for k, v in r.hgetall(f"{self.namespace}:v1:workers").items()}
        return [n for n, b in beats.items() if time.time() - b["ts"] < 10]

    def wait_workers(self, n: int, timeout: float = 240.0) -> None:
        def ok() -> bool:
            dead = [p for p in (self.api, self.sandbox) if p is not None and p.poll() is not None]
            if dead:
                raise RuntimeError(f"a process of the stack exited:\n{self.log_tail()}")
            return self.ready() and len(self.live_workers()) >= n

        try:
            _wait(ok, timeout, f"{n} workers ready", poll=0.5)
        except TimeoutError:
            raise RuntimeError(f"the stack did not come up:\n{self.log_tail()}") from None

    def log_text(self) -> str:
        return "\n".join(f.read_text(errors="replace") for f in sorted(self.logs.glob("*.log")))

    def log_tail(self, n: int = 3000) -> str:
        return "\n".join(f"--- {f.name}\n{f.read_text(errors='replace')[-n:]}" for f in sorted(self.logs.glob("*.log")))

    # -- workers --------------------------------------------------------------------------------
    def worker_pid(self, worker_name: str) -> int:
        """The pid in a default worker name (`host-pid-random`), or an extra worker's."""
        if worker_name in self.extra_workers:
            return self.extra_workers[worker_name].pid
        return int(re.fullmatch(r".*-(\d+)-[0-9a-f]{6}", worker_name).group(1))

    def spawn_worker(self, name: str) -> subprocess.Popen:
        p = self._spawn(["worker"], name, TTA_WORKER_NAME=name)
        self.extra_workers[name] = p
        return p

    def worker_processes(self) -> list[psutil.Process]:
        """Live worker processes: `tta serve`'s children and the ones spawned here."""
        procs = []
        try:
            procs = [p for p in psutil.Process(self.api.pid).children() if "worker" in " ".join(p.cmdline())]
        except psutil.Error:
            pass
        procs += [psutil.Process(p.pid) for p in self.extra_workers.values() if p.poll() is None]
        return [p for p in procs if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]

    def heal(self) -> None:
        """Back to the start shape after a fault: Redis and the sandbox up, `workers` live
        workers (a killed one is replaced by a `tta worker`, as an operator would)."""
        if self.redis.proc is None or self.redis.proc.poll() is not None:
            self.redis.start()
        if self.workers and (self.sandbox is None or self.sandbox.poll() is not None):
            self.start_sandbox()
        new = [f"replacement-{uuid.uuid4().hex[:6]}" for _ in range(self.workers - len(self.worker_processes()))]
        for name in new:
            self.spawn_worker(name)
        _wait(lambda: set(new) <= set(self.live_workers()) and self.ready(), 180, "replacement workers ready", 0.5)

    # -- the sandbox service --------------------------------------------------------------------------
    def start_sandbox(self) -> None:
        self.sandbox = self._spawn(["sandbox", "serve", "--port", str(self.sandbox_port)], "sandbox")

        def up() -> bool:
            if self.sandbox.poll() is not None:
                raise RuntimeError(f"tta sandbox serve exited:\n{self.log_tail()}")
            try:
                return httpx.get(f"http://127.0.0.1:{self.sandbox_port}/healthz", timeout=5).json()["isolation"]
            except (httpx.HTTPError, ValueError, KeyError):
                return False

        _wait(up, 90, "tta sandbox serve up", poll=0.3)

    def sandbox_requests_waiting(self) -> int:
        """Bytes of requests that reached the sandbox's port and that it has not read: with
        the server stopped (SIGSTOP), a positive number is a verification in flight."""
        waiting = 0
        for table in ("/proc/net/tcp", "/proc/net/tcp6"):
            try:
                rows = Path(table).read_text().splitlines()[1:]
            except OSError:
                continue
            for row in rows:
                cols = row.split()
                local_port = int(cols[1].rsplit(":", 1)[1], 16)
                rx_queue = int(cols[4].split(":")[1], 16)
                if local_port == self.sandbox_port and cols[3] == "01":  # ESTABLISHED
                    waiting += rx_queue
        return waiting

    # -- jobs -------------------------------------------------------------------------------------
    def submit(self, body: dict) -> str:
        r = self.http.post("/v1/jobs", json=body)
        assert r.status_code == 202, r.text
        return r.json()["id"]

    def wait_final(self, jid: str, timeout: float = 180.0) -> dict:
        def final() -> dict | None:
            try:
                job = self.http.get(f"/v1/jobs/{jid}").json()
            except httpx.HTTPError:
                return None  # the API itself may be riding out a Redis restart
            return job if job.get("status") in FINAL else None

        try:
            return _wait(final, timeout, f"job {jid} final", poll=0.3)
        except TimeoutError:
            raise AssertionError(f"job {jid} not final after {timeout} s: "
                                 f"{self.http.get(f'/v1/jobs/{jid}').text[:2000]}\n{self.log_tail()}") from None

    def events(self, jid: str, *, after: str | None = None, timeout: float = 180.0):
        """The job's SSE events as they come (dicts with `id` and `type`), through `done`;
        `after`: resume after that event id (Last-Event-ID)."""
        from service.client import parse_sse

        headers = {"Last-Event-ID": after} if after else {}
        deadline = time.monotonic() + timeout
        with self.http.stream("GET", f"/v1/jobs/{jid}/events", headers=headers) as r:
            assert r.status_code == 200, r.read()
            for ev in parse_sse(r.iter_lines()):
                yield {"id": ev.id, "type": ev.type, **ev.data}
                if ev.type == "done":
                    return
                assert time.monotonic() < deadline, f"job {jid}: no `done` event within {timeout} s"

    def metric(self, name: str) -> float:
        """One sample of /metrics, e.g. `tta_attempts_total` or `tta_jobs{status="running"}`."""
        for line in self.http.get("/metrics").text.splitlines():
            if line.startswith(name + " "):
                return float(line.rsplit(" ", 1)[1])
        return 0.0

    def check_record(self, job: dict) -> None:
        """A final job's record agrees with itself and with Redis: nothing lost, nothing
        counted twice. Raises AssertionError naming the first disagreement."""
        jid = job["id"]
        page = self.http.get(f"/v1/jobs/{jid}/attempts").json()
        r = self.redis.client()
        stored = r.llen(f"{self.namespace}:v1:job:{jid}:attempts")
        used = job["attempts_used"]
        assert job["status"] in FINAL, job
        assert page["total"] == stored == len(page["attempts"]) == used, (job["status"], page["total"], stored, used)
        assert [a["index"] for a in page["attempts"]] == list(range(used)), [a["index"] for a in page["attempts"]]
        if job["status"] == "failed":
            assert job["reason"], job  # failed always says why
        res = job["result"]
        if res is not None:  # a job failed from outside its lease (too many deliveries) has none
            assert res["attempts_used"] == used and len(res["attempts"]) == used
            assert sum(len(rd["attempts"]) for rd in res["rounds"]) == used
            assert [a["text"] for a in res["attempts"]] == [a["text"] for a in page["attempts"]]
            assert job["rounds_done"] == len(res["rounds"])
        assert not r.exists(f"{self.namespace}:v1:job:{jid}:state")  # a final job keeps no checkpoint
        owner_key = r.hget(f"{self.namespace}:v1:job:{jid}", "api_key").decode()
        assert not r.sismember(f"{self.namespace}:v1:active:{owner_key}", jid)  # the key's slot is free again
