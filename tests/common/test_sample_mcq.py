"""The sample MCQ benchmark: the planned questions, balanced letters, and boxes that hold the figures as the decoded
video shows them (found from the pixels, not from how they were drawn)."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest

from common.sample_data import build_sample_data
from common.schema import load_records

# (answer's AVA name, category, descriptor), in the order of the scenes: wave | squat, punch | jumping jack,
# clap | kick | wave, then the man talking in carphone_pristine.mp4
PLAN = [
    ("hand wave", "person interaction", "the person on the left"),
    ("crouch/kneel", "person movement", "the person on the right"),
    ("fight/hit (a person)", "person interaction", "the person on the left"),
    ("jump/leap", "person movement", "the person on the right"),
    ("hand clap", "person interaction", "the leftmost person"),
    ("kick (a person)", "person interaction", "the person in the center"),
    ("hand wave", "person interaction", "the rightmost person"),
    ("talk to (e.g., self, a person, a group)", "person interaction", "the only person"),
]


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    paths = build_sample_data(tmp_path_factory.mktemp("sample") / "sample")
    return paths, load_records(paths["mcq_eval"])


def test_the_planned_questions(built):
    _, recs = built
    assert [(r["options"][r["answer"]], r["category"], r["meta"]["descriptor"]) for r in recs] == PLAN
    for r in recs:
        assert r["meta"]["descriptor"] in r["prompt"] and sorted(r["options"]) == list("ABCD")
        assert len(set(r["options"].values())) == 4
        assert all(f"\n{k}. {v}\n" in r["prompt"] for k, v in r["options"].items())
    # the rightmost person's wave has the leftmost's clap and the center's kick among its options
    assert {"hand clap", "kick (a person)"} <= set(recs[6]["options"].values())
    assert [Counter(r["answer"] for r in recs[i : i + 4]) for i in (0, 4)] == [Counter("ABCD")] * 2


def test_prompt_is_the_builders():
    from common.sample_mcq import PROMPT
    from data_builders.finebench import PROMPT as BUILDER_PROMPT

    assert PROMPT == BUILDER_PROMPT


def figure_mask_box(frame: np.ndarray, tiles: int) -> list[list[float]]:
    """Per tile, the box of the pixels far from the tile's median colour (the figure on its blurry background)."""
    h, w = frame.shape[:2]
    tw = w // tiles
    out = []
    for t in range(tiles):
        tile = frame[:, t * tw : (t + 1) * tw].astype(np.float32)
        far = np.abs(tile - np.median(tile.reshape(-1, 3), axis=0)).sum(axis=2) > 120
        ys, xs = np.nonzero(far)
        out.append([(xs.min() + t * tw) / w, ys.min() / h, (xs.max() + 1 + t * tw) / w, (ys.max() + 1) / h])
    return out


def iou(a, b) -> float:
    inter = max(0.0, min(a[2], b[2]) - max(a[0], b[0])) * max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def test_boxes_hold_the_figures_at_the_keyframe(built):
    from envs.video import read_video

    _, recs = built
    for video in sorted({r["video"] for r in recs if "stick" in r["meta"]["source"]}):
        mine = [r for r in recs if r["video"] == video]
        v = read_video(video, num_frames=17)  # 17 of 16 frames: every frame, at k / 8 s
        k = int(np.argmin([abs(t - mine[0]["meta"]["keyframe_s"]) for t in v.timestamps]))
        for rec, seen in zip(mine, figure_mask_box(v.frames[k], len(mine))):
            assert iou(rec["meta"]["boxes"][0]["box"], seen) > 0.8, (rec["id"], rec["meta"]["boxes"], seen)


def test_reused_then_rebuilt_the_same(built, tmp_path):
    paths, _ = built
    before = paths["mcq_eval"].stat().st_mtime_ns
    again = build_sample_data(paths["root"])
    assert again["mcq_eval"].stat().st_mtime_ns == before  # the stamp says it is complete: not rewritten
    assert json.loads((paths["root"] / "actionrl_sample_mcq.json").read_text()) == {"version": "1", "seed": 0}
    other = build_sample_data(tmp_path / "other")
    # a build from before the MCQ set (no stamp, no file) gets it on its next use, the other sets untouched
    eval_bytes = (other["root"] / "eval.jsonl").read_bytes()
    (other["root"] / "actionrl_sample_mcq.json").unlink()
    other["mcq_eval"].unlink()
    other = build_sample_data(other["root"])
    assert (other["root"] / "eval.jsonl").read_bytes() == eval_bytes
    assert other["mcq_eval"].read_bytes() == paths["mcq_eval"].read_bytes()
    for name in ("mcq_0_wave_squat.mp4", "mcq_2_clap_kick_wave.mp4"):
        assert (other["videos"] / name).read_bytes() == (paths["videos"] / name).read_bytes()
