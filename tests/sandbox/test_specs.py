"""Verifier spec validation: strict, with messages that say what is wrong."""

from __future__ import annotations

import pytest
from pydantic import TypeAdapter, ValidationError

from sandbox import PythonTestsSpec, RegexSpec, VerifierSpec
from sandbox.specs import parse_functional_args

SPEC = TypeAdapter(VerifierSpec)


def _error(data: dict) -> str:
    with pytest.raises(ValidationError) as info:
        SPEC.validate_python(data)
    return str(info.value)


def test_discriminated_union_picks_the_model():
    assert isinstance(SPEC.validate_python({"type": "regex", "pattern": "a+"}), RegexSpec)
    spec = SPEC.validate_python({"type": "python_tests", "format": "stdio", "cases": [{"input": "1", "output": "1"}]})
    assert isinstance(spec, PythonTestsSpec) and spec.time_limit_s == 4.0


def test_empty_assert_tests_rejected():
    assert "needs non-empty `tests`" in _error({"type": "python_tests", "format": "assert", "tests": "  ", "entry_point": "f"})


def test_assert_tests_must_parse():
    assert "not valid Python" in _error({"type": "python_tests", "format": "assert", "tests": "def check(:", "entry_point": "f"})


def test_missing_cases_rejected():
    assert "at least one entry in `cases`" in _error({"type": "python_tests", "format": "stdio"})


def test_functional_input_must_be_json():
    msg = _error({"type": "python_tests", "format": "functional", "fn_name": "f", "cases": [{"input": "[1, 2\n3", "output": "1"}]})
    assert "functional case 0" in msg and "not JSON" in msg


def test_functional_needs_fn_name_identifier():
    assert "needs `fn_name`" in _error({"type": "python_tests", "format": "functional", "cases": [{"input": [1], "output": 1}]})
    assert "not a Python identifier" in _error(
        {"type": "python_tests", "format": "functional", "fn_name": "a b", "cases": [{"input": [1], "output": 1}]}
    )


def test_invalid_regex_rejected_at_validation():
    assert "not a valid regular expression" in _error({"type": "regex", "pattern": "(unclosed"})


def test_unknown_fields_and_types_rejected():
    assert "Extra inputs are not permitted" in _error({"type": "exact", "answer": "x", "anwser": "y"})
    assert "does not match any of the expected tags" in _error({"type": "nope"})


def test_http_url_validated():
    assert "url" in _error({"type": "http", "url": "not a url"})


def test_functional_args_forms():
    assert parse_functional_args([[1, 2], 3]) == [[1, 2], 3]
    assert parse_functional_args('[1, 2]\n3\n"x"') == [[1, 2], 3, "x"]
