"""Chat messages -> token ids, with the model's own chat template (one renderer for all)."""

from __future__ import annotations

from typing import Any

from service import templates


def messages(question: str, system_prompt: str | None = None) -> list[dict[str, str]]:
    msgs = [{"role": "system", "content": system_prompt}] if system_prompt else []
    return msgs + [{"role": "user", "content": question}]


def render(tokenizer: Any, msgs: list[dict[str, str]]) -> list[int]:
    """Token ids of `msgs` followed by the assistant turn's opening, ready to generate."""
    text = tokenizer.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False)
    return list(tokenizer(text, add_special_tokens=False).input_ids)


def student_prompt(tokenizer: Any, problem: Any) -> list[int]:
    """The attempt prompt: the question (and system prompt) of a `schemas.Problem`."""
    return render(tokenizer, messages(problem.question, problem.system_prompt))


def teacher_prompt(tokenizer: Any, problem: Any, feedback: str | None, solution: str | None = None) -> list[int]:
    """The SDPO teacher's prompt for one failed attempt: the question reprompted with the
    verifier's feedback (or a passing sibling's solution), as every caller must build it."""
    return render(tokenizer, messages(templates.reprompt(problem.question, feedback, solution), problem.system_prompt))
