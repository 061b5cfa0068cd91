"""Video-STAR's rule-based rewards: answer accuracy, think-then-answer format, and tool usage.

The model's last assistant turn (`traj.final_text`) is expected to read

    <think> ... reasoning ... </think> <answer> action label </answer>

The paper's fourth component, the ranked sub-motion reward, lives in rewards/submotion.py. All parsing here is
linear-time string searching (no backtracking regex), never raises on any text, and returns values in [0, 1] (or
None when the record has no answer to compare with).
"""

from __future__ import annotations

import re
import unicodedata
from typing import TYPE_CHECKING, Any

from rewards.registry import register

if TYPE_CHECKING:
    from rollout.trajectory import Trajectory

ANSWER_OPEN, ANSWER_CLOSE = "<answer>", "</answer>"
THINK_OPEN, THINK_CLOSE = "<think>", "</think>"
_NON_WORD = re.compile(r"[\W_]+")  # punctuation, symbols, whitespace and underscores; linear, no backtracking


def extract_answer(text: Any) -> str | None:
    """The stripped text inside the LAST `<answer>...</answer>` of `text`, or None when there is none.

    "Last" means the last opening tag and the first closing tag after it, so with repeated answers the last wins
    and with nested tags the innermost last one wins. An unclosed last `<answer>` means no answer (the reply was
    cut off), even if an earlier answer was closed. Tags are matched exactly (lower case, no attributes).

    >>> extract_answer("<think>hm</think><answer> Brush hair </answer>")
    'Brush hair'
    >>> extract_answer("<answer>run</answer> no, <answer>walk</answer>")
    'walk'
    >>> extract_answer("<answer>run</answer> <answer>walk") is None
    True
    """
    if not isinstance(text, str):
        return None
    start = text.rfind(ANSWER_OPEN)
    if start < 0:
        return None
    start += len(ANSWER_OPEN)
    end = text.find(ANSWER_CLOSE, start)
    return None if end < 0 else text[start:end].strip()


def normalize_label(text: Any) -> str:
    """A label in canonical form: Unicode NFKC, case-folded, every run of punctuation, symbols, underscores and
    whitespace replaced by one space, stripped.

    >>> normalize_label("  Playing_Guitar! ")
    'playing guitar'
    >>> normalize_label("push-ups (in   gym)")
    'push ups in gym'
    """
    text = unicodedata.normalize("NFKC", text if isinstance(text, str) else str(text)).casefold()
    return _NON_WORD.sub(" ", text).strip()


def labels_match(predicted: Any, label: Any) -> bool:
    """Whether two labels are the same after `normalize_label`, ignoring where the spaces fall, so that
    "push-ups", "Push ups", "pushups" and "PushUps" all match (UCF-101 writes labels in CamelCase). An empty
    prediction matches nothing.

    >>> labels_match("Apply Eye-Makeup.", "ApplyEyeMakeup")
    True
    >>> labels_match("run", "running")
    False
    """
    pred = normalize_label(predicted).replace(" ", "")
    return bool(pred) and pred == normalize_label(label).replace(" ", "")


def _record_answer(record: Any) -> str | None:
    answer = record.get("answer") if isinstance(record, dict) else None
    return answer if isinstance(answer, str) and answer.strip() else None


@register("accuracy")
def accuracy(traj: Trajectory, record: dict, **_: Any) -> float | None:
    """1.0 when the last `<answer>...</answer>` of `traj.final_text` matches `record["answer"]`, else 0.0.

    Reads: `traj.final_text` (see `extract_answer`) and `record["answer"]`; both sides go through
    `labels_match` (case, whitespace, underscores and punctuation do not matter). No answer tag, or an unclosed
    last one, scores 0.0. None when the record has no non-empty string `answer`.

    >>> from rollout.trajectory import Trajectory
    >>> t = Trajectory("v1", 0, [], [], [], [], final_text="<think>...</think><answer>brush_hair</answer>")
    >>> accuracy(t, {"answer": "Brush hair"}), accuracy(t, {"answer": "climb stairs"}), accuracy(t, {})
    (1.0, 0.0, None)
    """
    answer = _record_answer(record)
    if answer is None:
        return None
    predicted = extract_answer(getattr(traj, "final_text", None))
    return 1.0 if predicted is not None and labels_match(predicted, answer) else 0.0


def is_think_then_answer(text: Any) -> bool:
    """Whether `text` is exactly `<think>...</think>` then `<answer>...</answer>`: whitespace is allowed before,
    between and after; nothing else is; each of the four tags occurs exactly once; the contents may be empty.
    (Equivalent to a full match of `\\s*<think>.*</think>\\s*<answer>.*</answer>\\s*` with DOTALL and each tag
    once, done with counts and finds so it stays linear on adversarial text.)

    >>> is_think_then_answer(" <think>legs bend</think>\\n<answer>squat</answer>\\n")
    True
    >>> is_think_then_answer("<think>a</think> so: <answer>squat</answer>")
    False
    """
    if not isinstance(text, str):
        return False
    s = text.strip()
    if not (s.startswith(THINK_OPEN) and s.endswith(ANSWER_CLOSE)):
        return False
    if any(s.count(tag) != 1 for tag in (THINK_OPEN, THINK_CLOSE, ANSWER_OPEN, ANSWER_CLOSE)):
        return False
    think_end, answer_start = s.find(THINK_CLOSE), s.find(ANSWER_OPEN)
    return think_end < answer_start and not s[think_end + len(THINK_CLOSE) : answer_start].strip()


@register("format")
def format_reward(traj: Trajectory, record: dict, **_: Any) -> float:
    """1.0 when `traj.final_text` is a full think-then-answer reply (see `is_think_then_answer`), else 0.0.

    Reads: `traj.final_text` only, e.g. `<think>reasoning</think> <answer>label</answer>`.

    >>> from rollout.trajectory import Trajectory
    >>> good = Trajectory("v1", 0, [], [], [], [], final_text="<think>x</think> <answer>run</answer>")
    >>> bad = Trajectory("v1", 1, [], [], [], [], final_text="<answer>run</answer>")
    >>> format_reward(good, {}), format_reward(bad, {})
    (1.0, 0.0)
    """
    return 1.0 if is_think_then_answer(getattr(traj, "final_text", None)) else 0.0


@register("tool_usage")
def tool_usage(traj: Trajectory, record: dict, **_: Any) -> float | None:
    """1.0 when the answer is right (`accuracy` is 1.0) and at least one tool call succeeded, else 0.0.

    Reads: what `accuracy` reads, and `traj.tool_calls` (a call counts when its `ok` is True: well-formed, known
    tool, valid arguments, no failure). None when `accuracy` is None. The condition on the answer is built in
    (as in Video-STAR), so no gate is needed; `when: accuracy` in a recipe says the same thing explicitly.

    >>> from rollout.trajectory import ToolCall, Trajectory, Turn
    >>> call = ToolCall("pose_estimation", {"frames": [0]}, ok=True, response="17 keypoints")
    >>> t = Trajectory("v1", 0, [], [], [], [], turns=[Turn("...", [call])], final_text="<answer>squat</answer>")
    >>> tool_usage(t, {"answer": "squat"}), tool_usage(t, {"answer": "lunge"})
    (1.0, 0.0)
    """
    right = accuracy(traj, record)
    if right is None:
        return None
    try:
        used = any(getattr(call, "ok", False) is True for call in traj.tool_calls)
    except (AttributeError, TypeError):  # a trajectory without turns has made no calls
        used = False
    return 1.0 if right == 1.0 and used else 0.0
