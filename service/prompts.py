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


def teacher_prompt(tokenizer: Any, problem: Any, feedback: str | None, solution: str | None = None,
                   partial: templates.Partial | None = None) -> list[int]:
    """The SDPO teacher's prompt for one failed attempt: the question reprompted with the
    verifier's feedback (or a passing sibling's solution, or a partly correct one), as every
    caller must build it."""
    text = templates.reprompt(problem.question, feedback, solution, partial)
    return render(tokenizer, messages(text, problem.system_prompt))


def best_partials(passed: list[int], total: list[int]) -> list[int | None]:
    """sdpo.demonstration "best_partial": for each attempt of a round, the sibling to show its
    teacher, by index: the one that passed the most test cases, if it passed any and more
    than this attempt did (the first of equals). None where no sibling is better."""
    scores = [p / t if t else 0.0 for p, t in zip(passed, total, strict=True)]
    if not scores:
        return []
    best = max(range(len(scores)), key=lambda j: (scores[j], -j))
    return [best if scores[best] > max(s, 0.0) else None for s in scores]


def partial_of(text: str, passed: int, total: int) -> templates.Partial:
    """An attempt as its siblings' demonstration: the code the verifier ran, and its score."""
    from sandbox.extract import extract_code

    return templates.Partial(code=(extract_code(text) or text).strip("\n"), passed=passed, total=total)


def round_signals(opts: Any, texts: list[str], passed: list[int], total: list[int]
                  ) -> tuple[list[templates.Partial | None], list[float]]:
    """For the failed attempts of one round, what partial credit gives each: the sibling its
    teacher is shown (`opts.demonstration`) and its group-relative advantage (`opts.grpo_weight`).
    The one place the solver and the sweep choose them."""
    from adapters.sdpo import group_advantages

    shown: list[int | None] = [None] * len(texts)
    if opts.demonstration == "best_partial":  # siblings of the same round, as the paper's solutions are
        shown = best_partials(passed, total)
    partials = [None if j is None else partial_of(texts[j], passed[j], total[j]) for j in shown]
    advantages = [0.0] * len(texts)
    if opts.grpo_weight:
        advantages = group_advantages([p / max(t, 1) for p, t in zip(passed, total, strict=True)])
    return partials, advantages
