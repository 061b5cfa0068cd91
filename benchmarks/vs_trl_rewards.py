"""The two rule rewards of `benchmarks/vs_trl.py`, written once and scored the same way on both sides.

`format_score` and `accuracy_score` are plain text functions with no imports beyond `re`, so TRL's side of the
benchmark loads this file by path in its own environment and wraps them as TRL reward functions, while our side
names the two plugins below by dotted path (`benchmarks.vs_trl_rewards:format_reward`, the contract of
rewards/registry.py: `fn(traj, record) -> float`).
"""

from __future__ import annotations

import re
from typing import Any

_FORMAT = re.compile(r"\s*<think>.*?</think>\s*<answer>.*?</answer>\s*", re.DOTALL)
_ANSWER = re.compile(r"<answer>(.*?)</answer>", re.DOTALL)


def format_score(text: str) -> float:
    """1.0 when the whole text is a `<think>` block then an `<answer>` block (whitespace around them allowed),
    else 0.0.

    >>> format_score("<think>the arm swings</think> <answer>wave</answer>")
    1.0
    >>> format_score("<answer>wave</answer>")
    0.0
    >>> format_score("<think>x</think><answer>wave</answer> and more")
    0.0
    """
    return 1.0 if _FORMAT.fullmatch(text) else 0.0


def accuracy_score(text: str, answer: str) -> float:
    """1.0 when the first `<answer>` block of the text, stripped and lower-cased, equals `answer` stripped and
    lower-cased, else 0.0 (also when there is no answer block).

    >>> accuracy_score("<think>x</think><answer> Wave </answer>", "wave")
    1.0
    >>> accuracy_score("<answer>squat</answer><answer>wave</answer>", "wave")
    0.0
    >>> accuracy_score("wave", "wave")
    0.0
    """
    found = _ANSWER.search(text)
    return 1.0 if found and found.group(1).strip().lower() == answer.strip().lower() else 0.0


def format_reward(traj: Any, record: dict, **_: Any) -> float:
    """Our reward plugin: `format_score` of the trajectory's final text."""
    return format_score(traj.final_text)


def accuracy_reward(traj: Any, record: dict, **_: Any) -> float:
    """Our reward plugin: `accuracy_score` of the trajectory's final text against the record's `answer`."""
    return accuracy_score(traj.final_text, record["answer"])
