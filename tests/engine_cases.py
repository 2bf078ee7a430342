"""Requests shared by the engine tests (llama.cpp in .venv, vLLM in .venv-vllm)."""

from __future__ import annotations

ADD_QUESTION = "Write a Python function `add(a, b)` returning a + b, in a ```python block."


def unsolvable_sdpo_request(question: str = ADD_QUESTION):
    """Two rounds of two short attempts against a test nobody can pass, so round 1 trains."""
    from service.schemas import SolveRequest

    return SolveRequest.model_validate({
        "problem": {"question": question},
        "verifier": {"type": "python_tests", "format": "assert", "entry_point": "add",
                     "tests": "def check(candidate):\n    assert candidate(2, 3) == 5\n    assert candidate(2, 3) == 6\n"},
        "strategy": "sdpo",
        "budget": {"max_attempts": 4},
        "sampling": {"n": 2, "max_new_tokens": 16},
        "sdpo": {"steps": 1, "lora": {"rank": 4, "alpha": 8, "targets": ["q_proj", "v_proj"]}},
        "seed": 7,
    })
