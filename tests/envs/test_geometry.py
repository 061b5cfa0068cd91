"""Joint angles, displacement and identity linking on hand-made keypoints and boxes."""

from __future__ import annotations

import math

import pytest

from envs.geometry import KEYPOINT_NAMES, joint_angles, joint_displacement, limb_motion, link_identities

K = {n: i for i, n in enumerate(KEYPOINT_NAMES)}


def _person(points: dict[str, tuple[float, float]], conf: float = 0.9) -> list[list[float]]:
    kp = [[0.0, 0.0, 0.0] for _ in KEYPOINT_NAMES]
    for name, (x, y) in points.items():
        kp[K[name]] = [x, y, conf]
    return kp


def test_angles_of_a_hand_drawn_figure():
    # image coordinates (y down). Left arm: shoulder (0,0), elbow (0,10) straight below, wrist (10,10) to the side:
    # a right angle at the elbow. Right arm hangs straight: 180. Left leg: hip (0,30), knee (0,50), and the ankle
    # 20 px from the knee in the direction (sin 60, cos 60), i.e. 60 degrees off the straight-down line.
    ankle = (20 * math.sin(math.radians(60)), 50 + 20 * math.cos(math.radians(60)))
    kp = _person(
        {
            "left_shoulder": (0, 0),
            "left_elbow": (0, 10),
            "left_wrist": (10, 10),
            "right_shoulder": (20, 0),
            "right_elbow": (20, 10),
            "right_wrist": (20, 20),
            "left_hip": (0, 30),
            "left_knee": (0, 50),
            "left_ankle": ankle,
            "right_hip": (20, 30),
            "right_knee": (40, 30),
            "right_ankle": (40, 50),
        }
    )
    angles = joint_angles(kp)
    assert angles["left_elbow"] == pytest.approx(90.0)
    assert angles["right_elbow"] == pytest.approx(180.0)
    # knee: thigh points up (0,-20), shin points to (sin60, cos60): the angle between is 180 - 60 = 120
    assert angles["left_knee"] == pytest.approx(120.0)
    # right hip: shoulder straight above (0,-30), knee straight to the side (20,0): 90; right knee: hip to the
    # left (-20,0), ankle below (0,20): 90
    assert angles["right_hip"] == pytest.approx(90.0) and angles["right_knee"] == pytest.approx(90.0)
    # left shoulder: elbow straight below (0,10), hip straight below (0,30): 0 degrees (arm along the body)
    assert angles["left_shoulder"] == pytest.approx(0.0)
    # left hip: shoulder above (0,-30), knee below (0,20): a straight line, 180
    assert angles["left_hip"] == pytest.approx(180.0)


def test_angles_leave_out_unconfident_joints():
    kp = _person({"left_shoulder": (0, 0), "left_elbow": (0, 10), "left_wrist": (10, 10)})
    kp[K["left_wrist"]][2] = 0.1
    assert joint_angles(kp) == {}


def test_displacement_and_top_limbs():
    still = {"nose": (50, 10), "left_wrist": (30, 40), "left_knee": (45, 70), "left_ankle": (45, 95)}
    frames = []
    for dy in (0, 6, 0):  # the left knee moves 6 px down and back; the ankle 8 px to the right and back
        pts = dict(still)
        pts["left_knee"] = (45, 70 + dy)
        pts["left_ankle"] = (45 + 8 * (dy > 0), 95)
        frames.append(_person(pts))
    disp = joint_displacement(frames, scale=100.0)
    assert disp["left_knee"] == pytest.approx(0.12) and disp["left_ankle"] == pytest.approx(0.16)
    assert disp["nose"] == 0.0 and "right_knee" not in disp  # never confident
    # left leg = mean(0.12, 0.16) = 0.14, then the still arm and head
    assert limb_motion(disp, top=1) == [("left_leg", 0.14)]


def test_link_identities_follows_overlap_not_order():
    a1, b1 = [0, 0, 10, 20], [100, 0, 110, 20]
    a2, b2 = [2, 0, 12, 20], [101, 0, 111, 20]
    far = [300, 0, 310, 20]
    # frame 2 lists b first; frame 3 has only a far newcomer (no overlap with anyone): a new identity
    assert link_identities([[a1, b1], [b2, a2], [far]]) == [[0, 1], [1, 0], [2]]
    assert link_identities([[], [a1], []]) == [[], [0], []]
