"""Code extraction: hand-made edge cases, and real outputs of the default model."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from sandbox.extract import extract_code, fenced_blocks

PROSE_AND_BLOCK = """To solve this problem, we iterate over all pairs and check the distance.

```python
from typing import List

def has_close_elements(numbers: List[float], threshold: float) -> bool:
    for i, a in enumerate(numbers):
        for j, b in enumerate(numbers):
            if i != j and abs(a - b) < threshold:
                return True
    return False
```

This solution runs in O(n^2) time."""

SOLUTION_THEN_TESTS = """```python
def add(a, b):
    # add two numbers, carefully handling every case the problem mentions
    return a + b
```

You can test it like this:

```python
print(add(1, 2))
```"""

UNTAGGED = """Here is the code:
```
def f(x):
    return x * 2
```"""

UNTERMINATED = """Sure! Here's the implementation:

```python
def fib(n):
    a, b = 0, 1
    for _ in range(n):
        a, b = b, a + b
    return a

def main():
    n = int(input())
    print(fib("""

OTHER_LANGUAGE = """```cpp
int main() { return 0; }
```"""

BARE_CODE = "def square(x):\n    return x * x\n"
PROSE_ONLY = "I think the answer is that we should use dynamic programming."


def test_prose_and_block():
    code = extract_code(PROSE_AND_BLOCK)
    assert code is not None and code.startswith("from typing import List") and "O(n^2)" not in code


def test_longest_python_block_wins():
    code = extract_code(SOLUTION_THEN_TESTS)
    assert code is not None and "def add" in code and "print(add" not in code


def test_untagged_fence():
    assert extract_code(UNTAGGED) == "def f(x):\n    return x * 2\n"


def test_unterminated_fence_is_used():
    blocks = fenced_blocks(UNTERMINATED)
    assert len(blocks) == 1 and not blocks[0].terminated
    code = extract_code(UNTERMINATED)
    assert code is not None and code.startswith("def fib(n):")


def test_terminated_block_preferred_over_unterminated():
    text = "```python\ndef ok():\n    return 1\n```\nAnd a variant:\n```python\ndef ok2(:\n"
    assert extract_code(text) == "def ok():\n    return 1\n"


def test_other_language_and_prose_are_not_code():
    assert extract_code(OTHER_LANGUAGE) is None
    assert extract_code(PROSE_ONLY) is None


def test_bare_code_fallback():
    assert extract_code(BARE_CODE) == BARE_CODE
    assert extract_code("1 + 1") is None  # parses, but is not a program


def test_py_tag_and_indented_fence():
    text = "  ```py\ndef g():\n    return 2\n  ```"
    assert extract_code(text) == "def g():\n    return 2\n"


# ---- real outputs of the default model ---------------------------------------------------
# fixtures/default_model_outputs.jsonl: outputs of Qwen2.5-Coder-0.5B-Instruct at T=1.0 drawn by
# fixtures/generate_default_model_outputs.py (llama.cpp engine, the solver's chat template);
# `expected` and `note` were written by hand after reading each `text`.

FIXTURE = Path(__file__).parent / "fixtures" / "default_model_outputs.jsonl"


def _real_outputs() -> list[dict[str, Any]]:
    return [json.loads(line) for line in FIXTURE.read_text(encoding="utf-8").splitlines() if line.strip()]


@pytest.mark.parametrize("row", _real_outputs(), ids=lambda row: row["id"])
def test_real_default_model_output(row: dict[str, Any]) -> None:
    assert extract_code(row["text"]) == row["expected"]


def test_indented_block_is_dedented():
    # the default model sometimes indents a whole block (match_parens#0 in the fixture)
    text = "```python\n    def g():\n        return 2\n\n    print(g())\n```"
    assert extract_code(text) == "def g():\n    return 2\n\nprint(g())\n"
    listed = "1. Code:\n   ```python\n   def g():\n       return 2\n   ```"
    assert extract_code(listed) == "def g():\n    return 2\n"
    # code that starts at column 0 is left exactly as written, whitespace-only lines included
    plain = "```python\ns = '''a\n    \nb'''\n```"
    assert extract_code(plain) == "s = '''a\n    \nb'''\n"
