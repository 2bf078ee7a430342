"""The teacher's reprompt texts, and which sibling sdpo.demonstration shows."""

from __future__ import annotations

from service import prompts, templates


def test_the_best_partial_sibling_is_shown_only_to_attempts_it_beats():
    # scores 0, 3/7, 5/7, 5/7, and an attempt with no cases (format failure)
    assert prompts.best_partials([0, 3, 5, 5, 0], [7, 7, 7, 7, 0]) == [2, 2, None, None, 2]
    assert prompts.best_partials([0, 0], [7, 7]) == [None, None]  # nothing passed anything
    assert prompts.best_partials([], []) == []


def test_the_reprompt_shows_a_partial_sibling_before_the_attempt_s_own_feedback():
    plain = templates.reprompt("Q?", "Wrong Answer: x")
    assert plain == ("Q?\nThe following is feedback from your unsuccessful earlier attempt:\n\nWrong Answer: x\n"
                     "\n\nCorrectly solve the original question.")
    part = prompts.partial_of("Try this:\n```python\ndef f():\n    return 1\n```\nDone.", 3, 7)
    assert part == templates.Partial("def f():\n    return 1", 3, 7)
    shown = templates.reprompt("Q?", "Wrong Answer: x", partial=part)
    assert shown == ("Q?\nA partly correct attempt (it passed 3 of 7 tests):\n\n```python\ndef f():\n    return 1\n```\n"
                     "\nThe following is feedback from your unsuccessful earlier attempt:\n\nWrong Answer: x\n"
                     "\n\nCorrectly solve the original question.")
    # a passing sibling's solution replaces both, as in the reference
    assert templates.reprompt("Q?", "Wrong Answer: x", "S", part) == templates.reprompt("Q?", None, "S")
