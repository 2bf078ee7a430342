"""Fuzzing the live API with schemathesis: requests generated from the OpenAPI schema the
running server publishes (`/openapi.json`), sent over loopback.

The properties held: no 5xx (and no dropped connection) for any request; every 4xx body
in our error shape `{"error": {"code", "message", "details"}}`. Schemathesis' own schema
conformance checks (documented status codes, positive data accepted...) are counted as
findings for the figures, not failed on: our models carry cross-field rules (e.g. "stdio
needs at least one case") that an OpenAPI schema cannot express.

Generation: each operation in positive and negative mode (hypothesis); path ids are drawn
half the time from `known_ids` (real, finished jobs) so the handlers of existing jobs are
reached too, and a fifth of the requests carry a wrong or no API key.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field

import requests

ERROR_FIELDS = {"code", "message", "details"}


def error_shape_problem(status: int, body: bytes, content_type: str) -> str | None:
    """None when `body` is our error shape (required of every 4xx and 5xx), else why not."""
    import json

    if not content_type.startswith("application/json"):
        return f"content-type {content_type!r}, not JSON"
    try:
        data = json.loads(body)
    except ValueError:
        return "body is not JSON"
    if not isinstance(data, dict) or set(data) != {"error"} or not isinstance(data["error"], dict):
        return f"not {{'error': {{...}}}}: {str(data)[:200]}"
    err = data["error"]
    if set(err) != ERROR_FIELDS:
        return f"error fields {sorted(err)}"
    if not (isinstance(err["code"], str) and err["code"] and isinstance(err["message"], str) and err["message"]
            and isinstance(err["details"], dict)):
        return f"code/message/details of the wrong type or empty: {str(err)[:200]}"
    return None


@dataclass
class FuzzReport:
    requests: int = 0
    by_status: Counter = field(default_factory=Counter)  # "POST /v1/jobs 422" -> count
    server_errors: list[str] = field(default_factory=list)  # 5xx or no answer, with a curl to reproduce
    bad_shape: list[str] = field(default_factory=list)  # 4xx not in our error shape
    conformance: Counter = field(default_factory=Counter)  # schemathesis check -> findings
    operations: int = 0
    seconds: float = 0.0

    def summary(self) -> dict:
        statuses = Counter()
        for key, n in self.by_status.items():
            statuses[key.rsplit(" ", 1)[1]] += n
        return {"requests": self.requests, "operations": self.operations, "seconds": round(self.seconds, 1),
                "by_status": dict(sorted(statuses.items())), "server_errors": len(self.server_errors),
                "bad_error_shape": len(self.bad_shape), "schema_conformance_findings": dict(self.conformance)}


def fuzz(base_url: str, api_key: str, *, examples: int, seed: int = 0, known_ids: tuple[str, ...] = (),
         served_model: str = "best_of_k:tiny", conformance: bool = False) -> FuzzReport:
    """Up to `examples` generated requests per operation and mode against `base_url`."""
    import schemathesis
    from hypothesis import HealthCheck, Phase, given, settings
    from hypothesis import seed as hseed
    from hypothesis import strategies as st
    from hypothesis.errors import Unsatisfiable
    from schemathesis import GenerationMode

    report = FuzzReport()
    schema = schemathesis.openapi.from_url(f"{base_url}/openapi.json")
    auths = {"good": {"Authorization": f"Bearer {api_key}"}, "wrong": {"Authorization": "Bearer not-a-key"},
             "none": {}}
    session = requests.Session()
    started = time.monotonic()
    for result in schema.get_all_operations():
        op = result.ok()
        report.operations += 1
        label = f"{op.method.upper()} {op.path}"
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

            @hseed(seed)
            @settings(max_examples=examples, database=None, deadline=None, phases=[Phase.explicit, Phase.generate],
                      suppress_health_check=list(HealthCheck))
            @given(case=op.as_strategy(generation_mode=mode), auth=st.sampled_from(["good"] * 4 + ["wrong", "none"]),
                   known=st.sampled_from(known_ids or ("",)), use_known=st.booleans())
            def one(case, auth, known, use_known):
                if use_known and known and "job_id" in (case.path_parameters or {}):
                    case.path_parameters["job_id"] = known
                if use_known and op.path == "/v1/chat/completions" and isinstance(case.body, dict):
                    case.body["model"] = served_model  # reach the solve path, not only "model not served"
                report.requests += 1
                try:
                    r = case.call(base_url=base_url, session=session, headers=dict(auths[auth]), timeout=60)
                except requests.RequestException as exc:
                    report.by_status[f"{label} no-answer"] += 1
                    report.server_errors.append(f"{label}: no answer ({type(exc).__name__}: {exc})\n"
                                                f"{case.as_curl_command()}")
                    return
                report.by_status[f"{label} {r.status_code}"] += 1
                if r.status_code >= 500:
                    report.server_errors.append(f"{label}: {r.status_code} {r.text[:300]}\n{case.as_curl_command()}")
                elif r.status_code >= 400:
                    ctype = r.headers.get("content-type") or [""]  # schemathesis: header -> list of values
                    why = error_shape_problem(r.status_code, r.content, ctype[0] if isinstance(ctype, list) else ctype)
                    if why:
                        report.bad_shape.append(f"{label}: {r.status_code} {why}\n{case.as_curl_command()}")
                if conformance:
                    try:
                        case.validate_response(r)
                    except (Exception, BaseExceptionGroup) as exc:  # schemathesis' FailureGroup: findings, counted
                        for sub in getattr(exc, "exceptions", [exc]):
                            report.conformance[type(sub).__name__] += 1

            try:
                one()
            except Unsatisfiable:
                pass  # e.g. no negative value exists for a free-form string path parameter
    session.close()
    report.seconds = time.monotonic() - started
    return report
