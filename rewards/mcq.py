"""FineBench's multiple-choice reward: the option letter of the reply, read by `reply_letter`, the one reader that
the reward and the evaluation (`eval.tasks`) share.

The model is asked for the letter of the right option; the reply may be a bare letter (`C`), a sentence
(`Answer: C`, `The best answer is (C) walk.`), the option's text (`walk`), or any of those inside `<answer>` tags:

    <think>The leftmost person lifts a cup to the mouth.</think> <answer>C</answer>

When the reply has a closed `<answer>` tag, the letter is read from the last one; otherwise from the whole reply.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from rewards.helpers import parse_mcq_letter
from rewards.registry import register
from rewards.videostar import extract_answer

if TYPE_CHECKING:
    from rollout.trajectory import Trajectory

LETTERS = ("A", "B", "C", "D")


def reply_letter(text: Any, options: Mapping[str, Any] | None = None) -> str:
    """The option letter of a reply ("" when blank): `rewards.helpers.parse_mcq_letter` (answer prefixes, a
    leading or lone letter, then the option texts of `options` {letter: text}) of the last `<answer>` content
    when there is one, else of the whole text.

    >>> reply_letter("<think>A man drinks.</think><answer>(B) drink</answer>"), reply_letter("Answer: C")
    ('B', 'C')
    >>> reply_letter("<answer>drink</answer>", {"A": "eat", "B": "drink"})
    'B'
    """
    answer = extract_answer(text)
    return parse_mcq_letter(answer if answer is not None else text, options)


@register("mcq")
def mcq(traj: Trajectory, record: dict) -> float | None:
    """1.0 when the reply's option letter (see `reply_letter`, with the record's `options` for the option-text
    fallback) is `record["answer"]`, else 0.0 (a blank reply scores 0.0). None when the record's `answer` is not
    one of A, B, C, D.

    Reads: `traj.final_text`, `record["answer"]` (a letter) and `record["options"]`, as in mcq records of
    common/schema.py.

    >>> from rollout.trajectory import Trajectory
    >>> t = Trajectory("m1", 0, [], [], [], [], final_text="The best answer is C.")
    >>> mcq(t, {"answer": "C"}), mcq(t, {"answer": "A"}), mcq(t, {"answer": "walk"})
    (1.0, 0.0, None)
    """
    answer = record.get("answer") if isinstance(record, dict) else None
    if not isinstance(answer, str) or answer.strip().upper() not in LETTERS:
        return None
    options = record.get("options") if isinstance(record.get("options"), Mapping) else None
    return 1.0 if reply_letter(getattr(traj, "final_text", None), options) == answer.strip().upper() else 0.0
