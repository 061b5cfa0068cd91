"""A deterministic template teacher: Video-STAR-style chains of thought written from a record's ground truth.

It stands in for a real teacher model (a large VLM behind an endpoint) on the embedded default, so the cold start
runs offline; it is named a template teacher on purpose: it knows the label and writes what a good chain looks
like, it does not look at the video. Each chain is a list of assistant turns in the exact format the GRPO recipe
samples: first a tool call, then (after the real tool reply) the dual-phase reasoning and the answer.

>>> rec = {"label": "squat", "candidates": ["wave", "squat", "kick"], "sub_motions": ["knees bend", "hips drop"]}
>>> turns = template_chain(rec)
>>> turns[0].splitlines()[-2]
'{"name": "pose_estimation", "arguments": {"frames": [2, 6], "person": 0}}'
>>> turns[1].endswith("<answer>squat</answer>")
True
"""

from __future__ import annotations

import json
import re
from typing import Any

_COUNT = re.compile(r"frame (\d+) \(t=[^)]*\): (\d+) (?:person|people)")


def template_chain(record: dict[str, Any], num_frames: int = 8) -> list[str]:
    """The assistant turns of one chain for an `ovar` record: a pose call on two of the `num_frames` sampled frames
    (the main person only, which keeps the tool reply short), then reasoning and the answer."""
    label = record["label"]
    others = [c for c in record.get("candidates", []) if c != label]
    candidates = [label, *others[:2]]
    motions = record.get("sub_motions") or [label]
    frames = sorted({num_frames // 4, (3 * num_frames) // 4})
    call = json.dumps({"name": "pose_estimation", "arguments": {"frames": frames, "person": 0}})
    first = f"<think>Check the pose.</think>\n<tool_call>\n{call}\n</tool_call>"
    decomposition = " ".join(f"{i}. {m}." for i, m in enumerate(motions, 1))
    scores = " ".join(f"{c}: {'high' if c == label else 'low'}." for c in sorted(candidates))
    second = (
        f"<think>Sub-motions: {decomposition} Candidates: {', '.join(sorted(candidates))}. "
        f"Matching: {scores}</think>\n<answer>{label}</answer>"
    )
    return [first, second]


def pose_counts(tool_text: str) -> dict[int, int]:
    """{frame: people} from a pose tool reply ("frame 2 (t=0.25s): 1 person" lines).

    >>> pose_counts("frame 2 (t=0.25s): 1 person\\n  person 0: box [1,2,3,4]\\nframe 6 (t=0.75s): 0 people")
    {2: 1, 6: 0}
    """
    return {int(f): int(n) for f, n in _COUNT.findall(tool_text)}


def template_reasoning(record: dict[str, Any], tool_text: str) -> str:
    """The second turn of `template_chain`, opened by what the real pose reply showed ("frame 2: 1 person."), so
    the chain's first step rests on the tool output it was given (a judge checks these counts against it)."""
    seen = " ".join(f"frame {f}: {n} {'person' if n == 1 else 'people'}." for f, n in pose_counts(tool_text).items())
    turn = template_chain(record)[1]
    evidence = f"Pose: {seen} " if seen else "Pose: no frame was read. "
    return turn.replace("<think>", "<think>" + evidence, 1)
