"""Every prompt text the solve loop builds, in one place, versioned.

The reprompt and multi-turn texts follow the SDPO reference configuration (docs/architecture.md §2).
`TEMPLATES_VERSION` is recorded in every job's result: change it whenever a text changes,
so that results produced under different prompts are never compared unknowingly.
"""

from __future__ import annotations

from typing import NamedTuple

TEMPLATES_VERSION = "sdpo-reference/1"

# Teacher (self-distillation) user turn.
REPROMPT = "{prompt}{solution}{feedback}\n\nCorrectly solve the original question."
REPROMPT_SOLUTION = "\nCorrect solution:\n\n{solution}\n"
REPROMPT_FEEDBACK = "\nThe following is feedback from your unsuccessful earlier attempt:\n\n{feedback}\n"
# sdpo.demonstration "best_partial": a sibling that passed some tests, in the solution's place.
# A text only that option renders, so the version stays: the job records its options.
REPROMPT_PARTIAL = "\nA partly correct attempt (it passed {passed} of {total} tests):\n\n```python\n{code}\n```\n"

# Multi-turn baseline, "feedback_only": the question plus all feedback so far.
MULTI_TURN_FEEDBACK_ONLY = (
    "{question}\n\nThe following is feedback from your unsuccessful earlier attempt:\n\n"
    "{all_feedback}\n\nCorrectly solve the original question."
)
MULTI_TURN_FEEDBACK_SEPARATOR = "\n\n"
# Multi-turn baseline, "conversation": the verifier's feedback as the next user turn.
MULTI_TURN_NEXT_TURN = "{feedback}\n\nCorrectly solve the original question."


class Partial(NamedTuple):
    """A sibling attempt that passed some but not all test cases (sdpo.demonstration)."""

    code: str
    passed: int
    total: int


def reprompt(question: str, feedback: str | None, solution: str | None = None, partial: Partial | None = None) -> str:
    """The teacher's user turn. A passing sibling's solution, when there is one, replaces
    the environment feedback (the reference uses feedback only when no solution exists).
    A partly correct sibling (only without a solution) is shown before this attempt's feedback."""
    if solution:
        sol = REPROMPT_SOLUTION.format(solution=solution)
    elif partial:
        sol = REPROMPT_PARTIAL.format(code=partial.code.strip("\n"), passed=partial.passed, total=partial.total)
    else:
        sol = ""
    fb = REPROMPT_FEEDBACK.format(feedback=feedback) if feedback and not solution else ""
    return REPROMPT.format(prompt=question, solution=sol, feedback=fb)


def multi_turn_feedback_only(question: str, feedback_so_far: list[str]) -> str:
    if not feedback_so_far:
        return question
    return MULTI_TURN_FEEDBACK_ONLY.format(
        question=question, all_feedback=MULTI_TURN_FEEDBACK_SEPARATOR.join(feedback_so_far)
    )


def all_templates() -> dict[str, str]:
    """The raw texts, for the job trace."""
    return {
        "version": TEMPLATES_VERSION,
        "reprompt": REPROMPT,
        "reprompt_solution": REPROMPT_SOLUTION,
        "reprompt_feedback": REPROMPT_FEEDBACK,
        "reprompt_partial": REPROMPT_PARTIAL,
        "multi_turn_feedback_only": MULTI_TURN_FEEDBACK_ONLY,
        "multi_turn_next_turn": MULTI_TURN_NEXT_TURN,
    }
