"""Video decoding for tools and rollouts: uniformly sampled RGB frames of a clip window.

decord is the fast path (random access, ~30 ms for 8 frames); PyAV is the fallback where decord is missing or
cannot open the file. Both give the same frames: RGB uint8, T x H x W x 3, optionally resized so the longest side
is at most `max_side`.

>>> # video = read_video("clip.mp4", num_frames=8, clip=(1.0, 3.0), max_side=448)

A tool given a path instead of a `Video` decodes it with `as_video`: the rollout's default sampling
(`DEFAULT_NUM_FRAMES` frames over the whole clip, longest side at most `DEFAULT_MAX_SIDE`).
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from envs.base import Video

BACKENDS = ("auto", "decord", "av")
# The rollout config's defaults, so that a tool tried on a path sees frames like the policy's.
DEFAULT_NUM_FRAMES = 8
DEFAULT_MAX_SIDE = 448


class VideoDecodeError(ValueError):
    """A video that cannot be read: missing, empty, corrupt, or without frames in the requested window."""

    def __init__(self, path: str, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"cannot decode video {self.path}: {reason}")


def video_key(path: str, clip: Sequence[float] | None = None, num_frames: int = 8, max_side: int | None = None) -> str:
    """Identity of a decoded sample for caching: the file (path, size, mtime), the clip window and the sampling.

    A file rewritten in place gets a new key because its size or mtime changes.
    """
    st = os.stat(path)
    window = "full" if clip is None else f"{float(clip[0]):.3f}-{float(clip[1]):.3f}"
    return f"{os.path.abspath(path)}|{st.st_size}|{st.st_mtime_ns}|{window}|n{num_frames}|s{max_side}"


def sample_indices(num_total: int, fps: float, num_frames: int, clip: Sequence[float] | None = None) -> np.ndarray:
    """Indices of `num_frames` frames spread uniformly (first and last included) over the clip window.

    >>> sample_indices(250, 25.0, 3).tolist()
    [0, 124, 249]
    >>> sample_indices(250, 25.0, 3, clip=(1.0, 2.0)).tolist()
    [25, 38, 50]
    """
    if num_total <= 0:
        raise ValueError("the video has no frames")
    lo, hi = 0, num_total - 1
    if clip is not None:
        start_s, end_s = float(clip[0]), float(clip[1])
        if not end_s > start_s >= 0:
            raise ValueError(f"bad clip window [{start_s}, {end_s}]: need 0 <= start < end")
        lo = max(lo, math.ceil(start_s * fps - 1e-6))
        hi = min(hi, math.floor(end_s * fps + 1e-6))
        if lo > hi:
            duration = num_total / fps
            raise ValueError(f"clip window [{start_s}, {end_s}] s is outside the video (duration {duration:.2f} s)")
    return np.rint(np.linspace(lo, hi, num_frames)).astype(np.int64)


def resize_frames(frames: np.ndarray, max_side: int | None) -> np.ndarray:
    """Shrink T x H x W x 3 frames (keeping the aspect ratio) so the longest side is at most `max_side`."""
    if max_side is None:
        return frames
    h, w = frames.shape[1:3]
    scale = max_side / max(h, w)
    if scale >= 1.0:
        return frames
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    import cv2

    return np.stack([cv2.resize(f, size, interpolation=cv2.INTER_AREA) for f in frames])


def _read_decord(path: str, num_frames: int, clip) -> tuple[np.ndarray, list[float]]:
    import decord

    vr = decord.VideoReader(path, num_threads=1)
    fps = float(vr.get_avg_fps()) or 25.0
    idx = sample_indices(len(vr), fps, num_frames, clip)
    frames = vr.get_batch(idx.tolist()).asnumpy()
    return frames, [float(i) / fps for i in idx]


def _read_av(path: str, num_frames: int, clip) -> tuple[np.ndarray, list[float]]:
    import av

    with av.open(path) as container:
        stream = container.streams.video[0]
        fps = float(stream.average_rate or stream.guessed_rate or 25.0)
        total = stream.frames
        if not total:  # some containers do not store the frame count: decode once to count
            total = sum(1 for _ in container.decode(stream))
            container.seek(0)
        idx = sample_indices(total, fps, num_frames, clip)
        wanted: dict[int, list[int]] = {}
        for pos, i in enumerate(idx.tolist()):
            wanted.setdefault(i, []).append(pos)
        out: list[np.ndarray | None] = [None] * len(idx)
        last = int(idx.max())
        # Sequential decode: sample clips are short, and seeking by frame index is unreliable across codecs.
        for i, frame in enumerate(container.decode(stream)):
            if i in wanted:
                rgb = frame.to_ndarray(format="rgb24")
                for pos in wanted[i]:
                    out[pos] = rgb
            if i >= last:
                break
    if any(f is None for f in out):
        got = sum(f is not None for f in out)
        raise ValueError(f"decoded only {got} of {len(out)} sampled frames (the stream ends early)")
    return np.stack(out), [float(i) / fps for i in idx]


def read_video(
    path: str | os.PathLike,
    num_frames: int = DEFAULT_NUM_FRAMES,
    clip: Sequence[float] | None = None,
    max_side: int | None = None,
    backend: str = "auto",
) -> Video:
    """Decode `num_frames` uniformly sampled RGB frames of `path` (within `clip` = [start_s, end_s] if given).

    Returns a `Video` with frames T x H x W x 3 uint8, timestamps in seconds (of the source video) and a cache
    key. `backend` is "auto" (decord, then PyAV), "decord" or "av". Raises `VideoDecodeError` naming the file
    when it is missing, empty, corrupt or has no frame in the window.
    """
    path = os.fspath(path)
    if backend not in BACKENDS:
        raise ValueError(f"unknown video backend {backend!r}; choose one of {BACKENDS}")
    if num_frames < 1:
        raise ValueError(f"num_frames must be >= 1, got {num_frames}")
    if not os.path.isfile(path):
        raise VideoDecodeError(path, "no such file")
    if os.path.getsize(path) == 0:
        raise VideoDecodeError(path, "the file is empty")
    readers = {"decord": _read_decord, "av": _read_av}
    order = ["decord", "av"] if backend == "auto" else [backend]
    reasons = []
    for name in order:
        try:
            frames, timestamps = readers[name](path, num_frames, clip)
        except ImportError as exc:
            reasons.append(f"{name} is not installed ({exc})")
            continue
        except Exception as exc:  # each library raises its own error types for broken files
            reasons.append(f"{name}: {str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__}")
            continue
        frames = resize_frames(np.ascontiguousarray(frames, dtype=np.uint8), max_side)
        return Video(frames=frames, timestamps=timestamps, path=path, key=video_key(path, clip, num_frames, max_side))
    raise VideoDecodeError(path, "; ".join(reasons))


def as_video(video: Any) -> Any:
    """A path (str or os.PathLike) decoded by `read_video` with `DEFAULT_NUM_FRAMES` frames over the whole clip and
    the longest side at most `DEFAULT_MAX_SIDE`; anything else (a `Video`, an object ref) as it is.

    Raises `VideoDecodeError` naming the file when the path cannot be decoded:

    >>> as_video("no/such/clip.mp4")
    Traceback (most recent call last):
    envs.video.VideoDecodeError: cannot decode video no/such/clip.mp4: no such file
    """
    if isinstance(video, (str, os.PathLike)):
        return read_video(video, num_frames=DEFAULT_NUM_FRAMES, max_side=DEFAULT_MAX_SIDE)
    return video
