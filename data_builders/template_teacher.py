"""A deterministic template teacher: Video-STAR-style chains of thought written from a record's ground truth.

It stands in for a real teacher model (a large VLM behind an endpoint) on the embedded default, so the cold start
runs offline; it is named a template teacher on purpose: it knows the label and writes what a good chain looks
like, it does not look at the video. Each chain is a list of assistant turns in the exact format the GRPO recipe
samples: the tool calls (the real tools answer them when the chain is replayed), then the dual-phase reasoning and
the answer. Only the tools in `tools` are called: first the people (pose, else detection), then a description of
the key frame (else the definitions of two candidates). The reasoning lists the record's `sub_motions` (else the
template knowledge base's phases of the label, `common.action_kb.template_entry`) as the one sub-motion line of
common/submotions.py, which the sub-motion reward reads back.

>>> rec = {"label": "squat", "candidates": ["wave", "squat", "kick"], "sub_motions": ["knees bend", "hips drop"]}
>>> turns = template_chain(rec)
>>> turns[0].splitlines()[-2]
'{"name": "pose_estimation", "arguments": {"frames": [2, 6], "person": 0}}'
>>> turns[1].endswith("<answer>squat</answer>")
True
>>> turns[1].splitlines()[0]
'<think>Sub-motions: knees bend → hips drop'
>>> [json.loads(t.split("\\n")[2])["name"] for t in template_chain(rec, tools=ALL_TOOLS)[:2]]
['pose_estimation', 'video_description']
>>> other_tools = ["human_detection", "action_explanation"]
>>> [json.loads(t.split("\\n")[2])["name"] for t in template_chain(rec, tools=other_tools)[:2]]
['human_detection', 'action_explanation']
>>> len(template_chain(rec, tools=()))
1
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from common.action_kb import template_entry
from common.submotions import format_submotions

ALL_TOOLS = ("pose_estimation", "human_detection", "action_explanation", "video_description")
_COUNT = re.compile(r"frame (\d+) \(t=[^)]*\): (\d+) (?:person|people)")


def template_chain(
    record: dict[str, Any], num_frames: int = 8, tools: Sequence[str] = ("pose_estimation",)
) -> list[str]:
    """The assistant turns of one chain for an `ovar` record: up to two tool turns, then reasoning and the answer.

    A turn ends at its first `</tool_call>`, so each tool turn makes one call: first a look at the people (pose on
    two of the `num_frames` sampled frames, main person only, which keeps the reply short; human detection where
    pose is not enabled), then a one-key-frame description (the definitions of the label and one other candidate
    where description is not enabled). Every chain makes the same calls with the same arguments: a tiny model
    learns one fixed call string in a short warm-up, while several variants blur into broken JSON."""
    label = record["label"]
    others = [c for c in record.get("candidates", []) if c != label]
    candidates = [label, *others[:2]]
    motions = record.get("sub_motions") or template_entry(label)["phases"]
    frames = sorted({num_frames // 4, (3 * num_frames) // 4})
    people = [
        c
        for c in (
            {"name": "pose_estimation", "arguments": {"frames": frames, "person": 0}},
            {"name": "human_detection", "arguments": {"frames": frames}},
        )
        if c["name"] in tools
    ]
    knowledge = [
        c
        for c in (
            {"name": "video_description", "arguments": {"num_key_frames": 1}},
            {"name": "action_explanation", "arguments": {"actions": sorted(candidates[:2]), "top_k": 1}},
        )
        if c["name"] in tools
    ]
    turns = []
    for calls, thinks in (
        (people, ("Check the pose.", "Find the people.")),
        (knowledge, ("Describe the key frame.", "Look up the candidates.")),
    ):
        if calls:
            think = thinks[0] if calls[0]["name"] in ("pose_estimation", "video_description") else thinks[1]
            turns.append(f"<think>{think}</think>\n<tool_call>\n{json.dumps(calls[0])}\n</tool_call>")
    scores = " ".join(f"{c}: {'high' if c == label else 'low'}." for c in sorted(candidates))
    turns.append(
        f"<think>{format_submotions(motions)}\nCandidates: {', '.join(sorted(candidates))}. "
        f"Matching: {scores}</think>\n<answer>{label}</answer>"
    )
    return turns


def pose_counts(tool_text: str) -> dict[int, int]:
    """{frame: people} from a pose tool reply ("frame 2 (t=0.25s): 1 person" lines).

    >>> pose_counts("frame 2 (t=0.25s): 1 person\\n  person 0: box [1,2,3,4]\\nframe 6 (t=0.75s): 0 people")
    {2: 1, 6: 0}
    """
    return {int(f): int(n) for f, n in _COUNT.findall(tool_text)}


def template_reasoning(record: dict[str, Any], tool_text: str) -> str:
    """The last turn of `template_chain`, opened by what the real pose reply showed ("frame 2: 1 person."), so
    the chain's first step rests on the tool output it was given (a judge checks these counts against it)."""
    seen = " ".join(f"frame {f}: {n} {'person' if n == 1 else 'people'}." for f, n in pose_counts(tool_text).items())
    turn = template_chain(record)[-1]
    evidence = f"Pose: {seen}\n" if seen else "Pose: no frame was read.\n"
    return turn.replace("<think>", "<think>" + evidence, 1)


def embedded_sft_records(records_path: str | Path, out_dir: Path, rollout: Any) -> Path:
    """SFT records of fixed-call chains (`template_chain`) for the ovar records of `records_path`, with the tools
    and frames of `rollout` (a RolloutConfig): the data of GRPO's cold start on the embedded default."""
    from common.schema import load_records, write_records

    records = [r for r in load_records(records_path) if r.get("task") == "ovar"]
    if not records:
        raise ValueError(f"{records_path}: no ovar records; the template teacher writes Video-STAR chains for them")
    tools = list(rollout.enabled_tools())
    out = Path(out_dir) / "template_chains.jsonl"
    write_records(out, [{**r, "chain": template_chain(r, rollout.num_frames, tools=tools)} for r in records])
    return out
