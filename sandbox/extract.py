"""Finds the code in a model's answer.

Rules, in order. Before they apply, a fenced block whose first line is indented (the
default model sometimes indents a whole block; a fence in a list item indents it too)
is dedented: Python cannot start indented, so this never changes code that would have
run as written.
 1. Fenced blocks tagged python/python3/py (```python ... ```): the LONGEST one wins
    (as in the SDPO reference: models often put a short usage example or test in a
    second block, and the solution is usually the longest).
 2. Otherwise untagged fences (``` ... ```), longest first, if the block parses as Python.
 3. An unterminated fence (the generation was cut off mid-block) counts as a block
    running to the end of the text; it is used only if no terminated block exists.
 4. Otherwise the whole text, only if it parses as Python AND defines a function or
    class, or reads input (bare prose rarely parses; a bare expression that does is
    not a program worth running).
Returns None when nothing qualifies (the verifier then reports "Incorrect Format").

Not guaranteed: that the chosen block is the one the model "meant"; blocks tagged with
another language (```cpp) are never used.
"""

from __future__ import annotations

import ast
import re
import textwrap
from dataclasses import dataclass

_PY_TAGS = {"python", "python3", "py", "py3"}
# A fence line: optional indentation, 3+ backticks, an optional info string.
_FENCE = re.compile(r"^[ \t]*(`{3,})[ \t]*([\w+#.-]*)[^\n]*$", re.MULTILINE)


@dataclass(frozen=True)
class CodeBlock:
    """A fenced block: `lang` is the lower-cased info string ("" when untagged)."""

    lang: str
    code: str
    terminated: bool


def fenced_blocks(text: str) -> list[CodeBlock]:
    """All fenced blocks in order of appearance; the last may be unterminated."""
    blocks: list[CodeBlock] = []
    pos = 0
    while True:
        opening = _FENCE.search(text, pos)
        if opening is None:
            return blocks
        ticks, lang = opening.group(1), opening.group(2).lower()
        body_start = opening.end() + 1
        closing = re.compile(rf"^[ \t]*{ticks}`*[ \t]*$", re.MULTILINE).search(text, body_start)
        if closing is None:
            blocks.append(CodeBlock(lang, text[body_start:], terminated=False))
            return blocks
        blocks.append(CodeBlock(lang, text[body_start : closing.start()], terminated=True))
        pos = closing.end()


def _dedented(code: str) -> str:
    first = next((line for line in code.splitlines() if line.strip()), "")
    return textwrap.dedent(code) if first[:1] in (" ", "\t") else code


def _parses(code: str) -> bool:
    try:
        ast.parse(code)
    except (SyntaxError, ValueError):
        return False
    return True


def _looks_like_program(code: str) -> bool:
    try:
        tree = ast.parse(code)
    except (SyntaxError, ValueError):
        return False
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            return True
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "input":
            return True
    return False


def extract_code(text: str) -> str | None:
    """The code to run from a model's answer, or None if there is none (see module doc)."""
    blocks = [CodeBlock(b.lang, _dedented(b.code), b.terminated) for b in fenced_blocks(text)]
    done = [b for b in blocks if b.terminated and b.code.strip()]
    tagged = [b for b in done if b.lang in _PY_TAGS]
    if tagged:
        return max(tagged, key=lambda b: len(b.code)).code
    plain = [b for b in done if b.lang == "" and _parses(b.code)]
    if plain:
        return max(plain, key=lambda b: len(b.code)).code
    if blocks and not blocks[-1].terminated and blocks[-1].lang in _PY_TAGS | {""} and blocks[-1].code.strip():
        return blocks[-1].code  # cut off mid-block: run what there is; it may still work
    if not blocks and _looks_like_program(text):
        return text
    return None
