"""Problem files (YAML or JSON) -> validated `ProblemFile`, with one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import yaml
from pydantic import ValidationError

from service.errors import InvalidProblem
from service.schemas import ProblemFile


def _where(loc: tuple) -> str:
    # Drop pydantic's union-branch tags (e.g. 'python_tests') only when they are not fields.
    return ".".join(str(p) for p in loc) or "(top level)"


def describe(err: ValidationError) -> str:
    """The first error as 'field.path: message' (the rest counted), for humans."""
    first = err.errors()[0]
    more = len(err.errors()) - 1
    msg = f"{_where(first['loc'])}: {first['msg']}"
    return msg + (f" (and {more} more error{'s' if more > 1 else ''})" if more else "")


def load_problem_file(path: Path) -> ProblemFile:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise InvalidProblem(f"{path}: cannot read: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise InvalidProblem(f"{path}: not UTF-8 text") from None
    try:
        data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        raise InvalidProblem(f"{path}: not valid {'JSON' if path.suffix == '.json' else 'YAML'}: {str(exc).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise InvalidProblem(f"{path}: expected a mapping with at least `question` and `verifier`")
    try:
        return ProblemFile.model_validate(data)
    except ValidationError as exc:
        raise InvalidProblem(f"{path}: {describe(exc)}") from None
