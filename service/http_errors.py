"""The one place where errors become HTTP responses.

Every error the API returns has the shape `{"error": {"code", "message", "details"}}`:
our typed errors (`service.errors`, each with a stable `code`) map to a status here, and so
do FastAPI's validation errors (422, the field path in the message), Starlette's routing
errors (404, 405), an unreachable Redis (503) and anything unexpected (500, no internals).
"""

from __future__ import annotations

import logging

import redis
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from service import errors as E

log = logging.getLogger(__name__)

STATUS: dict[type[E.TTAError], int] = {
    E.Unauthorized: 401,
    E.JobNotFound: 404,
    E.AdapterNotFound: 404,
    E.ModelNotServed: 404,
    E.JobConflict: 409,
    E.PayloadTooLarge: 413,
    E.InvalidRequest: 422,
    E.InvalidProblem: 422,
    E.TooManyJobs: 429,
    E.StoreUnavailable: 503,
    E.ModelNotInstalled: 503,
    E.ModelCorrupt: 503,
    E.EngineUnavailable: 503,
    E.ServiceMisconfigured: 500,
}

_HTTP_CODES = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
               405: "method_not_allowed", 406: "not_acceptable", 413: "payload_too_large",
               415: "unsupported_media_type", 422: "invalid_request", 429: "too_many_requests"}


def error_body(code: str, message: str, details: dict | None = None) -> dict:
    return {"error": {"code": code, "message": message, "details": details or {}}}


def error_response(status: int, code: str, message: str, details: dict | None = None,
                   headers: dict | None = None) -> JSONResponse:
    return JSONResponse(error_body(code, message, details), status_code=status, headers=headers)


def status_of(exc: E.TTAError) -> int:
    for cls in type(exc).__mro__:
        if cls in STATUS:
            return STATUS[cls]
    return 500


def _loc(loc) -> str:
    return ".".join(str(p) for p in loc) or "(request)"


def validation_message(errs: list[dict]) -> str:
    first = errs[0]
    more = len(errs) - 1
    msg = f"{_loc(first['loc'])}: {first['msg']}"
    return msg + (f" (and {more} more error{'s' if more > 1 else ''})" if more else "")


def _unparsable_body(cause: BaseException) -> str | None:
    """Why FastAPI could not parse a JSON body (it answers a bare "error parsing the body")."""
    if isinstance(cause, UnicodeDecodeError):
        return f"request body is not valid UTF-8 (byte {cause.object[cause.start]:#04x} at offset {cause.start}); send JSON as UTF-8"
    if isinstance(cause, RecursionError):
        return "request body JSON is nested too deeply to parse"
    return None


def install(app: FastAPI) -> None:
    @app.exception_handler(E.TTAError)
    async def _tta(request: Request, exc: E.TTAError):
        status = status_of(exc)
        headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
        if status >= 500:
            log.warning("%s: %s", exc.code, exc.message)
        return error_response(status, exc.code, exc.message, exc.details, headers)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError):
        errs = [{"loc": list(e["loc"]), "msg": e["msg"], "type": e["type"]} for e in exc.errors()]
        return error_response(422, "invalid_request", validation_message(errs), {"errors": errs})

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException):
        code = _HTTP_CODES.get(exc.status_code, f"http_{exc.status_code}")
        message = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
        if exc.status_code == 400 and exc.__cause__ is not None:
            message = _unparsable_body(exc.__cause__) or message
        if exc.status_code == 404 and message == "Not Found":
            message = f"no route {request.method} {request.url.path}"
        elif exc.status_code == 405:
            message = f"method {request.method} is not allowed on {request.url.path}"
        return error_response(exc.status_code, code, message, headers=getattr(exc, "headers", None))

    @app.exception_handler(redis.ConnectionError)
    @app.exception_handler(redis.TimeoutError)
    async def _redis_down(request: Request, exc: Exception):
        # the cause (with Redis's address) goes to the log; clients learn nothing of the backend
        log.warning("Redis unreachable on %s %s: %s", request.method, request.url.path, exc)
        return error_response(503, E.StoreUnavailable.code,
                              f"the job store (Redis) is unreachable ({type(exc).__name__}); try again shortly")

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception):
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return error_response(500, "internal_error", f"internal error ({type(exc).__name__}); see the server log")
