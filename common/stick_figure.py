"""Procedural stick-figure actions: the synthetic half of the bundled sample data.

An action is a list of timed phases; each phase moves the figure's joint angles from one key pose to the next.
`render_action` draws the figure (head, shoulders, torso, two-segment arms and legs) with OpenCV on a noisy
background and `segments` gives the phases in seconds, so the ground truth (which body part moves when) is exact.
Body coordinates are in units of roughly half a body height, with y up and the pelvis at the origin; "right" is
the image right.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import numpy as np

# Lengths in body units; a standing figure is about 1.19 units tall (feet -0.52 to head top 0.665).
NECK_Y, SHOULDER_HALF, HIP_HALF = 0.45, 0.10, 0.07
HEAD_Y, HEAD_R = 0.58, 0.085
UPPER_ARM, FOREARM, THIGH, SHIN = 0.22, 0.20, 0.26, 0.26
STAND_LEG = 6.0  # degrees outward of a relaxed standing leg

# A pose: joint angles in degrees from straight down, positive = away from the body's midline, plus a pelvis drop.
REST = {"r_up": 12.0, "r_fore": 8.0, "l_up": 12.0, "l_fore": 8.0, "r_thigh": STAND_LEG, "r_shin": STAND_LEG}
REST |= {"l_thigh": STAND_LEG, "l_shin": STAND_LEG, "drop": 0.0, "hop": 0.0}


@dataclass(frozen=True)
class ActionSpec:
    """One synthetic action: its label, ranked sub-motions (most important first) and its phases.

    A phase is (segment name, relative length, target pose overrides); it eases from the previous pose to REST
    updated with the overrides. The phases are `lead`, then the pair `cycle` repeated `cycles + extra_cycles`
    times, then `tail`. `squat` is True when the feet stay planted while the pelvis drops.
    """

    label: str
    sub_motions: tuple[str, ...]
    lead: tuple = ()
    cycle: tuple = ()
    tail: tuple = ()
    cycles: int = 2
    extra_cycles: int = 0
    squat: bool = False
    start: dict = field(default_factory=dict)

    @property
    def phases(self) -> tuple[tuple[str, float, dict], ...]:
        return self.lead + self.cycle * (self.cycles + self.extra_cycles) + self.tail


RAISED = {"r_up": 115.0, "r_fore": 165.0}
GUARD = {"r_up": 25.0, "r_fore": 160.0, "l_up": 25.0, "l_fore": 160.0}
HANDS_ON_HIPS = {"r_up": 40.0, "r_fore": -40.0, "l_up": 40.0, "l_fore": -40.0}
BALANCE = {"l_up": 45.0, "l_fore": 60.0, "r_up": 45.0, "r_fore": 60.0}
SPREAD = {"r_up": 165.0, "r_fore": 170.0, "l_up": 165.0, "l_fore": 170.0, "hop": 1.0}
SPREAD |= {"r_thigh": 24.0, "r_shin": 24.0, "l_thigh": 24.0, "l_shin": 24.0}
HANDS_APART = {"r_up": 50.0, "r_fore": 100.0, "l_up": 50.0, "l_fore": 100.0}
HANDS_TOGETHER = {"r_up": 25.0, "r_fore": -70.0, "l_up": 25.0, "l_fore": -70.0}

SPECS = {
    s.label: s
    for s in (
        ActionSpec(
            "wave",
            (
                "right forearm swings side to side above the shoulder",
                "right arm raised above the shoulder",
                "body and legs stay still",
            ),
            lead=(("raise arm", 1.0, RAISED),),
            cycle=(
                ("wave forearm out", 1.0, RAISED | {"r_fore": 200.0}),
                ("wave forearm in", 1.0, RAISED | {"r_fore": 135.0}),
            ),
            tail=(("lower arm", 1.0, {}),),
        ),
        ActionSpec(
            "squat",
            ("knees bend and hips lower", "hips rise back to standing", "torso stays upright"),
            lead=(
                ("descend", 1.4, HANDS_ON_HIPS | {"drop": 0.22}),
                ("hold", 0.8, HANDS_ON_HIPS | {"drop": 0.22}),
                ("ascend", 1.4, HANDS_ON_HIPS),
            ),
            squat=True,
            start=HANDS_ON_HIPS,
        ),
        ActionSpec(
            "jumping jack",
            ("arms swing overhead and back down", "legs spread apart and close", "body hops in place"),
            cycle=(("spread arms and legs", 1.0, SPREAD), ("close arms and legs", 1.0, {"hop": 1.0})),
        ),
        ActionSpec(
            "punch",
            (
                "right arm extends straight out at shoulder height",
                "right fist pulls back to the chin",
                "left arm stays in guard",
                "legs stay planted",
            ),
            lead=(("raise guard", 0.8, GUARD),),
            cycle=(("extend arm", 1.0, GUARD | {"r_up": 90.0, "r_fore": 90.0}), ("retract arm", 1.0, GUARD)),
        ),
        ActionSpec(
            "kick",
            (
                "right leg swings up and out",
                "right knee snaps straight",
                "arms spread for balance",
                "left leg stays planted",
            ),
            lead=(
                ("lift knee", 1.0, BALANCE | {"r_thigh": 55.0, "r_shin": 5.0}),
                ("extend leg", 0.7, BALANCE | {"r_thigh": 65.0, "r_shin": 80.0}),
                ("lower leg", 1.0, BALANCE),
                ("stand", 0.6, {}),
            ),
        ),
        ActionSpec(
            "clap",
            ("hands come together in front of the chest", "both forearms swing inward and outward", "legs stay still"),
            cycle=(("bring hands together", 1.0, HANDS_TOGETHER), ("pull hands apart", 1.0, HANDS_APART)),
            extra_cycles=1,
            start=HANDS_APART,
        ),
    )
}


def action_spec(label: str, cycles: int = 2) -> ActionSpec:
    """The synthetic action `label`; `cycles` (2 or 3, from the seed) sets how often a repeated motion repeats."""
    if label not in SPECS:
        raise KeyError(f"unknown synthetic action {label!r}; known: {', '.join(SPECS)}")
    return replace(SPECS[label], cycles=cycles)


def _ease(x: float) -> float:
    return 0.5 - 0.5 * math.cos(math.pi * x)


def pose_at(spec: ActionSpec, t: float) -> dict:
    """The pose at clip fraction t in [0, 1]."""
    total = sum(p[1] for p in spec.phases)
    prev, acc = REST | spec.start, 0.0
    for i, (_, length, over) in enumerate(spec.phases):
        target = REST | over
        frac = length / total
        if t <= acc + frac or i == len(spec.phases) - 1:
            u = _ease(min(1.0, max(0.0, (t - acc) / frac)))
            pose = {k: prev[k] + (target[k] - prev[k]) * u for k in REST}
            # a hop is an up-and-down arc inside the phase, not a level to ease towards
            pose["hop"] = max(prev["hop"], target["hop"]) * math.sin(math.pi * u)
            return pose
        prev, acc = target, acc + frac
    raise AssertionError("unreachable")


def segments(spec: ActionSpec, duration: float) -> list[dict]:
    """The phases as [{name, start, end}] in seconds from the start of the clip."""
    total = sum(p[1] for p in spec.phases)
    out, acc = [], 0.0
    for name, length, _ in spec.phases:
        end = acc + length / total * duration
        out.append({"name": name, "start": round(acc, 3), "end": round(end, 3)})
        acc = end
    return out


def _limb(origin: np.ndarray, side: int, angle_deg: float, length: float) -> np.ndarray:
    a = math.radians(angle_deg)
    return origin + length * np.array([side * math.sin(a), -math.cos(a)])


def _knee_ik(hip: np.ndarray, foot: np.ndarray, side: int) -> np.ndarray:
    """Knee for a planted foot: the two-bone solution whose knee points outward (a frontal-view squat)."""
    d = foot - hip
    dist = float(np.linalg.norm(d))
    h = math.sqrt(max(0.0, THIGH**2 - (dist / 2) ** 2))
    perp = np.array([-d[1], d[0]]) / max(dist, 1e-9)
    if perp[0] * side < 0:
        perp = -perp
    return hip + d / 2 + h * perp


def skeleton(spec: ActionSpec, pose: dict) -> dict[str, np.ndarray]:
    """Joint positions in body units (y up) for a pose."""
    pelvis = np.array([0.0, -pose["drop"] + 0.05 * pose["hop"]])
    j = {"pelvis": pelvis, "neck": pelvis + [0.0, NECK_Y], "head": pelvis + [0.0, HEAD_Y]}
    for side, s in ((1, "r"), (-1, "l")):
        sh = pelvis + [side * SHOULDER_HALF, NECK_Y]
        j[f"{s}_shoulder"] = sh
        j[f"{s}_elbow"] = _limb(sh, side, pose[f"{s}_up"], UPPER_ARM)
        j[f"{s}_hand"] = _limb(j[f"{s}_elbow"], side, pose[f"{s}_fore"], FOREARM)
        hip = pelvis + [side * HIP_HALF, 0.0]
        j[f"{s}_hip"] = hip
        if spec.squat:
            stand_hip = np.array([side * HIP_HALF, 0.0])
            j[f"{s}_foot"] = _limb(_limb(stand_hip, side, STAND_LEG, THIGH), side, STAND_LEG, SHIN)
            j[f"{s}_knee"] = _knee_ik(hip, j[f"{s}_foot"], side)
        else:
            j[f"{s}_knee"] = _limb(hip, side, pose[f"{s}_thigh"], THIGH)
            j[f"{s}_foot"] = _limb(j[f"{s}_knee"], side, pose[f"{s}_shin"], SHIN)
    return j


BONES = [("neck", "pelvis"), ("l_shoulder", "r_shoulder"), ("l_hip", "r_hip")]
BONES += [
    (f"{s}_{a}", f"{s}_{b}")
    for s in "rl"
    for a, b in (("shoulder", "elbow"), ("elbow", "hand"), ("hip", "knee"), ("knee", "foot"))
]


@dataclass(frozen=True)
class Look:
    """How one clip looks: figure placement and scale (pixels per body unit), colours, noise, frame size."""

    size: int
    center_x: float
    pelvis_y: float
    scale: float
    background: tuple[int, int, int]
    figure: tuple[int, int, int]
    noise_std: float


def random_look(rng: np.random.Generator, size: int = 112) -> Look:
    """Draw placement, scale and high-contrast colours; the whole figure (arms overhead, leg kicked) stays inside."""
    scale = float(rng.uniform(0.52, 0.60)) * size
    center_x = float(rng.uniform(0.42, 0.58)) * size
    pelvis_y = size - float(rng.uniform(0.04, 0.08)) * size - 0.53 * scale
    dark = bool(rng.integers(2))
    lo, hi = (10, 70) if dark else (180, 245)
    background = tuple(int(x) for x in rng.integers(lo, hi, 3))
    flo, fhi = (190, 256) if dark else (0, 60)
    figure = tuple(int(x) for x in rng.integers(flo, fhi, 3))
    return Look(size, center_x, pelvis_y, scale, background, figure, float(rng.uniform(2.0, 5.0)))


def _background(look: Look, rng: np.random.Generator) -> np.ndarray:
    """A static, softly textured background: a small random grid blown up, so it looks like a blurry scene."""
    import cv2

    grid = rng.normal(0.0, 10.0, (6, 6, 3)).astype(np.float32)
    texture = cv2.resize(grid, (look.size, look.size), interpolation=cv2.INTER_CUBIC)
    return np.asarray(look.background, np.float32) + texture


def render_action(spec: ActionSpec, look: Look, num_frames: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Draw the action as `num_frames` RGB uint8 frames of look.size x look.size."""
    import cv2

    base = _background(look, rng)
    thick = max(2, round(look.scale * 0.05))
    frames = []
    for k in range(num_frames):
        pose = pose_at(spec, k / max(1, num_frames - 1))
        joints = skeleton(spec, pose)

        def px(p, joints=joints):  # body units (y up) -> integer pixels (y down)
            return (round(look.center_x + p[0] * look.scale), round(look.pelvis_y - p[1] * look.scale))

        canvas = np.zeros((look.size, look.size, 3), np.uint8)
        for a, b in BONES:
            cv2.line(canvas, px(joints[a]), px(joints[b]), (255, 255, 255), thick, cv2.LINE_AA)
        cv2.circle(canvas, px(joints["head"]), round(HEAD_R * look.scale), (255, 255, 255), -1, cv2.LINE_AA)
        alpha = canvas[..., :1].astype(np.float32) / 255.0
        noisy = base + rng.normal(0.0, look.noise_std, base.shape).astype(np.float32)
        frame = noisy * (1 - alpha) + np.asarray(look.figure, np.float32) * alpha
        frames.append(np.clip(frame, 0, 255).astype(np.uint8))
    return frames


def figure_box(spec: ActionSpec, look: Look, num_frames: int, k: int) -> list[float]:
    """The pixel box [x1, y1, x2, y2] of the figure `render_action` draws in frame k of num_frames: its joints and
    head, widened by half the line thickness (clipped to the frame)."""
    joints = skeleton(spec, pose_at(spec, k / max(1, num_frames - 1)))
    pts = np.array([(look.center_x + p[0] * look.scale, look.pelvis_y - p[1] * look.scale) for p in joints.values()])
    half, r = max(2, round(look.scale * 0.05)) / 2, round(HEAD_R * look.scale)
    head = pts[list(joints).index("head")]
    x1, y1 = min(pts[:, 0].min() - half, head[0] - r), min(pts[:, 1].min() - half, head[1] - r)
    x2, y2 = max(pts[:, 0].max() + half, head[0] + r), max(pts[:, 1].max() + half, head[1] + r)
    return [max(0.0, x1), max(0.0, y1), min(float(look.size), x2), min(float(look.size), y2)]
