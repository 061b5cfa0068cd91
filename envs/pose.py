"""The `pose_estimation` tool: YOLO11-pose people boxes, 17 COCO keypoints and motion evidence on sampled frames.

The model reads a compact text reply, e.g.::

    frame 3 (t=4.28s): 1 person
      person 0 (id 0): box [337,20,479,205] nose:(402,41,0.98) left_hip:(420,120,0.98) ...
        angles: left_elbow 152, left_knee 95, ...
    motion of id 0 over frames 1,3 (path / box height): most moving right_leg 0.31, left_leg 0.25, right_arm 0.1

Joint angles are in degrees (180 = straight limb). A person's `id` is the same across frames (linked by box
overlap, `envs.geometry.link_identities`); motion is measured per id. `ToolResult.data` keeps the numbers (boxes,
all 17 keypoints with confidences, angles, per-joint displacement) for tests and rewards. With `overlay: true`
the analysed frames come back as images with the skeletons drawn.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from envs.base import ToolResult, Video
from envs.geometry import (
    KEYPOINT_NAMES,
    SKELETON,
    joint_angles,
    joint_displacement,
    limb_motion,
    link_identities,
)
from envs.yolo import FrameTool, default_pose_weights, load_yolo, predict, ultralytics_offline_env

__all__ = ["KEYPOINT_NAMES", "PoseEstimationTool", "default_pose_weights", "format_person", "ultralytics_offline_env"]

MIN_KEYPOINT_CONF = 0.3  # keypoints below this are left out of the text: mostly occluded or guessed
MAX_OVERLAYS = 4  # overlay images per call: each costs the policy image tokens


class PoseEstimationTool(FrameTool):
    """YOLO11-pose on up to `max_frames` of the sampled frames, in one batched predict call."""

    name = "pose_estimation"

    def __init__(
        self,
        weights: str | None = None,
        device: str = "cpu",
        imgsz: int = 320,
        conf: float = 0.25,
        max_frames: int = 8,
        top_limbs: int = 3,
    ):
        self.weights = weights or default_pose_weights()
        self.model = load_yolo(self.weights, "pose")
        self.device, self.imgsz, self.conf = device, imgsz, conf
        self.max_frames, self.top_limbs = max_frames, top_limbs
        self.schema = {
            "type": "function",
            "function": {
                "name": self.name,
                "description": (
                    "Body pose of the people in sampled frames: per frame and person (0 = largest), the box "
                    "[x1,y1,x2,y2], visible COCO keypoints as name:(x,y,confidence) and joint angles in degrees; "
                    "then the limbs that move most across the frames."
                ),
                "parameters": {
                    "type": "object",
                    "properties": {
                        "frames": {
                            "type": "array",
                            "description": f"indices of the sampled frames to analyse (default: up to {max_frames} "
                            "frames spread over the video)",
                            "items": {"type": "integer", "minimum": 0},
                            "minItems": 1,
                            "maxItems": max_frames,
                            "uniqueItems": True,
                        },
                        "person": {
                            "type": "integer",
                            "description": "report only this person (0 = the largest)",
                            "minimum": 0,
                            "maximum": 99,
                        },
                        "overlay": {
                            "type": "boolean",
                            "description": f"also return up to {MAX_OVERLAYS} frames with the skeletons drawn",
                        },
                    },
                    "additionalProperties": False,
                },
            },
        }

    def detect(self, frames: list[np.ndarray]) -> list[list[dict[str, Any]]]:
        """People per frame (RGB uint8 H x W x 3 each), sorted by decreasing box area."""
        out = []
        for r in predict(self.model, frames, self.imgsz, self.conf, self.device):
            boxes = r.boxes.xyxy.cpu().numpy() if r.boxes is not None else np.zeros((0, 4))
            scores = r.boxes.conf.cpu().numpy() if r.boxes is not None else np.zeros(0)
            kpts = r.keypoints.data.cpu().numpy() if r.keypoints is not None else np.zeros((0, 17, 3))
            areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
            people = [
                {"box": boxes[j].tolist(), "score": float(scores[j]), "keypoints": kpts[j].tolist()}
                for j in np.argsort(-areas, kind="stable")
            ]
            out.append(people)
        return out

    def render(self, args: dict[str, Any], video: Video, frame_ids: list[int], detections: list) -> ToolResult:
        person = args.get("person")
        ids = link_identities([[p["box"] for p in people] for people in detections])
        lines, data_frames = [], []
        for i, people, pids in zip(frame_ids, detections, ids):
            t = float(video.timestamps[i]) if i < len(video.timestamps) else float("nan")
            n = len(people)
            lines.append(f"frame {i} (t={t:.2f}s): {n} {'person' if n == 1 else 'people'}")
            chosen = list(range(n)) if person is None else [person] if person < n else []
            if person is not None and not chosen:
                lines.append(f"  no person {person} in this frame")
            for j in chosen:
                p = {**people[j], "id": pids[j], "angles": joint_angles(people[j]["keypoints"], MIN_KEYPOINT_CONF)}
                lines.append(f"  person {j} (id {pids[j]}): {format_person(p)}")
                if p["angles"]:
                    lines.append("    angles: " + ", ".join(f"{k} {v:.0f}" for k, v in p["angles"].items()))
                people[j] = p
            data_frames.append({"frame": i, "t": t, "people": [people[j] for j in chosen]})
        motion = self._motion(data_frames)
        for m in motion:
            top = ", ".join(f"{limb} {v:.2f}" for limb, v in m["top_limbs"]) or "no limb seen twice"
            frames = ",".join(str(f) for f in m["frames"])
            lines.append(f"motion of id {m['id']} over frames {frames} (path / box height): most moving {top}")
        images = self._overlays(video, data_frames) if args.get("overlay") else []
        data = {"keypoint_names": list(KEYPOINT_NAMES), "frames": data_frames, "motion": motion}
        return ToolResult(text="\n".join(lines), images=images, data=data)

    def _motion(self, data_frames: list[dict]) -> list[dict]:
        """Per identity seen in at least two of the analysed frames: per-joint displacement and the top limbs."""
        tracks: dict[int, list[tuple[int, dict]]] = {}
        for f in data_frames:
            for p in f["people"]:
                tracks.setdefault(p["id"], []).append((f["frame"], p))
        out = []
        for pid, seen in sorted(tracks.items()):
            if len(seen) < 2:
                continue
            seen.sort(key=lambda s: s[0])  # frames may be asked for in any order; motion follows time
            height = float(np.mean([p["box"][3] - p["box"][1] for _, p in seen]))
            disp = joint_displacement([p["keypoints"] for _, p in seen], height, MIN_KEYPOINT_CONF)
            out.append(
                {
                    "id": pid,
                    "frames": [f for f, _ in seen],
                    "displacement": disp,
                    "top_limbs": limb_motion(disp, self.top_limbs),
                }
            )
        return out

    def _overlays(self, video: Video, data_frames: list[dict]) -> list[np.ndarray]:
        return [draw_skeletons(video.frames[f["frame"]], f["people"]) for f in data_frames[:MAX_OVERLAYS]]


def draw_skeletons(frame: np.ndarray, people: list[dict], min_conf: float = MIN_KEYPOINT_CONF) -> np.ndarray:
    """A copy of the RGB frame with each person's box and confident skeleton segments drawn."""
    import cv2

    out = np.ascontiguousarray(frame.copy())
    thick = max(1, round(max(frame.shape[:2]) / 200))
    index = {n: k for k, n in enumerate(KEYPOINT_NAMES)}
    for p in people:
        x1, y1, x2, y2 = (int(round(v)) for v in p["box"])
        cv2.rectangle(out, (x1, y1), (x2, y2), (0, 255, 0), thick)
        kp = p["keypoints"]
        for a, b in SKELETON:
            ka, kb = kp[index[a]], kp[index[b]]
            if ka[2] >= min_conf and kb[2] >= min_conf:
                pa, pb = (int(round(ka[0])), int(round(ka[1]))), (int(round(kb[0])), int(round(kb[1])))
                cv2.line(out, pa, pb, (255, 0, 0), thick)
    return out


def format_person(person: dict[str, Any], min_conf: float = MIN_KEYPOINT_CONF) -> str:
    """One person as text: integer pixel box and the confident keypoints.

    >>> kp = [[0.0, 0.0, 0.1]] * 17
    >>> kp[0] = [10.4, 20.6, 0.912]
    >>> format_person({"box": [1.2, 2.7, 30.5, 40.0], "keypoints": kp})
    'box [1,3,30,40] nose:(10,21,0.91)'
    """
    x1, y1, x2, y2 = (int(round(v)) for v in person["box"])
    parts = [f"box [{x1},{y1},{x2},{y2}]"]
    for name, (x, y, c) in zip(KEYPOINT_NAMES, person["keypoints"]):
        if c >= min_conf:
            parts.append(f"{name}:({int(round(x))},{int(round(y))},{c:.2f})")
    return " ".join(parts)
