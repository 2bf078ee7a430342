"""Reliability and security figures (issue #8), at full size, against real processes on
loopback: `tta serve` (API only, for the fuzzer and the bad-input table), then `tta serve
--workers 2` on the tiny model verifying through `tta sandbox serve`, on a private Redis
with AOF and a password.

  1. fuzzing: schemathesis over the live OpenAPI schema (>= 1000 requests): 5xx, 4xx not in
     our error shape, and schemathesis' own conformance findings;
  2. bad input: the table of tests/reliability/bad_input.py, status / code / message;
  3. load: 50 jobs at once, each client polling its job: all final, counts agree, p50/p99
     status-read latency;
  4. faults: the scenarios of tests/reliability/faults.py, plus a Redis crash (SIGKILL,
     appendfsync everysec) and a sandbox restarted while the worker retries;
  5. attacks: the catalog (tests/sandbox/attacks.py) via `tta verify` and via the sandbox
     service, a job whose verifier probes, a job whose verifier fork-bombs, the http
     verifier's refusals, and the secrets scan.

The same code runs, smaller, as the CI suite (`pytest tests/reliability`). Prints a table
and writes bench/results/reliability.json.

Usage: TTA_CACHE_DIR=/tmp/ttacache python -m bench.reliability [--fuzz-examples 100] [--jobs 50]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # `python bench/reliability.py` as well as `-m bench.reliability`
    sys.path.insert(0, str(ROOT))

RESULTS = ROOT / "bench" / "results" / "reliability.json"


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(q / 100 * (len(xs) - 1))))]


def _checked(fn, *args, **kwargs) -> dict:
    """Run a scenario: its observations and whether its checks held."""
    t = time.monotonic()
    try:
        seen = fn(*args, **kwargs)
        ok, why = True, ""
    except AssertionError as exc:
        seen, ok, why = {}, False, str(exc)[:1500]
    except Exception:  # a scenario that could not run is a failure too, with its trace
        seen, ok, why = {}, False, traceback.format_exc()[-1500:]
    return {"held": ok, "why": why, "seconds": round(time.monotonic() - t, 1), **seen}


def fuzz_and_bad_input(logs: Path, examples: int) -> dict:
    from tests.reliability.bad_input import CASES, GOOD, problems, send
    from tests.reliability.fuzz import fuzz
    from tests.reliability.live import Stack

    api = Stack(logs=logs / "api-only", workers=0,
                extra_env={"TTA_MAX_WAIT_S": "0.5", "TTA_MAX_ACTIVE_JOBS_PER_KEY": "100000"}).start(timeout=120)
    try:
        table = []
        for case in CASES:
            r = send(api.http, case)
            err = r.json().get("error", {}) if r.headers.get("content-type", "").startswith("application/json") else {}
            table.append({"case": case.name, "expected": case.status, "status": r.status_code,
                          "code": err.get("code"), "message": (err.get("message") or r.text)[:160],
                          "as_expected": not problems(case, r)})
        known = []
        for seed in range(5):
            jid = api.http.post("/v1/jobs", json={**GOOD, "seed": seed, "cache": False}).json()["id"]
            api.http.delete(f"/v1/jobs/{jid}")
            known.append(jid)
        report = fuzz(api.url, api.api_keys[0], examples=examples, seed=2, known_ids=tuple(known), conformance=True)
        return {"bad_input": table,
                "fuzz": {**report.summary(), "server_error_samples": report.server_errors[:5],
                         "bad_shape_samples": report.bad_shape[:5],
                         "by_operation": dict(sorted(report.by_status.items()))}}
    finally:
        api.close()


def stack_figures(logs: Path, jobs: int) -> dict:
    from tests.reliability import faults
    from tests.reliability.live import Stack
    from tests.reliability.load import run_load
    from tests.reliability.security import (
        fork_bomb_job,
        probe_job,
        secret_leaks,
        via_sandbox_service,
        via_tta_verify,
    )
    from tests.sandbox.attacks import CATALOG, Target, breaches

    out: dict = {}
    stack = Stack(logs=logs / "stack", workers=2).start()
    try:
        # -- load ---------------------------------------------------------------------------
        before = stack.metric("tta_attempts_total")
        run = run_load(stack.url, stack.api_keys[0], jobs)
        bad = []
        for job, expected in zip(run.jobs, run.expected):
            try:
                assert job["status"] == expected, (job["status"], job["reason"])
                stack.check_record(job)
            except AssertionError as exc:
                bad.append(f"{job['id']}: {exc}")
        reported = sum(j["attempts_used"] for j in run.jobs)
        lat = run.status_latency_s
        out["load"] = {
            "jobs": jobs, "workers": stack.workers, "final": sum(j["status"] in ("solved", "exhausted", "failed",
                                                                                "cancelled") for j in run.jobs),
            "statuses": {s: sum(j["status"] == s for j in run.jobs) for s in ("solved", "exhausted", "failed")},
            "records_whole": jobs - len(bad), "record_problems": bad[:5],
            "attempts_reported": reported, "attempts_counted": stack.metric("tta_attempts_total") - before,
            "drain_s": round(run.drain_s, 1), "jobs_per_min": round(60 * jobs / run.drain_s, 1),
            "status_reads": len(lat), "status_p50_ms": round(1000 * statistics.median(lat), 1),
            "status_p99_ms": round(1000 * pct(lat, 99), 1), "status_max_ms": round(1000 * max(lat), 1),
            "submit_p99_ms": round(1000 * pct(run.submit_latency_s, 99), 1),
        }
        print(f"load: {out['load']}", flush=True)

        # -- faults -------------------------------------------------------------------------
        scenarios = {**faults.SCENARIOS,
                     "Redis crashed mid-job (SIGKILL, appendfsync everysec)":
                         lambda s: faults.redis_restart_mid_job(s, crash=True),
                     "sandbox killed mid-verification, restarted at once":
                         lambda s: faults.sandbox_killed_mid_verification(s, restart_at_once=True)}
        out["faults"] = {}
        for name, fn in scenarios.items():
            out["faults"][name] = _checked(fn, stack)
            print(f"fault: {name}: {out['faults'][name]}", flush=True)
            stack.heal()

        # -- attacks ------------------------------------------------------------------------
        target = Target(secrets=tuple(stack.secret_values),
                        ports=(6379, stack.redis.port, stack.api_port, stack.sandbox_port))
        env = stack.env()
        env.pop("TTA_SANDBOX_URL")
        attacks = []
        with tempfile.TemporaryDirectory() as work:
            for attack in CATALOG:
                t = time.monotonic()
                o = via_tta_verify(attack, target, env, Path(work))
                attacks.append({"attack": attack.name, "what": attack.what, "path": o.path, "verdict": o.verdict,
                                "kind": o.kind, "contained": o.contained, "breaches": o.breaches,
                                "seconds": round(time.monotonic() - t, 1)})
        t = time.monotonic()
        for o in via_sandbox_service(f"http://127.0.0.1:{stack.sandbox_port}", list(CATALOG), target):
            attacks.append({"attack": o.attack, "path": o.path, "verdict": o.verdict, "kind": o.kind,
                            "contained": o.contained, "breaches": o.breaches})
        out["sandbox_service_batch_s"] = round(time.monotonic() - t, 1)

        def job_attack(body: dict, want: str) -> dict:
            job = stack.wait_final(stack.submit(body))
            fb = [a["feedback"] for a in (job["result"] or {}).get("attempts", [])]
            found = breaches(target, fb)
            return {"status": job["status"], "kinds": [a["kind"] for a in job["result"]["attempts"]],
                    "contained": job["status"] == want and not found, "breaches": found}

        out["job_attacks"] = {"probes in the verifier's tests (must solve)": job_attack(probe_job(target, 180), "solved"),
                              "fork bomb in the verifier's tests (must exhaust)":
                                  job_attack(fork_bomb_job(target, 181), "exhausted")}
        out["attacks"] = attacks

        from sandbox.client import RemoteVerifier
        from sandbox.specs import HttpSpec

        refused = {}
        with RemoteVerifier(f"http://127.0.0.1:{stack.sandbox_port}") as remote:
            for url in ("http://127.0.0.1:9/", "http://localhost:9/", "http://10.1.2.3/", "http://172.16.0.1/",
                        "http://192.168.0.1/", "http://169.254.169.254/latest", "http://[::1]:9/",
                        "http://[::ffff:127.0.0.1]:9/", "http://[fd00::1]/", "http://0.0.0.0:9/"):
                v = remote.verify(HttpSpec(type="http", url=url, timeout_s=2, retries=0), "42")
                refused[url] = v.verdict == "error" and "not allowed" in v.feedback
        out["http_verifier_refusals"] = refused
        target.close()

        # -- secrets --------------------------------------------------------------------------
        leaks = secret_leaks(stack)
        out["secrets"] = {"checked": ["API keys", "Redis password", "Redis URL", "http verifier HMAC secret"],
                          "places": ["process logs", "Redis (records, attempts, events, adapters, queue)",
                                     "/metrics", "job views and attempts pages"],
                          "log_bytes": sum(f.stat().st_size for f in stack.logs.glob("*.log")),
                          "leaks": leaks}
    finally:
        stack.close()
    return out


def table(res: dict) -> str:
    rows = []
    f = res["fuzz"]
    rows.append(("fuzzing (schemathesis, live schema)",
                 f"{f['requests']} requests over {f['operations']} operations: {f['server_errors']} 5xx, "
                 f"{f['bad_error_shape']} 4xx outside our shape; statuses {f['by_status']}; "
                 f"conformance findings {f['schema_conformance_findings']}"))
    bi = res["bad_input"]
    rows.append(("bad input", f"{sum(c['as_expected'] for c in bi)}/{len(bi)} cases got their status, code and message"))
    ld = res["load"]
    rows.append(("load", f"{ld['final']}/{ld['jobs']} jobs final with {ld['workers']} workers in {ld['drain_s']} s "
                         f"({ld['jobs_per_min']}/min), {ld['records_whole']}/{ld['jobs']} records whole, attempts "
                         f"{ld['attempts_counted']:g} counted = {ld['attempts_reported']} reported; status reads "
                         f"p50 {ld['status_p50_ms']} ms, p99 {ld['status_p99_ms']} ms ({ld['status_reads']} reads)"))
    for name, r in res["faults"].items():
        extra = {k: v for k, v in r.items() if k not in ("held", "why", "seconds")}
        rows.append((f"fault: {name}", ("survived" if r["held"] else f"FAILED: {r['why'][:300]}") + f"; {extra}"))
    by_path: dict[str, list] = {}
    for a in res["attacks"]:
        by_path.setdefault(a["path"], []).append(a)
    for path, items in by_path.items():
        kinds = sorted({f"{a['attack']}={a['kind']}" for a in items})
        rows.append((f"attacks via {path}", f"{sum(a['contained'] for a in items)}/{len(items)} contained ("
                                            + ", ".join(kinds) + ")"))
    for name, j in res["job_attacks"].items():
        rows.append((f"job: {name}", f"{'contained' if j['contained'] else 'NOT CONTAINED'}: {j['status']}, {j['kinds']}"))
    h = res["http_verifier_refusals"]
    rows.append(("http verifier, enabled, default policy", f"{sum(h.values())}/{len(h)} non-public targets refused"))
    s = res["secrets"]
    rows.append(("secrets", f"{len(s['leaks'])} leaks of {', '.join(s['checked'])} in {', '.join(s['places'])}"))
    width = max(len(r[0]) for r in rows)
    return "\n".join(f"{a.ljust(width)}  {b}" for a, b in rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--fuzz-examples", type=int, default=100, help="Generated requests per operation and mode.")
    ap.add_argument("--jobs", type=int, default=50, help="Jobs in the load run.")
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args()
    os.environ.setdefault("TTA_CACHE_DIR", "/tmp/ttacache")
    started = time.time()
    res: dict = {"machine": {"platform": platform.platform(), "cpus": os.cpu_count(),
                             "load_average_start": os.getloadavg()}}
    with tempfile.TemporaryDirectory(prefix="tta-reliability-") as d:
        res.update(fuzz_and_bad_input(Path(d), args.fuzz_examples))
        print(f"fuzz: {res['fuzz']['requests']} requests, bad input done", flush=True)
        res.update(stack_figures(Path(d), args.jobs))
    res["machine"]["load_average_end"] = os.getloadavg()
    res["seconds"] = round(time.time() - started, 1)
    res["command"] = "TTA_CACHE_DIR=/tmp/ttacache python -m bench.reliability " + " ".join(sys.argv[1:])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(res, indent=2, default=str) + "\n")
    print(table(res))
    print(f"\nwrote {args.out} ({res['seconds']} s; load average {res['machine']['load_average_start']} -> "
          f"{res['machine']['load_average_end']})")


if __name__ == "__main__":
    main()
