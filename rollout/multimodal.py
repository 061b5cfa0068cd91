"""Turn raw frames and images into the model's vision inputs, shared by the `hf` engine and the rollout worker.

The trainer rebuilds a trajectory's model inputs with the same helpers: `expand_placeholders(prompt_ids +
response_ids, mask, video_grid_thw=..., image_grid_thw=...)` and `mm_token_type_ids(expanded_ids)`, which
Qwen2.5-VL's 3D rope needs (without it transformers silently falls back to 1D positions and log-probs drift).

Both must produce the same tensors: the engine samples with them and the trainer recomputes log-probs with the
`mm_inputs` the worker stores in the trajectory, so any difference would show up as a log-prob mismatch.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from rollout.trajectory import IMAGE_PAD_ID, VIDEO_PAD_ID, expand_placeholders

__all__ = [
    "DEFAULT_SECONDS_PER_FRAME",
    "VISION_TOKEN_IDS",
    "concat_inputs",
    "expand_placeholders",
    "mm_token_type_ids",
    "process_images",
    "process_video",
    "seconds_per_frame",
]

VISION_TOKEN_IDS = (151652, 151653, 151654, 151655, 151656)  # vision_start/end, vision/image/video pad
DEFAULT_SECONDS_PER_FRAME = 0.5  # the Qwen2.5-VL processor's default of 2 sampled frames per second


def seconds_per_frame(timestamps: list[float] | None) -> float:
    """Mean spacing of the sampled frames (seconds); the processor default when it cannot be known.

    >>> seconds_per_frame([0.0, 0.5, 1.0])
    0.5
    >>> seconds_per_frame([3.0])
    0.5
    """
    if not timestamps or len(timestamps) < 2:
        return DEFAULT_SECONDS_PER_FRAME
    step = (timestamps[-1] - timestamps[0]) / (len(timestamps) - 1)
    return float(step) if step > 0 else DEFAULT_SECONDS_PER_FRAME


def process_video(processor: Any, frames: np.ndarray, seconds_per_frame: float) -> dict[str, np.ndarray]:
    """pixel_values_videos, video_grid_thw and second_per_grid_ts (numpy) of one T x H x W x 3 uint8 video."""
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"video frames must be T x H x W x 3, got shape {tuple(frames.shape)}")
    out = processor.video_processor(videos=[frames], return_tensors="np")
    temporal = int(getattr(processor.video_processor, "temporal_patch_size", 2))
    return {
        "pixel_values_videos": np.asarray(out["pixel_values_videos"], dtype=np.float32),
        "video_grid_thw": np.asarray(out["video_grid_thw"], dtype=np.int64),
        "second_per_grid_ts": np.asarray([temporal * seconds_per_frame], dtype=np.float32),
    }


def process_images(processor: Any, images: list[np.ndarray]) -> dict[str, np.ndarray]:
    """pixel_values and image_grid_thw (numpy) of a list of H x W x 3 uint8 images; empty dict for no images."""
    if not images:
        return {}
    out = processor.image_processor(images=list(images), return_tensors="np")
    return {
        "pixel_values": np.asarray(out["pixel_values"], dtype=np.float32),
        "image_grid_thw": np.asarray(out["image_grid_thw"], dtype=np.int64),
    }


def concat_inputs(parts: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Concatenate processed inputs of several videos / images along the first axis, key by key."""
    keys = {k for p in parts for k in p}
    return {k: np.concatenate([p[k] for p in parts if k in p], axis=0) for k in sorted(keys)}


def mm_token_type_ids(ids: list[int]) -> list[int]:
    """0 for text, 1 for image placeholder, 2 for video placeholder tokens (what Qwen2.5-VL's 3D rope reads).

    >>> mm_token_type_ids([1, IMAGE_PAD_ID, VIDEO_PAD_ID])
    [0, 1, 2]
    """
    return [1 if t == IMAGE_PAD_ID else 2 if t == VIDEO_PAD_ID else 0 for t in ids]
