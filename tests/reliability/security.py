"""The service paths that run untrusted code, driven with the attack catalog
(tests/sandbox/attacks.py), and the scan for leaked secrets. Shared by test_security.py and
bench/reliability.py.

Paths: `tta verify PROBLEM ANSWER` (in-process bubblewrap, the CLI a user runs), the
sandbox service (`tta sandbox serve`, what workers call when TTA_SANDBOX_URL is set) and a
job, whose verifier's own test code runs the probes (a job's answers come from the model,
so hostile code reaches the sandbox in a job through the client-supplied tests)."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path

from tests.reliability.live import ROOT, Stack
from tests.sandbox.attacks import Attack, Target, as_answer, breaches

TIME_LIMIT_S = 1.0


def attack_spec(token: str) -> dict:
    """stdio tests whose expected output (a fresh token) no attack can know: only an escape
    that forges the verdict could pass."""
    return {"type": "python_tests", "format": "stdio", "cases": [{"input": "", "output": token}],
            "time_limit_s": TIME_LIMIT_S, "total_time_limit_s": 2 * TIME_LIMIT_S}


@dataclass
class Outcome:
    attack: str
    path: str
    verdict: str
    kind: str
    breaches: list[str]

    @property
    def contained(self) -> bool:
        return self.verdict != "pass" and not self.breaches


def via_tta_verify(attack: Attack, target: Target, env: dict[str, str], workdir: Path) -> Outcome:
    token = uuid.uuid4().hex
    problem = workdir / f"{attack.name}.json"
    problem.write_text(json.dumps({"question": "x", "verifier": attack_spec(token)}))
    answer = workdir / f"{attack.name}.md"
    answer.write_text(as_answer(attack.program(target)))
    r = subprocess.run([sys.executable, "-m", "service.cli", "verify", str(problem), str(answer), "--json"],
                       env=env, cwd=ROOT, capture_output=True, text=True, timeout=120)
    try:
        record = json.loads(r.stdout)
        verdict, kind = record["verdict"], record["kind"]
    except (ValueError, KeyError):
        verdict, kind = f"exit {r.returncode}", "no verdict"
    found = breaches(target, [r.stdout, r.stderr])
    if r.returncode not in (0, 1, 2):  # 2 = the verifier itself failed (fails closed); anything else: it died
        found.append(f"tta verify died: exit {r.returncode}")
    return Outcome(attack.name, "tta verify", verdict, kind, found)


def via_sandbox_service(url: str, attacks: list[Attack], target: Target) -> list[Outcome]:
    """All attacks in one batch to `tta sandbox serve` (it runs two at a time)."""
    from sandbox.client import RemoteVerifier
    from sandbox.specs import PythonTestsSpec

    token = uuid.uuid4().hex
    spec = PythonTestsSpec.model_validate(attack_spec(token))
    with RemoteVerifier(url, timeout_s=600) as remote:
        results = remote.verify_many(spec, [as_answer(a.program(target)) for a in attacks])
    found = breaches(target, [r.feedback for r in results])  # host-side effects are shared by the batch
    return [Outcome(a.name, "sandbox service", r.verdict, r.kind, found) for a, r in zip(attacks, results)]


def probe_tests(target: Target) -> str:
    """HumanEval-style test code (`check`) that first probes for every way out it can try
    without killing itself, and passes only if all were closed: a job that solves with it
    ran the probes and found nothing open."""
    return f'''
import os, socket
BREACHES = []
for key in os.environ:
    if key.startswith("TTA_") or "REDIS" in key:
        BREACHES.append("environment: " + key)
for pid in os.listdir("/proc"):
    if pid.isdigit():
        try:
            if b"TTA_" in open("/proc/" + pid + "/environ", "rb").read():
                BREACHES.append("environ of pid " + pid)
        except OSError:
            pass
if len([p for p in os.listdir("/proc") if p.isdigit()]) > 50:
    BREACHES.append("sees the host's processes")
for port in {target.all_ports!r}:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        BREACHES.append("connected to port %d" % port)
    except OSError:
        pass
try:
    socket.getaddrinfo("example.com", 80)
    BREACHES.append("resolved a name")
except OSError:
    pass
for path in {[p for p in target.outside if not p.startswith("/tmp/")]!r}:  # /tmp in here is the sandbox's own
    try:
        open(path, "w").write("x")
        BREACHES.append("wrote " + path)
    except OSError:
        pass
try:
    os.kill(-1, 9)  # every process it may signal (Linux spares the caller)
except OSError:
    pass

def probe():
    pass

def check(candidate):
    assert not BREACHES, BREACHES
'''


def probe_job(target: Target, seed: int) -> dict:
    return {"problem": {"question": "Write a Python function add(a, b) that returns a + b."},
            "verifier": {"type": "python_tests", "format": "assert", "tests": probe_tests(target),
                         "entry_point": "probe", "time_limit_s": 10},
            "strategy": "best_of_k", "budget": {"max_attempts": 8}, "sampling": {"n": 2, "max_new_tokens": 64,
                                                                                  "temperature": 0.7},
            "seed": seed, "cache": False}


def fork_bomb_job(target: Target, seed: int) -> dict:
    from tests.sandbox.attacks import fork_bomb

    bomb = fork_bomb(target.marker) + "\ndef probe():\n    pass\n\ndef check(candidate):\n    pass\n"
    return {**probe_job(target, seed), "budget": {"max_attempts": 2},
            "verifier": {"type": "python_tests", "format": "assert", "tests": bomb, "entry_point": "probe",
                         "time_limit_s": TIME_LIMIT_S, "total_time_limit_s": 2 * TIME_LIMIT_S}}


# ---- secrets ----------------------------------------------------------------------------------------


def stored_texts(stack: Stack) -> dict[str, str]:
    """Everything the stack's Redis holds under its namespace, as text, by key."""
    r = stack.redis.client()
    out = {}
    for key in r.scan_iter(match=f"{stack.namespace}:*"):
        kind = r.type(key).decode()
        if kind == "hash":
            value = r.hgetall(key)
        elif kind == "list":
            value = r.lrange(key, 0, -1)
        elif kind == "stream":
            value = r.xrange(key)
        elif kind == "set":
            value = r.smembers(key)
        else:
            value = r.get(key)
        out[key.decode(errors="replace")] = key.decode(errors="replace") + " " + (
            value.decode(errors="replace") if isinstance(value, bytes) else repr(value))
    return out


def secret_leaks(stack: Stack, extra_texts: dict[str, str] | None = None) -> list[str]:
    """Where a secret of the stack (API keys, Redis password and URL, HMAC secret) occurs:
    process logs, Redis (job records, attempts, events, adapters, queue...), /metrics and
    the API's job views. [] when nowhere."""
    texts = {f"log {f.name}": f.read_text(errors="replace") for f in stack.logs.glob("*.log")}
    stored = stored_texts(stack)
    texts.update({f"redis {k}": v for k, v in stored.items()})
    texts["GET /metrics"] = stack.http.get("/metrics").text
    for key in stored:
        parts = key.split(":")
        if len(parts) == 4 and parts[2] == "job":
            jid = parts[3]
            texts[f"GET /v1/jobs/{jid}"] = stack.http.get(f"/v1/jobs/{jid}").text
            texts[f"GET /v1/jobs/{jid}/attempts"] = stack.http.get(f"/v1/jobs/{jid}/attempts").text
    texts.update(extra_texts or {})
    return [f"{name}: {secret[:6]}..." for name, text in texts.items() for secret in stack.secret_values
            if secret and secret in text]
