"""The test driver inside the sandbox: how it encodes return values and compiles the candidate."""

from __future__ import annotations

import json

from sandbox import PythonTestsSpec, Runner, verify
from tests.sandbox.conftest import FAST


def test_driver_encodes_return_values_like_json():
    # the driver encodes with json's C encoder directly (no `import json` in the sandbox)
    spec = PythonTestsSpec(
        type="python_tests",
        format="functional",
        fn_name="f",
        cases=[
            {"input": [0], "output": json.dumps({"a": [1, 2.5, None, True, "é\n\"q\""], "b": [1, 2], "1": -0.0})},
            {"input": [1], "output": json.dumps("plain")},
            {"input": [2], "output": "[1e+300, 3]"},
        ],
        run_all_cases=True,
    )
    code = (
        "```python\n"
        "def f(i):\n"
        "    if i == 0:\n"
        "        return {'a': [1, 2.5, None, True, 'é\\n\"q\"'], 'b': (1, 2), 1: -0.0}\n"
        "    if i == 1:\n"
        "        return 'plain'\n"
        "    return [1e300, 3]\n"
        "```"
    )
    result = verify(spec, code, runner=Runner(FAST, warm_pool=0))
    assert result.verdict == "pass", result.feedback
    circular = "```python\ndef f(i):\n    x = []\n    x.append(x)\n    return x\n```"
    failed = verify(spec, circular, runner=Runner(FAST, warm_pool=0))
    assert failed.verdict == "fail" and failed.kind == "wrong_answer", failed


def test_candidate_code_is_compiled_as_plain_python():
    # found on a real output of the default model (fixture HumanEval/0#0): `import typing`
    # then `List[float]` must fail as it does under plain python, not pass because the
    # host's `from __future__ import annotations` leaked into the driver's compile()
    spec = PythonTestsSpec(
        type="python_tests", format="assert", tests="def check(c):\n    assert c() == 1\n", entry_point="f"
    )
    code = "```python\nimport typing\n\ndef f(x: List[int] = None) -> int:\n    return 1\n```"
    result = verify(spec, code, runner=Runner(FAST, warm_pool=0))
    assert result.kind == "runtime_error" and "NameError" in result.feedback, result
