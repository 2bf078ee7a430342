"""Load on the HTTP service with real processes: a private redis-server, `tta serve
--no-worker` (one uvicorn process) and `tta worker` processes on the tiny model.

Measures
  1. status-read latency (GET /v1/jobs/{id}) p50/p99 under 50 concurrent clients on loopback;
  2. jobs per minute with tiny budgets (sdpo: 4 attempts, n 2, 8 tokens, 1 SDPO step, LoRA r4 q/v);
  3. Redis memory per finished job and per adapter snapshot (MEMORY USAGE), for the tiny
     budget's LoRA and for the default LoRA settings (r16 on all seven linear layers).
Writes bench/results/service_load.json. The load generator shares the machine's cores with the
server, so latencies are an upper bound of the server's own.

Usage: TTA_CACHE_DIR=/tmp/ttacache python bench/service_load.py [--clients 50] [--seconds 15] [--jobs 12]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx
import redis

ROOT = Path(__file__).parents[1]
RESULTS = ROOT / "bench" / "results" / "service_load.json"
KEY = "bench-key"
IMPOSSIBLE = {"type": "regex", "pattern": "(?!)"}
TINY_SDPO = {"steps": 1, "lora": {"rank": 4, "alpha": 8, "targets": ["q_proj", "v_proj"]}}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def body(seed: int, *, sdpo=TINY_SDPO, max_attempts=4) -> dict:
    return {"problem": {"question": f"Describe the number {seed}."}, "verifier": IMPOSSIBLE, "strategy": "sdpo",
            "budget": {"max_attempts": max_attempts}, "sampling": {"n": 2, "max_new_tokens": 8}, "sdpo": sdpo,
            "seed": seed, "cache": False}


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(q / 100 * (len(xs) - 1))))]


async def status_load(url: str, jid: str, clients: int, seconds: float) -> dict:
    lat: list[float] = []
    errors = 0
    kinds: dict[str, int] = {}
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {KEY}"}, limits=limits,
                                 timeout=30) as c:
        await c.get(f"/v1/jobs/{jid}")
        stop = time.perf_counter() + seconds

        async def one_client():
            nonlocal errors
            while time.perf_counter() < stop:
                t = time.perf_counter()
                try:
                    r = await c.get(f"/v1/jobs/{jid}")
                except httpx.TransportError as exc:  # counted, not hidden
                    errors += 1
                    kinds[type(exc).__name__] = kinds.get(type(exc).__name__, 0) + 1
                    continue
                lat.append(time.perf_counter() - t)
                errors += r.status_code != 200

        t0 = time.perf_counter()
        await asyncio.gather(*(one_client() for _ in range(clients)))
        wall = time.perf_counter() - t0
    return {"clients": clients, "seconds": round(wall, 1), "requests": len(lat), "errors": errors,
            "transport_errors": kinds,
            "rps": round(len(lat) / wall, 1), "p50_ms": round(pct(lat, 50) * 1000, 2),
            "p99_ms": round(pct(lat, 99) * 1000, 2), "mean_ms": round(statistics.mean(lat) * 1000, 2)}


def wait_final(http: httpx.Client, jid: str, timeout: float = 600) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = http.get(f"/v1/jobs/{jid}").json()
        if job["status"] in ("solved", "exhausted", "cancelled", "failed"):
            return job
        time.sleep(0.25)
    raise TimeoutError(jid)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--clients", type=int, default=50)
    ap.add_argument("--seconds", type=float, default=15.0)
    ap.add_argument("--jobs", type=int, default=12)
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="tta-bench-"))
    rport, aport = free_port(), free_port()
    redis_bin = shutil.which("redis-server")
    procs: list[subprocess.Popen] = []
    procs.append(subprocess.Popen([redis_bin, "--port", str(rport), "--bind", "127.0.0.1", "--save", "",
                                   "--appendonly", "no", "--dir", str(tmp)], stdout=subprocess.DEVNULL))
    ns = "bench-" + uuid.uuid4().hex[:6]
    env = dict(os.environ, TTA_MODEL="tiny", TTA_ENGINE="transformers", TTA_REDIS_URL=f"redis://127.0.0.1:{rport}/0",
               TTA_REDIS_NAMESPACE=ns, TTA_API_KEYS=KEY, TTA_MAX_ACTIVE_JOBS_PER_KEY="1000", TTA_THREADS="1",
               TTA_CACHE_DIR=os.environ.get("TTA_CACHE_DIR", "/tmp/ttacache"), TTA_LOG_LEVEL="WARNING")
    logs = open(tmp / "procs.log", "w")
    procs.append(subprocess.Popen([sys.executable, "-m", "service.cli", "serve", "--no-worker", "--port", str(aport),
                                   "--log-level", "warning"], env=env, cwd=ROOT, stdout=logs, stderr=subprocess.STDOUT))
    for i in range(args.workers):
        procs.append(subprocess.Popen([sys.executable, "-m", "service.cli", "worker"], env=dict(env, TTA_WORKER_NAME=f"w{i}"),
                                      cwd=ROOT, stdout=logs, stderr=subprocess.STDOUT))
    url = f"http://127.0.0.1:{aport}"
    http = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {KEY}"}, timeout=60)
    r = redis.Redis(port=rport)
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                if http.get("/readyz").status_code == 200 and r.hlen(f"{ns}:v1:workers") >= args.workers:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError((tmp / "procs.log").read_text()[-3000:])
            time.sleep(0.5)
        print(f"stack up: api {url}, {args.workers} workers, redis :{rport}", flush=True)

        # 2. jobs per minute (first: it also leaves finished jobs to read)
        t0 = time.monotonic()
        ids = [http.post("/v1/jobs", json=body(1000 + i)).json()["id"] for i in range(args.jobs)]
        jobs = [wait_final(http, j) for j in ids]
        wall = time.monotonic() - t0
        assert all(j["status"] == "exhausted" and j["attempts_used"] == 4 for j in jobs), jobs
        throughput = {"jobs": args.jobs, "workers": args.workers, "wall_s": round(wall, 1),
                      "jobs_per_minute": round(args.jobs / wall * 60, 1),
                      "mean_job_wall_s": round(statistics.mean(j["result"]["wall_s"] for j in jobs), 2),
                      "budget": "sdpo, 4 attempts (2 rounds x n 2), 8 new tokens, 1 SDPO step, LoRA r4 on q/v"}
        print("throughput", throughput, flush=True)

        # 1. status reads under load, on a finished job (its result included in each answer)
        import psutil

        api = psutil.Process(procs[1].pid)
        seq = []
        for _ in range(200):  # one client, sequential: the floor
            t = time.perf_counter()
            http.get(f"/v1/jobs/{ids[0]}")
            seq.append(time.perf_counter() - t)
        cpu0 = sum(api.cpu_times()[:2])
        latency = asyncio.run(status_load(url, ids[0], args.clients, args.seconds))
        cpu = sum(api.cpu_times()[:2]) - cpu0
        latency["api_cpu_ms_per_request"] = round(cpu / max(1, latency["requests"]) * 1000, 2)
        latency["single_client_p50_ms"] = round(pct(seq, 50) * 1000, 2)
        latency["single_client_p99_ms"] = round(pct(seq, 99) * 1000, 2)
        latency["payload_bytes"] = len(http.get(f"/v1/jobs/{ids[0]}").content)
        latency["load_average_1m"] = os.getloadavg()[0]
        print("status reads", latency, flush=True)

        # 3. memory
        p = f"{ns}:v1"

        def mem(key: str) -> int:
            return int(r.memory_usage(key, samples=0) or 0)

        per_job = []
        for j in jobs:
            keys = [k.decode() for k in r.scan_iter(match=f"{p}:job:{j['id']}*")]
            job_keys = [k for k in keys if ":adapter:" not in k]
            per_job.append({k.split(":")[-1] if k.count(":") > 3 else "record": mem(k) for k in job_keys})
        adapters = [mem(k.decode()) for k in r.scan_iter(match=f"{p}:job:*:adapter:*")]
        big = http.post("/v1/jobs?wait=true&wait_s=300", json=body(7, sdpo={"steps": 1}, max_attempts=4)).json()
        big_adapter = [mem(k.decode()) for k in r.scan_iter(match=f"{p}:job:{big['id']}:adapter:*")]
        memory = {
            "job_bytes_mean": round(statistics.mean(sum(d.values()) for d in per_job)),
            "job_bytes_by_key_mean": {k: round(statistics.mean(d.get(k, 0) for d in per_job)) for k in per_job[0]},
            "adapters_kept_per_job": len(adapters) // len(jobs),
            "adapter_snapshot_bytes_r4_qv": round(statistics.mean(adapters)),
            "adapter_snapshot_bytes_r16_all_linear": round(statistics.mean(big_adapter)) if big_adapter else None,
            "note": "job = record hash (request + result) + attempts list + events stream, 4 attempts of <=8 tokens; "
                    "checkpoint state is deleted when the job ends; snapshots hold student + EMA teacher in fp32",
        }
        print("memory", memory, flush=True)

        out = {"when": time.strftime("%Y-%m-%d %H:%M:%S"), "machine": {"cpus": os.cpu_count(),
               "platform": platform.platform(), "python": platform.python_version()},
               "model": "tiny (SmolLM2-135M-Instruct), transformers engine, fp32, 1 torch thread per worker",
               "status_reads": latency, "throughput": throughput, "redis_memory": memory}
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(json.dumps(out, indent=2) + "\n")
        print(f"wrote {RESULTS}")
    finally:
        http.close()
        for proc in reversed(procs):
            proc.send_signal(signal.SIGTERM if proc is procs[0] else signal.SIGKILL)
        for proc in procs:
            proc.wait(10)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
