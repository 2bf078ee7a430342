"""A small Python client of the v1 HTTP API (httpx), shipped with the package.

    from service.client import Client
    c = Client()                       # TTA_URL (default http://127.0.0.1:8080), TTA_API_KEY
    job = c.submit(body)               # {"id", "status", ...}
    for ev in c.events(job["id"]):     # live progress (SSE), resumable
        print(ev.type, ev.data)
    c.job(job["id"])["result"]

Errors come back as `ApiError` with the server's `code`, `message` and `details`.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from typing import Any, Iterator

import httpx

DEFAULT_URL = "http://127.0.0.1:8080"


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str, details: dict | None = None) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status, self.code, self.message, self.details = status, code, message, details or {}


@dataclass
class Event:
    id: str | None
    type: str
    data: dict[str, Any]


class Client:
    def __init__(self, base_url: str | None = None, api_key: str | None = None, timeout: float = 30.0) -> None:
        self.base_url = (base_url or os.environ.get("TTA_URL") or DEFAULT_URL).rstrip("/")
        key = api_key if api_key is not None else os.environ.get("TTA_API_KEY")
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        self.http = httpx.Client(base_url=self.base_url, headers=headers, timeout=timeout)

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @staticmethod
    def _check(r: httpx.Response) -> httpx.Response:
        if r.status_code >= 400:
            try:
                e = r.json()["error"]
                raise ApiError(r.status_code, e["code"], e["message"], e.get("details"))
            except (ValueError, KeyError, TypeError):
                raise ApiError(r.status_code, "http_error", r.text[:500]) from None
        return r

    # -- jobs ----------------------------------------------------------------------------------
    def submit(self, body: dict, *, wait: bool = False, wait_s: float = 60.0) -> dict:
        params = {"wait": "true", "wait_s": wait_s} if wait else None
        timeout = wait_s + 30 if wait else self.http.timeout
        return self._check(self.http.post("/v1/jobs", json=body, params=params, timeout=timeout)).json()

    def job(self, job_id: str) -> dict:
        return self._check(self.http.get(f"/v1/jobs/{job_id}")).json()

    def attempts(self, job_id: str, offset: int = 0, limit: int = 1000) -> dict:
        return self._check(self.http.get(f"/v1/jobs/{job_id}/attempts", params={"offset": offset, "limit": limit})).json()

    def cancel(self, job_id: str) -> dict:
        return self._check(self.http.delete(f"/v1/jobs/{job_id}")).json()

    def adapter(self, job_id: str) -> bytes:
        return self._check(self.http.get(f"/v1/jobs/{job_id}/adapter")).content

    def wait(self, job_id: str, timeout_s: float = 600.0, poll_s: float = 1.0) -> dict:
        deadline = time.monotonic() + timeout_s
        while True:
            job = self.job(job_id)
            if job["status"] not in ("queued", "running") or time.monotonic() > deadline:
                return job
            time.sleep(poll_s)

    def events(self, job_id: str, last_event_id: str | None = None, *, reconnect: bool = True) -> Iterator[Event]:
        """The job's events until `done`; on a dropped connection, reconnects with Last-Event-ID."""
        while True:
            headers = {"Last-Event-ID": last_event_id} if last_event_id else {}
            try:
                with self.http.stream("GET", f"/v1/jobs/{job_id}/events", headers=headers,
                                      timeout=httpx.Timeout(30.0, read=None)) as r:
                    if r.status_code >= 400:
                        r.read()
                        self._check(r)
                    for ev in parse_sse(r.iter_lines()):
                        last_event_id = ev.id or last_event_id
                        yield ev
                        if ev.type == "done":
                            return
                return
            except (httpx.RemoteProtocolError, httpx.ReadError, httpx.ConnectError):
                if not reconnect:
                    raise
                time.sleep(1.0)


def parse_sse(lines: Iterator[str]) -> Iterator[Event]:
    """Server-Sent Events frames -> Event (comments and `retry:` skipped)."""
    eid, etype, data = None, "message", []
    for line in lines:
        if line == "":
            if data:
                yield Event(eid, etype, json.loads("\n".join(data)))
            eid, etype, data = None, "message", []
        elif line.startswith(":"):
            continue
        else:
            field, _, value = line.partition(":")
            value = value[1:] if value.startswith(" ") else value
            if field == "id":
                eid = value
            elif field == "event":
                etype = value
            elif field == "data":
                data.append(value)
