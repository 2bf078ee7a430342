"""The in-sandbox test driver (trusted code, runs untrusted code in its own process).

Started inside the sandbox by a one-line bootstrap (`harness.BOOTSTRAP`) that reads
`marshal.dumps((this module compiled, {"JOB": job}))` from stdin and executes it, so
the driver is compiled once on the host, not once per attempt. Only the standard
library is used. Records go to the channel fd (the last argv entry) as JSON lines
tagged with the run's nonce; see harness.py for the protocol and for what it does
not guarantee. For stdio and functional tests the expected outputs are NOT sent
here: this driver only reports what the code produced and the host compares.

Start-up cost is the budget of every verification, so the success path imports only
modules the interpreter has already loaded or that are C (`posix`, `_json`, `_signal`):
`json`, `signal`, `traceback` and `linecache` pull in `re`, `enum` and `tokenize`, about
10 ms of CPU per attempt, and are imported only when a failure has to be described.
After the last record the process leaves with `posix._exit`: the verdict is complete,
and interpreter finalisation (a full GC, module teardown, joining threads the code
left running) would only add CPU time and latency to every attempt.
"""

import _json
import _signal
import builtins
import io
import posix
import sys
import time

SOLUTION_FILE = "solution.py"
TESTS_FILE = "tests.py"
OUTPUT_CAP = 2 * 1024 * 1024  # characters of one case's output reported back
TRACE_LINES = 12
_SOURCES = {}  # filename -> source, handed to linecache only when a traceback is formatted


class _CaseTimeout(BaseException):
    """Raised by the per-case timer; BaseException so `except Exception` in the code under test misses it."""


def _on_alarm(_signum, _frame):
    raise _CaseTimeout()


def _dumps(value):
    """`json.dumps(value, default=repr)`, through the C encoder json itself uses."""
    # a fresh markers dict per call: the circular-reference check, as in json.dumps
    encode = _json.make_encoder({}, repr, _json.encode_basestring_ascii, None, ": ", ", ", False, False, True)
    if isinstance(value, str):
        return _json.encode_basestring_ascii(value)
    return "".join(encode(value, 0))


def _register_sources():
    # lets tracebacks show the offending source lines of the candidate and the tests
    import linecache

    for filename, source in _SOURCES.items():
        linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)


def _trace_tail(exc):
    import traceback

    _register_sources()
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if f.filename in (SOLUTION_FILE, TESTS_FILE)]
    lines = ["Traceback (most recent call last):\n"] if frames else []
    lines += traceback.format_list(frames[-4:])
    lines += traceback.format_exception_only(type(exc), exc)
    text = "".join(lines)
    # drop the ^^^~~~ marker lines: noise to a model, and they eat the length budget
    kept = [ln for ln in text.splitlines() if ln.strip() and not set(ln.strip()) <= {"^", "~"}]
    return "\n".join(kept[-TRACE_LINES:])


def _test_line(exc):
    """The line of the test code that was executing when `exc` was raised, if any."""
    import linecache
    import traceback

    _register_sources()
    found = None
    for frame in traceback.extract_tb(exc.__traceback__):
        if frame.filename == TESTS_FILE:
            found = frame
    if found is None:
        return None
    # a statement may span lines (HumanEval asserts often do): show all of it, on one line
    end = getattr(found, "end_lineno", None) or found.lineno
    source = linecache.getlines(TESTS_FILE)[found.lineno - 1 : end]
    return " ".join(" ".join(source).split()) or (found.line or "").strip()


def _quiet_test_line(exc):
    # after a memory or time limit the lazy imports behind _test_line may themselves fail;
    # the verdict must still be reported, so the line is optional
    try:
        return _test_line(exc)
    except BaseException:  # noqa: BLE001
        return None


def _main():
    channel_fd = int(sys.argv[-1])
    posix.set_inheritable(channel_fd, False)  # children of the code under test do not inherit it
    job = JOB  # noqa: F821 - put into this module's globals by the bootstrap
    nonce = job.pop("nonce")
    dumps, write, monotonic = _dumps, posix.write, time.monotonic
    real_stdout, real_stderr, real_stdin = sys.stdout, sys.stderr, sys.stdin

    def emit(record):
        record["n"] = nonce
        data = (dumps(record) + "\n").encode("utf-8")
        while data:
            data = data[write(channel_fd, data) :]

    def timed(limit, fn):
        _signal.signal(_signal.SIGALRM, _on_alarm)
        _signal.setitimer(_signal.ITIMER_REAL, max(limit, 0.001))
        try:
            return fn()
        finally:
            _signal.setitimer(_signal.ITIMER_REAL, 0)

    def failure(i, exc, started, **extra):
        elapsed = monotonic() - started
        if isinstance(exc, _CaseTimeout):
            return {"t": "case", "i": i, "status": "timeout", "line": _quiet_test_line(exc), "elapsed": elapsed, **extra}
        if isinstance(exc, MemoryError):
            return {"t": "case", "i": i, "status": "memory", "line": _quiet_test_line(exc), "elapsed": elapsed, **extra}
        import traceback

        _register_sources()
        frames = [f for f in traceback.extract_tb(exc.__traceback__) if f.filename in (SOLUTION_FILE, TESTS_FILE)]
        in_tests = bool(frames) and frames[-1].filename == TESTS_FILE
        status = "assert" if isinstance(exc, AssertionError) and in_tests else "error"
        return {
            "t": "case",
            "i": i,
            "status": status,
            "error": _trace_tail(exc),
            "exc_type": type(exc).__name__,
            "line": _test_line(exc),
            "elapsed": elapsed,
            **extra,
        }

    fmt = job["format"]
    per_case = float(job["time_limit_s"])
    deadline = monotonic() + float(job["total_time_s"])
    run_all = bool(job["run_all"])
    code = job["code"]
    emit({"t": "start"})
    if fmt == "assert":
        # defined by check_split.py, which harness.driver_source() puts before this file
        split_tests, total_cases = split_check(job["tests"], TESTS_FILE)  # noqa: F821
    try:
        solution = compile(code, SOLUTION_FILE, "exec", dont_inherit=True)
    except (SyntaxError, ValueError) as exc:
        import traceback

        emit({"t": "compile", "error": "".join(traceback.format_exception_only(type(exc), exc)).strip()})
        emit({"t": "done"})
        return
    _SOURCES[SOLUTION_FILE] = code

    if fmt == "stdio":
        for i, text in enumerate(job["inputs"]):
            if monotonic() >= deadline:
                emit({"t": "case", "i": i, "status": "timeout", "elapsed": 0.0, "total": True})
                break
            out = io.BytesIO()
            sys.stdin = io.TextIOWrapper(io.BytesIO(text.encode("utf-8")), encoding="utf-8")
            out_wrapper = io.TextIOWrapper(out, encoding="utf-8", write_through=True)
            sys.stdout = out_wrapper
            started = monotonic()
            record = None
            try:
                timed(min(per_case, deadline - started), lambda: exec(solution, {"__name__": "__main__", "__builtins__": builtins}))
            except SystemExit as exc:
                if exc.code not in (None, 0):
                    record = failure(i, exc, started)
            except BaseException as exc:  # noqa: BLE001 - every failure of the code is a result
                record = failure(i, exc, started)
            finally:
                try:
                    out_wrapper.flush()
                    out_wrapper.detach()  # else closing the wrapper would close `out`
                except BaseException:  # noqa: BLE001
                    pass
                sys.stdin, sys.stdout, sys.stderr = real_stdin, real_stdout, real_stderr
            produced = out.getvalue().decode("utf-8", errors="replace") if not out.closed else ""
            if record is None:
                record = {"t": "case", "i": i, "status": "ok", "elapsed": monotonic() - started}
            record["output"] = produced[:OUTPUT_CAP]
            record["output_truncated"] = len(produced) > OUTPUT_CAP
            emit(record)
            if record["status"] != "ok" and not run_all:
                break
    else:
        namespace = {"__name__": "solution", "__builtins__": builtins}
        started = monotonic()
        try:
            timed(min(per_case, deadline - started), lambda: exec(solution, namespace))
        except BaseException as exc:  # noqa: BLE001
            sys.stdin, sys.stdout, sys.stderr = real_stdin, real_stdout, real_stderr
            record = failure(0, exc, started)
            record["t"] = "load"
            emit(record)
            emit({"t": "done"})
            return
        sys.stdin, sys.stdout, sys.stderr = real_stdin, real_stdout, real_stderr
        if fmt == "functional":
            fn_name = job["fn_name"]
            for i, args in enumerate(job["inputs"]):
                if monotonic() >= deadline:
                    emit({"t": "case", "i": i, "status": "timeout", "elapsed": 0.0, "total": True})
                    break
                started = monotonic()

                def call(args=args):
                    cls = namespace.get("Solution")
                    if isinstance(cls, type):
                        target = getattr(cls(), fn_name)
                    elif fn_name in namespace:
                        target = namespace[fn_name]
                    else:
                        raise NameError(f"function {fn_name!r} is not defined")
                    return target(*args)

                try:
                    value = timed(min(per_case, deadline - started), call)
                    try:
                        output = dumps(value)
                        serialisable = True
                    except (TypeError, ValueError):
                        output, serialisable = repr(value), False
                    record = {
                        "t": "case",
                        "i": i,
                        "status": "ok",
                        "output": output[:OUTPUT_CAP],
                        "json": serialisable and len(output) <= OUTPUT_CAP,
                        "elapsed": monotonic() - started,
                    }
                except BaseException as exc:  # noqa: BLE001
                    record = failure(i, exc, started)
                finally:
                    sys.stdin, sys.stdout, sys.stderr = real_stdin, real_stdout, real_stderr
                emit(record)
                if record["status"] != "ok" and not run_all:
                    break
        else:  # assert: the test code defines check(candidate); HumanEval runs both in one namespace
            # the time limit is the whole check's, as before the cases were split
            tests = job["tests"]
            _SOURCES[TESTS_FILE] = tests
            started = monotonic()
            at = [0, started]  # the case running (or next to run) and when it started

            def case_at(k):
                at[0], at[1] = k, monotonic()

            def case_ok(k):
                sys.stdin, sys.stdout, sys.stderr = real_stdin, real_stdout, real_stderr
                emit({"t": "case", "i": k, "status": "ok", "elapsed": monotonic() - at[1]})
                at[0] = k + 1

            def case_failed(k, exc):
                sys.stdin, sys.stdout, sys.stderr = real_stdin, real_stdout, real_stderr
                emit(failure(k, exc, at[1]))
                at[0] = k + 1

            # an AssertionError (a wrong answer, or the code's own assert) moves on to the next
            # case; other errors end the run unless run_all
            namespace.update(__tta_at__=case_at, __tta_ok__=case_ok, __tta_failed__=case_failed,
                             __tta_continue__=Exception if run_all else AssertionError)

            def check():
                exec(split_tests or compile(tests, TESTS_FILE, "exec", dont_inherit=True), namespace)
                entry = job["entry_point"]
                if entry not in namespace:
                    raise NameError(f"function {entry!r} is not defined")
                namespace["check"](namespace[entry])

            record = None
            try:
                timed(min(per_case, deadline - started), check)
                if split_tests is None:
                    record = {"t": "case", "i": 0, "status": "ok", "elapsed": monotonic() - started}
            except BaseException as exc:  # noqa: BLE001
                # outside a case's own handler (a timeout, a runtime error, a failing line
                # between cases): the case running, or the last one if all had run
                record = failure(min(at[0], total_cases - 1), exc, at[1])
            finally:
                sys.stdin, sys.stdout, sys.stderr = real_stdin, real_stdout, real_stderr
            if record is not None:
                emit(record)
    emit({"t": "done"})


def _finish():
    _main()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except BaseException:  # noqa: BLE001 - the code may have closed or replaced them
            pass
    posix._exit(0)


_finish()
