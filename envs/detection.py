"""The `human_detection` tool: people boxes per sampled frame, the count, and identities that persist across frames.

    frame 2 (t=1.00s): 2 people
      id 0 left: box [30,13,175,143] 0.94
      id 1 right: box [200,15,340,143] 0.87
    people seen: 2 (id 0 in 4 frames, mostly left; id 1 in 4 frames, mostly right)

Identities are linked by largest box overlap between frames (`envs.geometry.link_identities`), so "the person on
the left" stays the same id. Any YOLO detection weights serve (`weights=`, COCO class 0 is a person); without
them the pose model's person boxes are used (YOLO11-pose detects exactly people), and the reply says so.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import numpy as np

from envs.base import ToolResult, Video
from envs.geometry import horizontal_place, link_identities
from envs.yolo import FrameTool, default_pose_weights, load_yolo, predict

PERSON_CLASS = 0  # COCO


class HumanDetectionTool(FrameTool):
    """YOLO11 people detection on up to `max_frames` sampled frames in one batched predict, with identity linking."""

    name = "human_detection"

    def __init__(
        self,
        weights: str | None = None,
        device: str = "cpu",
        imgsz: int = 320,
        conf: float = 0.25,
        max_frames: int = 8,
        min_iou: float = 0.2,
    ):
        if weights:
            self.source = f"detection model {weights}"
            self.model, self.classes = load_yolo(weights, "detect"), [PERSON_CLASS]
        else:  # no detection weights offline: a pose model is a person detector (its only class is "person")
            weights = default_pose_weights()
            self.source = "the pose model's person boxes (no detection weights configured)"
            self.model, self.classes = load_yolo(weights, "pose"), None
        self.weights = weights
        self.device, self.imgsz, self.conf, self.max_frames, self.min_iou = device, imgsz, conf, max_frames, min_iou
        self.schema = {
            "type": "function",
            "function": {
                "name": self.name,
                "description": (
                    "Count the people in sampled frames: per frame, each person's id (the same across frames), "
                    "place (left/center/right) and box [x1,y1,x2,y2]."
                ),
                "parameters": {
                    "type": "object",
                    "properties": {
                        "frames": {
                            "type": "array",
                            "description": f"indices of the sampled frames to look at (default: up to {max_frames} "
                            "frames spread over the video)",
                            "items": {"type": "integer", "minimum": 0},
                            "minItems": 1,
                            "maxItems": max_frames,
                            "uniqueItems": True,
                        },
                    },
                    "additionalProperties": False,
                },
            },
        }

    def detect(self, frames: list[np.ndarray]) -> list[list[dict[str, Any]]]:
        """People per frame (RGB uint8 H x W x 3 each), sorted by decreasing box area."""
        extra = {"classes": self.classes} if self.classes is not None else {}
        out = []
        for r in predict(self.model, frames, self.imgsz, self.conf, self.device, **extra):
            boxes = r.boxes.xyxy.cpu().numpy() if r.boxes is not None else np.zeros((0, 4))
            scores = r.boxes.conf.cpu().numpy() if r.boxes is not None else np.zeros(0)
            areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
            order = np.argsort(-areas, kind="stable")
            out.append([{"box": boxes[j].tolist(), "score": float(scores[j])} for j in order])
        return out

    def render(self, args: dict[str, Any], video: Video, frame_ids: list[int], detections: list) -> ToolResult:
        # link in time order whatever order the frames were asked in
        order = sorted(range(len(frame_ids)), key=lambda k: frame_ids[k])
        linked = link_identities([[p["box"] for p in detections[k]] for k in order], self.min_iou)
        ids = {k: pids for k, pids in zip(order, linked)}
        lines, data_frames, places = [], [], {}
        for k, (i, people) in enumerate(zip(frame_ids, detections)):
            t = float(video.timestamps[i]) if i < len(video.timestamps) else float("nan")
            width = video.frames[i].shape[1]
            n = len(people)
            lines.append(f"frame {i} (t={t:.2f}s): {n} {'person' if n == 1 else 'people'}")
            for p, pid in zip(people, ids[k]):
                p["id"], p["place"] = pid, horizontal_place(p["box"], width)
                places.setdefault(pid, []).append(p["place"])
                x1, y1, x2, y2 = (int(round(v)) for v in p["box"])
                lines.append(f"  id {pid} {p['place']}: box [{x1},{y1},{x2},{y2}] {p['score']:.2f}")
            data_frames.append({"frame": i, "t": t, "count": n, "people": people})
        summary = [
            f"id {pid} in {len(seen)} frame{'s' if len(seen) > 1 else ''}, mostly {Counter(seen).most_common(1)[0][0]}"
            for pid, seen in sorted(places.items())
        ]
        lines.append(f"people seen: {len(places)}" + (f" ({'; '.join(summary)})" if summary else ""))
        data = {"frames": data_frames, "num_identities": len(places), "source": self.source}
        if self.classes is None:
            lines.append("(boxes from the pose model)")
        return ToolResult(text="\n".join(lines), data=data)
