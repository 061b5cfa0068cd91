"""Pure geometry behind the people tools: box overlap, identity linking across frames, joint angles, joint motion.

numpy only (scipy for the assignment), so every function here is cheap to test by hand.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

KEYPOINT_NAMES = (
    "nose",
    "left_eye",
    "right_eye",
    "left_ear",
    "right_ear",
    "left_shoulder",
    "right_shoulder",
    "left_elbow",
    "right_elbow",
    "left_wrist",
    "right_wrist",
    "left_hip",
    "right_hip",
    "left_knee",
    "right_knee",
    "left_ankle",
    "right_ankle",
)
_K = {name: i for i, name in enumerate(KEYPOINT_NAMES)}

# joint -> (a, vertex, b): the angle at `vertex` between the segments to `a` and `b`
JOINT_ANGLES = {
    "left_elbow": ("left_shoulder", "left_elbow", "left_wrist"),
    "right_elbow": ("right_shoulder", "right_elbow", "right_wrist"),
    "left_shoulder": ("left_elbow", "left_shoulder", "left_hip"),
    "right_shoulder": ("right_elbow", "right_shoulder", "right_hip"),
    "left_hip": ("left_shoulder", "left_hip", "left_knee"),
    "right_hip": ("right_shoulder", "right_hip", "right_knee"),
    "left_knee": ("left_hip", "left_knee", "left_ankle"),
    "right_knee": ("right_hip", "right_knee", "right_ankle"),
}
# limb -> the keypoints whose motion is the limb's motion (its moving ends, not the joint it hangs from)
LIMBS = {
    "head": ("nose", "left_eye", "right_eye", "left_ear", "right_ear"),
    "left_arm": ("left_elbow", "left_wrist"),
    "right_arm": ("right_elbow", "right_wrist"),
    "torso": ("left_shoulder", "right_shoulder", "left_hip", "right_hip"),
    "left_leg": ("left_knee", "left_ankle"),
    "right_leg": ("right_knee", "right_ankle"),
}
# the segments drawn for a skeleton overlay
SKELETON = (
    ("left_shoulder", "right_shoulder"),
    ("left_hip", "right_hip"),
    ("left_shoulder", "left_hip"),
    ("right_shoulder", "right_hip"),
    ("left_shoulder", "left_elbow"),
    ("left_elbow", "left_wrist"),
    ("right_shoulder", "right_elbow"),
    ("right_elbow", "right_wrist"),
    ("left_hip", "left_knee"),
    ("left_knee", "left_ankle"),
    ("right_hip", "right_knee"),
    ("right_knee", "right_ankle"),
    ("nose", "left_eye"),
    ("nose", "right_eye"),
)


def iou(a: Sequence[float], b: Sequence[float]) -> float:
    """Intersection over union of two [x1, y1, x2, y2] boxes.

    >>> iou([0, 0, 2, 2], [1, 1, 3, 3])  # overlap 1, union 4 + 4 - 1
    0.14285714285714285
    >>> iou([0, 0, 1, 1], [2, 2, 3, 3])
    0.0
    """
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    inter = max(0.0, w) * max(0.0, h)
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union) if union > 0 else 0.0


def link_identities(frames_boxes: list[list[Sequence[float]]], min_iou: float = 0.2) -> list[list[int]]:
    """Give every box an identity that persists across frames: each frame's boxes are matched to the identities
    seen so far (their last box) by the assignment of largest total overlap; a match needs IoU >= `min_iou`;
    unmatched boxes start new identities (numbered in order of first appearance).

    >>> link_identities([[[0, 0, 10, 10], [50, 0, 60, 10]], [[51, 0, 61, 10], [1, 0, 11, 10]], [[2, 0, 12, 10]]])
    [[0, 1], [1, 0], [0]]
    """
    from scipy.optimize import linear_sum_assignment

    last: list[Sequence[float]] = []  # identity -> its most recent box
    out = []
    for boxes in frames_boxes:
        ids = [-1] * len(boxes)
        if boxes and last:
            overlap = np.array([[iou(b, t) for t in last] for b in boxes])
            rows, cols = linear_sum_assignment(-overlap)
            for r, c in zip(rows, cols):
                if overlap[r, c] >= min_iou:
                    ids[r] = int(c)
        for r, box in enumerate(boxes):
            if ids[r] < 0:
                ids[r] = len(last)
                last.append(box)
            else:
                last[ids[r]] = box
        out.append(ids)
    return out


def horizontal_place(box: Sequence[float], width: float) -> str:
    """ "left", "center" or "right": which third of the frame the box centre is in.

    >>> [horizontal_place(b, 300) for b in ([0, 0, 60, 9], [120, 0, 180, 9], [250, 0, 300, 9])]
    ['left', 'center', 'right']
    """
    cx = (box[0] + box[2]) / 2
    return "left" if cx < width / 3 else "right" if cx > 2 * width / 3 else "center"


def angle_deg(a: Sequence[float], vertex: Sequence[float], b: Sequence[float]) -> float | None:
    """The angle at `vertex` (degrees, 0..180) between the segments to `a` and `b`; None if a segment is empty.

    >>> angle_deg((1, 0), (0, 0), (0, 1)), angle_deg((1, 0), (0, 0), (-1, 0)), angle_deg((0, 0), (0, 0), (1, 1))
    (90.0, 180.0, None)
    """
    u = np.asarray(a[:2], dtype=float) - np.asarray(vertex[:2], dtype=float)
    v = np.asarray(b[:2], dtype=float) - np.asarray(vertex[:2], dtype=float)
    nu, nv = np.linalg.norm(u), np.linalg.norm(v)
    if nu == 0 or nv == 0:
        return None
    cos = float(np.clip(u @ v / (nu * nv), -1.0, 1.0))
    return round(math.degrees(math.acos(cos)), 1)


def joint_angles(keypoints: Sequence[Sequence[float]], min_conf: float = 0.3) -> dict[str, float]:
    """Elbow, shoulder, hip and knee angles (degrees) of one person's 17 keypoints [x, y, conf]; a joint is left
    out when any of its three keypoints is below `min_conf`. 180 is a straight limb."""
    out = {}
    for joint, (a, v, b) in JOINT_ANGLES.items():
        pts = [keypoints[_K[n]] for n in (a, v, b)]
        if all(p[2] >= min_conf for p in pts):
            angle = angle_deg(pts[0], pts[1], pts[2])
            if angle is not None:
                out[joint] = angle
    return out


def joint_displacement(track: list[Sequence[Sequence[float]]], scale: float, min_conf: float = 0.3) -> dict:
    """Path length of each keypoint over a person's consecutive sampled frames (sum of the distances between
    successive confident positions), divided by `scale` (e.g. the person's box height) so it does not depend on
    image size. Keypoints never confident in two successive frames are left out.

    >>> kp0 = [[0, 0, 1.0]] * 17
    >>> kp1 = [[3, 4, 1.0]] + [[0, 0, 1.0]] * 16
    >>> joint_displacement([kp0, kp1, kp0], scale=10.0)["nose"]  # 5 px there and 5 back, over 10 px
    1.0
    """
    out = {}
    for k, name in enumerate(KEYPOINT_NAMES):
        total, seen = 0.0, False
        for prev, cur in zip(track, track[1:]):
            if prev[k][2] >= min_conf and cur[k][2] >= min_conf:
                total += math.hypot(cur[k][0] - prev[k][0], cur[k][1] - prev[k][1])
                seen = True
        if seen:
            out[name] = round(total / scale, 3) if scale > 0 else 0.0
    return out


def limb_motion(displacement: dict[str, float], top: int = 3) -> list[tuple[str, float]]:
    """The `top` limbs by mean displacement of their keypoints (those measured), largest first.

    >>> limb_motion({"left_knee": 0.4, "left_ankle": 0.6, "nose": 0.1, "left_wrist": 0.2}, top=2)
    [('left_leg', 0.5), ('left_arm', 0.2)]
    """
    scores = []
    for limb, names in LIMBS.items():
        values = [displacement[n] for n in names if n in displacement]
        if values:
            scores.append((limb, round(sum(values) / len(values), 3)))
    scores.sort(key=lambda s: -s[1])
    return scores[:top]
