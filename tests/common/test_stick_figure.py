"""The stick-figure renderer: rigid limbs, planted feet, phase timing and a figure that stays inside the frame."""

from __future__ import annotations

import numpy as np
import pytest

from common.stick_figure import SPECS, action_spec, pose_at, random_look, render_action, segments, skeleton

BONE_LENGTHS = {("shoulder", "elbow"): 0.22, ("elbow", "hand"): 0.20, ("hip", "knee"): 0.26, ("knee", "foot"): 0.26}


@pytest.mark.parametrize("label", sorted(SPECS))
def test_limbs_keep_their_length_through_the_action(label):
    spec = action_spec(label, cycles=3)
    for t in np.linspace(0, 1, 41):
        joints = skeleton(spec, pose_at(spec, float(t)))
        for (a, b), length in BONE_LENGTHS.items():
            for side in "rl":
                dist = np.linalg.norm(joints[f"{side}_{a}"] - joints[f"{side}_{b}"])
                assert dist == pytest.approx(length, abs=1e-9), (label, t, side, a, b)


def test_squat_keeps_the_feet_planted_and_lowers_the_pelvis():
    spec = action_spec("squat")
    stand, low = (skeleton(spec, pose_at(spec, t)) for t in (0.0, 0.5))
    for side in "rl":
        assert np.allclose(stand[f"{side}_foot"], low[f"{side}_foot"])
    # the hold phase (from 1.4/3.6 to 2.2/3.6 of the clip) sits at the full 0.22 drop
    assert stand["pelvis"][1] - low["pelvis"][1] == pytest.approx(0.22)


def test_segments_tile_the_clip():
    # wave with 2 cycles: raise, 4 equal forearm swings, lower = 6 phases of equal weight over 3 s -> 0.5 s each
    segs = segments(action_spec("wave", cycles=2), 3.0)
    assert [s["name"] for s in segs] == ["raise arm"] + ["wave forearm out", "wave forearm in"] * 2 + ["lower arm"]
    assert [(s["start"], s["end"]) for s in segs] == [(i * 0.5, (i + 1) * 0.5) for i in range(6)]


def test_unknown_action_is_named():
    with pytest.raises(KeyError, match="unknown synthetic action 'fly'"):
        action_spec("fly")


@pytest.mark.parametrize("label", ["jumping jack", "kick", "punch"])
def test_the_figure_stays_inside_the_frame(label):
    # the widest and tallest actions, over many placements: the 2-pixel border keeps the background colour
    for seed in range(12):
        rng = np.random.default_rng(seed)
        look = random_look(rng, 112)
        frames = np.stack(render_action(action_spec(label, cycles=2), look, 16, rng)).astype(int)
        border = np.concatenate([frames[:, :2], frames[:, -2:], frames[:, :, :2].transpose(0, 2, 1, 3)], 1)
        border = np.concatenate([border, frames[:, :, -2:].transpose(0, 2, 1, 3)], 1)
        assert np.abs(border - np.array(look.background)).max() < 60, (label, seed)
