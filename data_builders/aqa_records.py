"""What the action-quality builders (FineDiving, FineFS, LOGO) share: timed segments from frame labels, the
score range over the dataset, and the `aqa` record with the HieroAction SAR prompt.

Times are seconds from the start of what the model sees (the clip window): frame f of a clip starting at frame s
spans [(f - s) / fps, (f - s + 1) / fps).

    >>> segments_from_frame_labels([0, 0, 3, 3, 3, 5], {0: "take-off", 3: "flight", 5: "entry"}, fps=2)
    [{'name': 'take-off', 'start': 0.0, 'end': 1.0}, {'name': 'flight', 'start': 1.0, 'end': 2.5}, \
{'name': 'entry', 'start': 2.5, 'end': 3.0}]
    >>> value_range([71.5, 88.2, 64.0])
    [64.0, 89.0]
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from common.sample_data import AQA_PROMPT
from data_builders.builder import Collector


def runs(labels: Sequence) -> list[tuple[object, int, int]]:
    """(label, first index, last index + 1) of each run of equal consecutive labels."""
    out: list[tuple[object, int, int]] = []
    for i, lab in enumerate(labels):
        if out and out[-1][0] == lab:
            out[-1] = (lab, out[-1][1], i + 1)
        else:
            out.append((lab, i, i + 1))
    return out


def segments_from_frame_labels(labels: Sequence, names: Mapping, fps: float) -> list[dict]:
    """Named, timed segments from per-frame labels (frame 0 = clip start); KeyError for a label without a name."""
    return [
        {"name": str(names[lab]), "start": round(a / fps, 3), "end": round(b / fps, 3)} for lab, a, b in runs(labels)
    ]


def value_range(values: Sequence[float]) -> list[float]:
    """[floor(min), ceil(max)] of the values (widened by 1 when they are all equal), as floats."""
    lo, hi = float(math.floor(min(values))), float(math.ceil(max(values)))
    return [lo, hi] if hi > lo else [lo - 1.0, hi + 1.0]


@dataclass
class AqaItem:
    """One performance before it becomes a record (the score range is known only once all are read)."""

    output: str
    id: str
    video: str
    at: str
    label: str
    sub_actions: list[dict]
    score: float
    difficulty: float | None  # None: the dataset has no difficulty (FineFS, LOGO)
    clip: list[float] | None = None
    meta: dict = field(default_factory=dict)


def add_aqa(col: Collector, items: list[AqaItem], dataset: str) -> dict:
    """Add the `aqa` records of `items`, all with one score range (and difficulty range) over the whole dataset,
    so that train and test are normalised alike; returns the ranges for stats.json."""
    if not items:
        return {}
    q_range = value_range([it.score for it in items])
    diffs = [it.difficulty for it in items if it.difficulty is not None]
    d_range = value_range(diffs) if diffs else [0.0, 1.0]
    candidates = sorted({it.label for it in items})
    for it in items:
        truth = {"action": it.label, "sub_actions": it.sub_actions, "difficulty": it.difficulty, "score": it.score}
        prompt = AQA_PROMPT.format(
            d_lo=d_range[0], d_hi=d_range[1], q_lo=q_range[0], q_hi=q_range[1], candidates=", ".join(candidates)
        )
        meta = {"dataset": dataset, "split": it.output, "has_difficulty": it.difficulty is not None} | it.meta
        rec = {
            "id": it.id,
            "task": "aqa",
            "video": it.video,
            "prompt": prompt,
            "answer": json.dumps(truth),
            "label": it.label,
            "sub_actions": it.sub_actions,
            "score": it.score,
            # the schema wants a number; has_difficulty=False tells the score reward and eval to leave it out
            "difficulty": it.difficulty if it.difficulty is not None else 0.0,
            "score_range": q_range,
            "meta": meta,
        }
        if it.clip:
            rec["clip"] = it.clip
        col.add(it.output, rec, it.at)
    return {"score_range": q_range, "difficulty_range": d_range if diffs else None, "actions": candidates}
