"""The did-you-mean hint every config and argument check gives for a misspelt name."""

from __future__ import annotations

import difflib
from collections.abc import Sequence


def did_you_mean(word: str, choices: Sequence[str]) -> str:
    """The hint "; did you mean 'x'?" naming the closest of `choices`, or "" when none is close.

    >>> did_you_mean("imgsize", ["weights", "imgsz"]), did_you_mean("colour", ["weights", "imgsz"])
    ("; did you mean 'imgsz'?", '')
    """
    close = difflib.get_close_matches(word, list(choices), n=1)
    return f"; did you mean {close[0]!r}?" if close else ""
