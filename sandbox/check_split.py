"""HumanEval-style `check(candidate)` split into cases, one per assert statement.

Shared by the host (harness.py counts the cases of a spec without running anything) and the
in-sandbox driver, which runs the split check: harness.driver_source() puts this file's
source before _driver.py's. So it uses only `_ast` and compile(), which the interpreter has
already loaded (the `ast` module would import enum and re, about 10 ms per attempt).
"""

import _ast


def _located(node, at):
    for attr in ("lineno", "col_offset", "end_lineno", "end_col_offset"):
        setattr(node, attr, getattr(at, attr))
    return node


def _has_assert(stmt):
    # an assert anywhere in the statement, not inside a definition (defining runs nothing)
    skip = (_ast.FunctionDef, _ast.AsyncFunctionDef, _ast.ClassDef, _ast.Lambda)
    stack = [stmt]
    while stack:
        node = stack.pop()
        if isinstance(node, _ast.Assert):
            return True
        if isinstance(node, skip):
            continue
        for name in node._fields:
            value = getattr(node, name, None)
            if isinstance(value, list):
                stack.extend(v for v in value if isinstance(v, _ast.AST))
            elif isinstance(value, _ast.AST):
                stack.append(value)
    return False


def split_check(tests, filename="tests.py"):
    """(`tests` compiled with each case of `check` wrapped, number of cases), or (None, 1).

    A case is a top-level statement of check's body that holds an assert (`assert True`
    excepted: HumanEval's debugging line passes whatever the code does), so a HumanEval
    check with 7 asserts is 7 cases and a failed attempt can score 3/7. Each case becomes
        __tta_at__(k)
        try: <case>
        except __tta_continue__ as e: __tta_failed__(k, e)
        else: __tta_ok__(k)
    with the case's own source positions, so tracebacks and the failing line read as
    before. Anything else (no module-level check, no case) runs as one case, as HumanEval's
    own harness does."""
    try:
        module = compile(tests, filename, "exec", _ast.PyCF_ONLY_AST, dont_inherit=True)
    except BaseException:  # noqa: BLE001 - the spec validated it; whatever happens, run it whole
        return None, 1
    checks = [s for s in module.body if isinstance(s, _ast.FunctionDef) and s.name == "check"]
    if not checks:
        return None, 1
    check, body, k = checks[-1], [], 0
    for stmt in check.body:
        trivial = isinstance(stmt, _ast.Assert) and isinstance(stmt.test, _ast.Constant) and stmt.test.value
        if trivial or isinstance(stmt, (_ast.FunctionDef, _ast.AsyncFunctionDef, _ast.ClassDef)) or not _has_assert(stmt):
            body.append(stmt)
            continue

        def call(name, *args, at=stmt):
            return _located(_ast.Expr(value=_located(_ast.Call(
                func=_located(_ast.Name(id=name, ctx=_ast.Load()), at), args=list(args), keywords=[]), at)), at)

        index = _located(_ast.Constant(value=k), stmt)
        caught = _located(_ast.Name(id="__tta_e__", ctx=_ast.Load()), stmt)
        handler = _located(_ast.ExceptHandler(
            type=_located(_ast.Name(id="__tta_continue__", ctx=_ast.Load()), stmt), name="__tta_e__",
            body=[call("__tta_failed__", index, caught)]), stmt)
        body.append(call("__tta_at__", index))
        body.append(_located(_ast.Try(body=[stmt], handlers=[handler], orelse=[call("__tta_ok__", index)], finalbody=[]), stmt))
        k += 1
    if k == 0:
        return None, 1
    check.body = body
    try:
        return compile(module, filename, "exec", dont_inherit=True), k
    except BaseException:  # noqa: BLE001
        return None, 1


def case_count(tests: str) -> int:
    """How many cases `split_check` makes of `tests`."""
    return split_check(tests)[1]
