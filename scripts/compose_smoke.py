#!/usr/bin/env python3
"""Smoke test of the Compose stack as deployed: real images, real containers, the `cpu` profile.

    scripts/compose_smoke.sh [--local-bases] [--ca-bundle FILE] [--keep]

Builds the images (scripts/compose_up.sh --build-only), starts redis, sandbox, api-cpu and
worker-cpu as the project `tta-smoke` (its own env file, port, volumes), waits for every health
check, then checks what an operator relies on:

  1. a request without an API key gets 401;
  2. a bundled example, submitted over HTTP with a key, ends `solved`;
  3. an sdpo job whose worker is SIGKILLed (from the host) mid-round resumes on the restarted worker, and
     no attempt is counted twice (indices 0..n-1, each once, n <= budget); its adapter downloads;
  4. the job's attempts are in Redis (the list the API reads);
  5. after `docker restart` of the redis container the job record and attempts are still there
     (AOF on the redis-data volume);
  6. the sandbox container reaches neither redis, the api, nor anything outside (`internal: true`),
     while a worker does reach the sandbox (so the check is not vacuous);
  7. under Docker's masked /proc and read-only /proc/sys the runner's fallbacks hold: a run
     has uid 65534, hostname `sandbox`, and a nested user namespace is refused;
  8. the attack catalog (tests/sandbox/attacks.py), sent by a worker to the sandbox service, is
     contained: no attack passes, nothing survives or is written in the sandbox container, no
     zombie is left, no secret comes back;
  9. which of the sandbox container's relaxed options bubblewrap needs (each one dropped in turn);

and tears everything down, volumes included. Prints each check with its time; exit 1 if any
check failed. Only the Python standard library is used, so the host needs nothing but Docker.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PROJECT = "tta-smoke"
PORT = 18080
ENV_FILE = Path("/var/tmp/tta-smoke.env")
HEALTH_TIMEOUT_S = 900
JOB_TIMEOUT_S = 1800
SERVICES = ("redis", "sandbox", "api-cpu", "worker-cpu")


class Smoke:
    def __init__(self, compose: list[str]) -> None:
        self.compose = [*compose, "-p", PROJECT, "--env-file", str(ENV_FILE), "--profile", "cpu"]
        self.t0 = time.monotonic()
        self.rows: list[tuple[str, bool, float, str]] = []
        self.env = dict(line.split("=", 1) for line in ENV_FILE.read_text().splitlines()
                        if "=" in line and not line.lstrip().startswith("#"))
        self.key = self.env["TTA_API_KEYS"].split(",")[0]
        self.base = f"http://127.0.0.1:{PORT}"

    # ---- plumbing -----------------------------------------------------------------------------
    def run(self, *args: str, check: bool = True, timeout: float = 600, input: str | None = None) -> str:
        r = subprocess.run(list(args), capture_output=True, text=True, timeout=timeout, input=input)
        if check and r.returncode != 0:
            raise RuntimeError(f"{' '.join(args[:6])}...: exit {r.returncode}: {r.stderr.strip()[-800:]}")
        return r.stdout

    def dc(self, *args: str, **kw) -> str:
        return self.run(*self.compose, *args, **kw)

    def cid(self, service: str) -> str:
        out = self.dc("ps", "-q", service).split()
        if not out:
            raise RuntimeError(f"no container for {service}")
        return out[0]

    def exec(self, service: str, *cmd: str, **kw) -> str:
        return self.run("docker", "exec", *(["-i"] if kw.get("input") else []), self.cid(service), *cmd, **kw)

    def http(self, method: str, path: str, body: dict | None = None, key: str | None = "default",
             timeout: float = 60) -> tuple[int, bytes]:
        req = urllib.request.Request(self.base + path, method=method,
                                     data=None if body is None else json.dumps(body).encode())
        req.add_header("Content-Type", "application/json")
        if key:
            req.add_header("Authorization", f"Bearer {self.key if key == 'default' else key}")
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                return resp.status, resp.read()
        except urllib.error.HTTPError as e:
            return e.code, e.read()

    def job(self, jid: str) -> dict:
        status, body = self.http("GET", f"/v1/jobs/{jid}")
        if status != 200:
            raise RuntimeError(f"GET /v1/jobs/{jid}: {status} {body[:300]!r}")
        return json.loads(body)

    def check(self, name: str, fn) -> None:
        t = time.monotonic()
        try:
            ok, detail = fn()
        except Exception as exc:  # a check that crashed is a failed check, and the next still run
            ok, detail = False, f"{type(exc).__name__}: {exc}"
        self.rows.append((name, bool(ok), time.monotonic() - t, detail))
        mark = "ok  " if ok else "FAIL"
        print(f"[{time.monotonic() - self.t0:7.1f}s] {mark} {name} ({time.monotonic() - t:.1f} s): {detail}", flush=True)

    def wait_healthy(self, services=SERVICES, timeout: float = HEALTH_TIMEOUT_S) -> tuple[bool, str]:
        t, seen = time.monotonic(), {}
        while time.monotonic() - t < timeout:
            for s in services:
                if s not in seen:
                    state = self.run("docker", "inspect", "-f", "{{.State.Health.Status}}", self.cid(s), check=False).strip()
                    if state == "healthy":
                        seen[s] = time.monotonic() - t
            if len(seen) == len(services):
                return True, ", ".join(f"{s} {v:.0f} s" for s, v in seen.items())
            time.sleep(2)
        return False, f"not healthy after {timeout:.0f} s: {sorted(set(services) - set(seen))}"

    def wait_final(self, jid: str, timeout: float = JOB_TIMEOUT_S) -> dict:
        t = time.monotonic()
        while time.monotonic() - t < timeout:
            job = self.job(jid)
            if job["status"] in ("solved", "exhausted", "cancelled", "failed"):
                return job
            time.sleep(3)
        raise RuntimeError(f"job {jid} not final after {timeout:.0f} s")

    def example_body(self, name: str) -> dict:
        # The image's own loader turns the bundled YAML into the request body, as `tta submit` does.
        code = ("import json,sys; from pathlib import Path; from service.problem_file import load_problem_file; "
                "print(json.dumps(load_problem_file(Path(sys.argv[1])).model_dump(mode='json', exclude={'meta'})))")
        return json.loads(self.exec("api-cpu", "python", "-c", code, f"/opt/tta/examples/{name}"))

    def submit(self, body: dict) -> str:
        status, raw = self.http("POST", "/v1/jobs", body)
        if status != 202:
            raise RuntimeError(f"POST /v1/jobs: {status} {raw[:400]!r}")
        return json.loads(raw)["id"]

    def attempts(self, jid: str) -> list[dict]:
        status, raw = self.http("GET", f"/v1/jobs/{jid}/attempts")
        return json.loads(raw)["attempts"]

    def redis_cli(self, *args: str) -> str:
        return self.exec("redis", "redis-cli", "--no-auth-warning", "-a", self.env["REDIS_PASSWORD"], *args).strip()

    def redis_attempts(self, jid: str) -> int:
        keys = self.redis_cli("--scan", "--pattern", f"*:job:{jid}:attempts").split()
        if len(keys) != 1:
            raise RuntimeError(f"expected one attempts key for {jid}, found {keys}")
        return int(self.redis_cli("LLEN", keys[0]))

    # ---- the checks -----------------------------------------------------------------------------
    def check_no_key(self):
        status, body = self.http("POST", "/v1/jobs", {"question": "x"}, key=None)
        status2, _ = self.http("GET", "/v1/jobs/nope", key="wrong-key")
        return status == 401 and status2 == 401, f"no key: {status}, wrong key: {status2}"

    def check_solved(self):
        body = self.example_body("fibonacci_json.yaml")
        body.update(strategy="best_of_k", seed=0, cache=False)
        jid = self.submit(body)
        job = self.wait_final(jid)
        return job["status"] == "solved", (f"examples/fibonacci_json.yaml, best_of_k: {job['status']} after "
                                           f"{job['attempts_used']} attempts, {job['finished_at'] - job['created_at']:.0f} s")

    def start_sdpo_job(self) -> str:
        # A question the model cannot satisfy (the verifier wants a token it never sees), so
        # every round fails and trains; small rounds keep a CPU round short.
        body = self.example_body("fibonacci_json.yaml")
        body.update(verifier={"type": "regex", "pattern": "^NEVER-" + secrets.token_hex(8) + "$"},
                    strategy="sdpo", seed=0, cache=False, budget={"max_attempts": 8},
                    sampling={"n": 2, "max_new_tokens": 64, "temperature": 1.0},
                    sdpo={"steps": 1, "max_samples": 2, "lora": {"layers": 2}})
        return self.submit(body)

    def check_kill_resume(self):
        self.sdpo_job = jid = self.start_sdpo_job()
        # kill once round 1 is checkpointed and round 2 has started: mid-round
        t = time.monotonic()
        while True:
            job = self.job(jid)
            if job["rounds_done"] >= 1 and job["attempts_used"] >= 2 and job["status"] == "running":
                break
            if job["status"] != "queued" and job["status"] != "running" or time.monotonic() - t > JOB_TIMEOUT_S:
                return False, f"never reached round 2: {job['status']}, rounds {job['rounds_done']}"
            time.sleep(1)
        before = job
        worker = self.cid("worker-cpu")
        restarts = int(self.run("docker", "inspect", "-f", "{{.RestartCount}}", worker).strip())
        # a crash, not `docker kill`: Docker counts that as a manual stop and does not restart
        # it; SIGKILL of the worker's process from the host is what an OOM kill or a segfault is
        pid = self.run("docker", "inspect", "-f", "{{.State.Pid}}", worker).strip()
        self.run("kill", "-9", pid)
        killed_at = time.monotonic()
        back = "by its restart policy"
        for _ in range(30):
            if self.run("docker", "inspect", "-f", "{{.State.Running}}", worker).strip() == "true":
                break
            time.sleep(1)
        else:
            back = "by hand (`start`): the restart policy did not restart it"
            self.dc("start", "worker-cpu")
        job = self.wait_final(jid)
        after_restarts = int(self.run("docker", "inspect", "-f", "{{.RestartCount}}", worker).strip())
        idx = [a["index"] for a in self.attempts(jid)]
        once = idx == list(range(len(idx))) and len(idx) == job["attempts_used"] <= job["max_attempts"]
        status, blob = self.http("GET", f"/v1/jobs/{jid}/adapter")
        header = json.loads(blob[8:8 + int.from_bytes(blob[:8], "little")]) if status == 200 else {}
        tensors = sum(1 for k in header if k != "__metadata__")
        ok = once and job["deliveries"] >= 2 and status == 200 and tensors > 0
        return ok, (f"killed at round {before['rounds_done'] + 1} ({before['attempts_used']} attempts stored); "
                    f"worker back {back} (restarts {restarts}->{after_restarts}), job {job['status']} "
                    f"{time.monotonic() - killed_at:.0f} s later, deliveries {job['deliveries']}, attempt indices "
                    f"{idx[0] if idx else '-'}..{idx[-1] if idx else '-'} each once: {once}; adapter {status}, "
                    f"{len(blob)} bytes, {tensors} tensors, round {job['adapter_round']}")

    def check_redis_attempts(self):
        n_redis, n_api = self.redis_attempts(self.sdpo_job), len(self.attempts(self.sdpo_job))
        return n_redis == n_api > 0, f"LLEN of the job's attempts list {n_redis}, API {n_api}"

    def check_redis_restart(self):
        before = self.job(self.sdpo_job)
        self.run("docker", "restart", self.cid("redis"))
        ok, waited = self.wait_healthy(("redis",), timeout=120)
        time.sleep(2)
        after = self.job(self.sdpo_job)
        same = all(before[k] == after[k] for k in ("status", "attempts_used", "rounds_done", "adapter_round"))
        aof = self.redis_cli("CONFIG", "GET", "appendonly").split()[-1]
        return ok and same and aof == "yes", (f"redis back ({waited}); job {after['status']}, {after['attempts_used']} "
                                              f"attempts, as before: {same}; appendonly {aof}")

    def check_sandbox_isolated(self):
        probe = r"""
import json, socket, sys
out = {}
for host, port in [(h, int(p)) for h, p in (a.rsplit(":", 1) for a in sys.argv[1:])]:
    try:
        socket.create_connection((host, port), timeout=3).close()
        out[f"{host}:{port}"] = "reached"
    except OSError as e:
        out[f"{host}:{port}"] = type(e).__name__
print(json.dumps(out))
"""
        ips = {}
        for s in ("redis", "api-cpu"):
            nets = json.loads(self.run("docker", "inspect", "-f", "{{json .NetworkSettings.Networks}}", self.cid(s)))
            ips[s] = next(iter(nets.values()))["IPAddress"]
        targets = ["redis:6379", "api-cpu:8080", f"{ips['redis']}:6379", f"{ips['api-cpu']}:8080",
                   "1.1.1.1:53", "deb.debian.org:80", "pypi.org:443"]
        got = json.loads(self.exec("sandbox", "/opt/venv/bin/python", "-c", probe, *targets))
        control = json.loads(self.exec("worker-cpu", "python", "-c", probe, "sandbox:8081", "redis:6379"))
        closed = all(v != "reached" for v in got.values())
        return closed and all(v == "reached" for v in control.values()), \
            f"from the sandbox: {got}; from a worker: {control}"

    def check_sandbox_fallbacks(self):
        """Docker's masked /proc and read-only /proc/sys make the runner fall back (runner.py):
        an empty /proc, and seccomp instead of --disable-userns. Are runs still confined?"""
        code = ("from sandbox.runner import Runner; from sandbox.limits import SandboxLimits; import json\n"
                "r = Runner(SandboxLimits(), warm_pool=0)\n"
                "p = r.run_python(['-c', 'import ctypes, os, socket\\nlibc = ctypes.CDLL(None, use_errno=True)\\n"
                "rc = libc.unshare(0x10000000)\\nprint(rc, ctypes.get_errno(), os.getuid(), socket.gethostname(), "
                "len(os.listdir(\"/proc\")))'])\n"
                "print(json.dumps({'fresh_proc': r.fresh_proc, 'seccomp_userns': r.seccomp_userns, 'out': p.stdout.strip(), "
                "'err': p.stderr.strip()[-200:]}))")
        got = json.loads(self.exec("sandbox", "/opt/venv/bin/python", "-c", code).strip().splitlines()[-1])
        rc, err, uid, host, nproc = (got["out"].split() + ["?"] * 5)[:5]
        return (rc == "-1" and err == "1" and uid == "65534" and host == "sandbox"), json.dumps(got)

    def check_attacks(self):
        worker = self.cid("worker-cpu")
        self.run("docker", "exec", "-u", "0", worker, "mkdir", "-p", "/tmp/tta-tests/tests/sandbox")
        self.run("docker", "cp", str(ROOT / "tests/sandbox/attacks.py"), f"{worker}:/tmp/tta-tests/tests/sandbox/attacks.py")
        driver = r"""
import json, os, sys, uuid
sys.path.insert(0, "/tmp/tta-tests")
from tests.sandbox.attacks import CATALOG, Target, as_answer, breaches
from sandbox.client import RemoteVerifier
from sandbox.specs import PythonTestsSpec
token = uuid.uuid4().hex  # the expected output: only a forged verdict could pass
spec = PythonTestsSpec.model_validate({"type": "python_tests", "format": "stdio", "time_limit_s": 1.0,
                                       "total_time_limit_s": 2.0, "cases": [{"input": "", "output": token}]})
target = Target(secrets=tuple(sys.argv[1:]))
with RemoteVerifier("http://sandbox:8081", timeout_s=600) as remote:
    results = remote.verify_many(spec, [as_answer(a.program(target)) for a in CATALOG])
outside = list(target.outside)  # checked again where the code ran: in the sandbox container
# this worker runs unprivileged: only what it can look into is checked here (not /root)
target.outside = [p for p in outside if os.access(os.path.dirname(p), os.X_OK)]
print(json.dumps({"marker": target.marker[:15], "outside": outside,
                  "verdicts": {a.name: r.verdict for a, r in zip(CATALOG, results)},
                  "breaches": breaches(target, [r.feedback for r in results])}))
"""
        got = json.loads(self.run("docker", "exec", worker, "python", "-c", driver, self.key, self.env["REDIS_PASSWORD"],
                                  timeout=900))
        time.sleep(2)
        # what the attacks aimed at inside the sandbox container: survivors by name, files
        comms = self.exec("sandbox", "sh", "-c", "cat /proc/[0-9]*/comm 2>/dev/null")
        survivors = [c for c in comms.split() if c == got["marker"]]
        states = self.exec("sandbox", "sh", "-c", "cut -d' ' -f3 /proc/[0-9]*/stat 2>/dev/null").split()
        zombies = states.count("Z")
        files = self.exec("sandbox", "sh", "-c", "ls -d " + " ".join(got["outside"]) + " 2>/dev/null; true").split()
        passed = [n for n, v in got["verdicts"].items() if v == "pass"]
        ok = not passed and not got["breaches"] and not survivors and not files and not zombies
        return ok, (f"{len(got['verdicts'])} attacks, passed {passed or 'none'}, breaches {got['breaches'] or 'none'}, "
                    f"survivors in the sandbox {len(survivors)}, zombies {zombies}, files written {files or 'none'}")

    def check_privileges(self):
        """Start the sandbox image with each relaxation dropped in turn; does one verification pass?"""
        image = self.run("docker", "inspect", "-f", "{{.Config.Image}}", self.cid("sandbox")).strip()
        full = ["seccomp=unconfined", "apparmor=unconfined"]
        code = ("from sandbox.specs import PythonTestsSpec as S; from sandbox.verifiers import verify; "
                "r = verify(S.model_validate({'type': 'python_tests', 'format': 'stdio', 'cases': [{'input': '', 'output': 'ok'}]}), "
                "'```python\\nprint(\"ok\")\\n```'); print(r.verdict, r.feedback[-200:].replace(chr(10), ' '))")
        out = {}
        # None: as deployed; then each option dropped; last, one more (a fresh /proc)
        for dropped in [None, *full, "+systempaths=unconfined"]:
            opts = [f"--security-opt={o}" for o in full if o != dropped]
            if dropped and dropped.startswith("+"):
                opts.append(f"--security-opt={dropped[1:]}")
            r = subprocess.run(["docker", "run", "--rm", "--read-only", "--tmpfs", "/tmp", "--cap-drop=ALL",
                                "--cap-add=SETUID", "--cap-add=SETGID", "--cap-add=KILL", "--init",
                                "--security-opt=no-new-privileges:true",
                                *opts, "--network=none", "--entrypoint", "/opt/venv/bin/python", image, "-c", code],
                               capture_output=True, text=True, timeout=120)
            text = r.stdout.strip() if r.returncode == 0 and r.stdout.strip() else r.stderr.strip() or "?"
            verdict = text.splitlines()[-1][:160]
            out["as deployed" if dropped is None else f"with {dropped[1:]}" if dropped.startswith("+")
                else f"without {dropped}"] = verdict
        return out.get("as deployed", "").startswith("pass"), json.dumps(out)

    def teardown(self):
        self.dc("down", "-v", "--remove-orphans", timeout=300)
        left = self.run("docker", "volume", "ls", "-q", "--filter", f"name={PROJECT}").split()
        return not left, f"containers, networks and volumes removed; volumes left: {left or 'none'}"


def write_env() -> None:
    text = (ROOT / ".env.example").read_text()
    values = {"COMPOSE_PROFILES": "cpu", "COMPOSE_PROJECT_NAME": PROJECT, "REDIS_PASSWORD": secrets.token_hex(16),
              "TTA_API_KEYS": secrets.token_hex(16), "API_PUBLISH": f"127.0.0.1:{PORT}", "ENV_FILE": str(ENV_FILE),
              # a killed worker's job is picked up 20 s after its last lease renewal
              "TTA_LEASE_S": "20"}
    lines = []
    for line in text.splitlines():
        key = line.split("=", 1)[0]
        lines.append(f"{key}={values.pop(key)}" if "=" in line and not line.startswith("#") and key in values else line)
    lines += [f"{k}={v}" for k, v in values.items()]
    ENV_FILE.write_text("\n".join(lines) + "\n")
    ENV_FILE.chmod(0o600)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--local-bases", action="store_true", help="Build base images here (no registry): compose_up.sh.")
    ap.add_argument("--ca-bundle", help="CA bundle for pip in the image builds (default: $PIP_CERT if a file).")
    ap.add_argument("--keep", action="store_true", help="Leave the stack running (no teardown).")
    args = ap.parse_args()
    t0 = time.monotonic()
    write_env()
    up = [str(ROOT / "scripts/compose_up.sh"), "--build-only", "--env-file", str(ENV_FILE)]
    up += ["--local-bases"] * args.local_bases + (["--ca-bundle", args.ca_bundle] if args.ca_bundle else [])
    print(f"==> {' '.join(up)}", flush=True)
    subprocess.run(up, check=True, cwd=ROOT)
    # compose_up.sh may just have installed Docker or Compose: look again
    compose = ["docker", "compose"] if subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0 \
        else ["docker-compose"]
    smoke = Smoke(compose)
    print(f"==> images built in {time.monotonic() - t0:.0f} s; starting {PROJECT}", flush=True)
    smoke.dc("down", "-v", "--remove-orphans", check=False)  # a previous run's leftovers
    try:
        smoke.dc("up", "-d", timeout=600)
        smoke.check("all four containers healthy", smoke.wait_healthy)
        smoke.check("401 without or with a wrong API key", smoke.check_no_key)
        smoke.check("bundled example solved over HTTP", smoke.check_solved)
        smoke.check("worker killed mid-round: job resumes, no attempt twice, adapter served", smoke.check_kill_resume)
        smoke.check("attempts stored in Redis", smoke.check_redis_attempts)
        smoke.check("redis restarted: job record survives (AOF)", smoke.check_redis_restart)
        smoke.check("sandbox reaches nothing but its callers", smoke.check_sandbox_isolated)
        smoke.check("sandbox runs confined under Docker's /proc (nested user namespace refused)", smoke.check_sandbox_fallbacks)
        smoke.check("attack catalog contained in the sandbox container", smoke.check_attacks)
        smoke.check("sandbox privileges bubblewrap needs", smoke.check_privileges)
    finally:
        if not args.keep:
            smoke.check("teardown, volumes included", smoke.teardown)
    sizes = smoke.run("docker", "images", "--format", "{{.Repository}}:{{.Tag}} {{.Size}}").splitlines()
    print("\nimages: " + "; ".join(s for s in sizes if s.startswith(("tta-", "redis"))))
    failed = [r for r in smoke.rows if not r[1]]
    print(f"\n{len(smoke.rows) - len(failed)}/{len(smoke.rows)} checks passed in {time.monotonic() - t0:.0f} s")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
