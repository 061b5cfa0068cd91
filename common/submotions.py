"""The one format of Video-STAR's ranked sub-motions, shared by everything that writes or reads them.

Inside `<think>`, on a line of its own, the marker and the sub-motions, most telling first, joined by arrows (the
paper's notation: "shoot ball" is "leg bending → torso jumping → arm extending"):

    Sub-motions: knees bend and hips lower → hips rise back to standing → torso stays upright

The system prompt asks the policy for it (`INSTRUCTION` is part of recipes/prompts/videostar_system.txt), the
teachers write it (`format_submotions`: the template teacher, and the line the endpoint teacher is told to copy),
and the sub-motion reward reads it (`rewards.submotion.parse_submotions`, which splits a line that has arrows at
the arrows only, so an item may hold a comma: "pull, twist or lift it open"). A sub-motion is one line of text;
`clean_submotion` takes out what would end or split it (newlines, arrows, tags).

The truth the reward compares against is a record's `sub_motions`, or an entry of a definitions file, a JSON
object `{"action label": ["sub-motion", ...]}` (`load_definitions`); the data builders' `--sub-motions FILE`
reads the same file. Labels are compared by `label_key`: case, spaces, underscores and punctuation do not count.
"""

from __future__ import annotations

import functools
import json
import re
import unicodedata
from collections.abc import Iterable
from pathlib import Path

MARKER = "Sub-motions:"
ARROW = "→"
SEPARATOR = f" {ARROW} "
# what the system prompt and the endpoint teacher's prompt ask for, word for word
INSTRUCTION = (
    "decompose the motion into sub-motions, most telling first, on a line of their own written as "
    f"`{MARKER} <sub-motion>{SEPARATOR}<sub-motion>{SEPARATOR}...`"
)
_BREAKS = re.compile(r"→|->|[<>]")
_SPACES = re.compile(r"\s+")
_LIST_PUNCT = re.compile(r"[,;]")
_WORD = re.compile(r"\w")
_NON_WORD = re.compile(r"[\W_]+")


def clean_submotion(text: str) -> str:
    """One sub-motion as the format can carry it: arrows, tag brackets and every run of whitespace (newlines too)
    become one space; stripped, without trailing periods.

    >>> clean_submotion("  knees bend ->\\n hips drop. ")
    'knees bend hips drop'
    """
    return _SPACES.sub(" ", _BREAKS.sub(" ", text)).strip().rstrip(". ")


def format_submotions(motions: Iterable[str]) -> str:
    """The sub-motion line for `motions` (ranked, most telling first); items without a letter or digit are left
    out (after `clean_submotion`). A line without an arrow is read as a list split at commas and semicolons, so a
    lone sub-motion is written without them. ValueError when nothing is left.

    >>> format_submotions(["knees bend", "hips drop, slowly"])
    'Sub-motions: knees bend → hips drop, slowly'
    >>> format_submotions(["hips drop, slowly"])
    'Sub-motions: hips drop slowly'
    """
    items = [c for c in (clean_submotion(m) for m in motions if isinstance(m, str)) if _WORD.search(c)]
    if len(items) == 1:
        items = [clean_submotion(_LIST_PUNCT.sub(" ", items[0]))]
    if not items:
        raise ValueError("format_submotions: no sub-motion to write")
    return f"{MARKER} {SEPARATOR.join(items)}"


def label_key(label: str) -> str:
    """A label as definitions are looked up: Unicode NFKC, case-folded, without spaces, underscores or punctuation
    (the same key as `rewards.videostar.labels_match` compares), so `ride_bike`, `Ride Bike` and `RideBike` meet.

    >>> label_key("Ride_Bike"), label_key("ApplyEyeMakeup"), label_key("push-ups")
    ('ridebike', 'applyeyemakeup', 'pushups')
    """
    return _NON_WORD.sub("", unicodedata.normalize("NFKC", label).casefold())


@functools.lru_cache(maxsize=8)
def load_definitions(path: str) -> dict[str, list[str]]:
    """A definitions file, JSON `{"action label": ["sub-motion", ...]}`, keyed by `label_key`; read once per
    process. ValueError naming the file and the bad entry."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise ValueError(f"sub-motions: cannot read definitions file {path}: {e}") from None
    if not isinstance(data, dict):
        raise ValueError(f"sub-motions: definitions file {path} must hold an object {{label: [sub-motions]}}")
    for label, motions in data.items():
        if not isinstance(motions, list) or not all(isinstance(m, str) for m in motions):
            raise ValueError(f"sub-motions: definitions file {path}: {label!r} must map to a list of strings")
    return {label_key(label): motions for label, motions in data.items()}
