"""Container health checks (Dockerfile HEALTHCHECK and docker-compose.yml `healthcheck`).

    healthcheck.py http URL       exit 0 when URL answers 200 (the API: /readyz)
    healthcheck.py sandbox URL    exit 0 when the sandbox's /healthz says its isolation works
    healthcheck.py worker         exit 0 when this container's worker wrote a heartbeat to
                                  Redis within the last TTA_LEASE_S seconds

Exit 1 otherwise, with one line on stderr saying why (`docker inspect` shows it). Only the
standard library is imported for the HTTP checks, so the sandbox image needs nothing more.
"""

from __future__ import annotations

import json
import socket
import sys
import time
import urllib.error
import urllib.request

TIMEOUT_S = 5.0


def _get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT_S) as res:  # noqa: S310 (a local URL from our own config)
            return res.status, res.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def check_http(url: str) -> str | None:
    status, body = _get(url)
    return None if status == 200 else f"{url} answered {status}: {body[:200]!r}"


def check_sandbox(url: str) -> str | None:
    """A sandbox whose bubblewrap cannot create its namespaces still answers /healthz (with
    `isolation: false`); it refuses every python_tests verification, so it is not healthy."""
    status, body = _get(url)
    if status != 200:
        return f"{url} answered {status}"
    info = json.loads(body)
    if info.get("mode") == "bwrap" and not info.get("isolation"):
        return f"bubblewrap cannot isolate here: {info.get('detail')}"
    return None


def check_worker() -> str | None:
    """The worker beats only once its model is loaded and its loop runs, so a fresh beat
    means it is serving the queue (during a job it still beats every TTA_LEASE_S/4)."""
    from service.settings import get_settings
    from service.store import Store

    settings = get_settings()
    if not settings.redis_url:
        return "TTA_REDIS_URL is not set"
    store = Store.from_settings(settings)
    beats = store.r.hgetall(store.k_workers)
    # default worker names are <hostname>-<pid>-<random>; the hostname is the container's
    mine = settings.worker_name
    prefix = socket.gethostname() + "-"
    now = time.time()
    for raw_name, raw in beats.items():
        name = raw_name.decode() if isinstance(raw_name, bytes) else raw_name
        if name == mine or (mine is None and name.startswith(prefix)):
            age = now - float(json.loads(raw).get("ts", 0))
            if age <= settings.lease_s:
                return None
            return f"worker {name}: last heartbeat {age:.0f} s ago (limit {settings.lease_s:g} s)"
    return f"no heartbeat from a worker named {mine or prefix + '*'} (model still loading?)"


def main(argv: list[str]) -> int:
    if len(argv) == 2 and argv[0] == "http":
        why = check_http(argv[1])
    elif len(argv) == 2 and argv[0] == "sandbox":
        why = check_sandbox(argv[1])
    elif argv == ["worker"]:
        why = check_worker()
    else:
        print(__doc__, file=sys.stderr)
        return 2
    if why:
        print(f"unhealthy: {why}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except Exception as exc:  # unreachable service, bad JSON: unhealthy, said in one line
        print(f"unhealthy: {type(exc).__name__}: {exc}", file=sys.stderr)
        sys.exit(1)
