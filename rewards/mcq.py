"""FineBench's multiple-choice reward: the option letter of the reply, read as FineBench's evaluator reads it.

The model is asked for the letter of the right option; the reply may be a bare letter (`C`), a sentence
(`The best answer is C.`), or the letter inside `<answer>` tags (`<think>...</think><answer>C</answer>`):

    <think>The leftmost person lifts a cup to the mouth.</think> <answer>C</answer>

When the reply has a closed `<answer>` tag, the letter is read from the last one; otherwise from the whole reply.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from rewards.helpers import parse_mcq_letter
from rewards.registry import register
from rewards.videostar import extract_answer

if TYPE_CHECKING:
    from rollout.trajectory import Trajectory

LETTERS = ("A", "B", "C", "D")


def reply_letter(text: Any) -> str:
    """The option letter of a reply ("" when blank): `parse_mcq_letter` of the last `<answer>` content when
    there is one, else of the whole text.

    >>> reply_letter("<think>A man drinks.</think><answer>(B) drink</answer>"), reply_letter("C")
    ('B', 'C')
    """
    answer = extract_answer(text)
    return parse_mcq_letter(answer if answer is not None else text)


@register("mcq")
def mcq(traj: Trajectory, record: dict) -> float | None:
    """1.0 when the reply's option letter (see `reply_letter`) is `record["answer"]`, else 0.0 (a blank reply,
    one with no letter A-D, scores 0.0). None when the record's `answer` is not one of A, B, C, D.

    Reads: `traj.final_text` and `record["answer"]` (a letter, as in mcq records of common/schema.py).

    >>> from rollout.trajectory import Trajectory
    >>> t = Trajectory("m1", 0, [], [], [], [], final_text="The best answer is C.")
    >>> mcq(t, {"answer": "C"}), mcq(t, {"answer": "A"}), mcq(t, {"answer": "walk"})
    (1.0, 0.0, None)
    """
    answer = record.get("answer") if isinstance(record, dict) else None
    if not isinstance(answer, str) or answer.strip().upper() not in LETTERS:
        return None
    return 1.0 if reply_letter(getattr(traj, "final_text", None)) == answer.strip().upper() else 0.0
