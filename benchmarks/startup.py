"""Start-up cost of a GRPO run: how long until the actors start, until the first rollout, until the first step
ends, and how much memory the tool actors hold, for one or more settings run in turn (interleaved) in one run.

Each run is the Video-STAR recipe's embedded default without its cold start (`cold_start.steps=0`, 2 steps), in a
fresh process with its own local Ray, plus the variant's `key=value` overrides. From Ray's task events: when the
first actor's constructor began (everything before it is the driver: imports, config checks, `ray.init`), when
the first rollout began (the rollout worker's start-up, and the tool actors its prompt waits for), and when the
first step ended; then the steady cost of step 2, for scale. A sampler reads the resident memory of the tool
actor processes (`ray::ToolActor`) every 0.2 s and keeps the peak of their sum.

    python benchmarks/startup.py                                         # the default, 3 runs
    python benchmarks/startup.py --repeats 2 --variant "" --variant "rollout.tool_pool.share_process=true"

Prints each run, then the median of each figure per variant and each variant's ratio to the first. The machine's
load moves every figure: compare the variants of one run, not runs.
"""

from __future__ import annotations

import argparse
import json
import shlex
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

FIGURES = ("actors_start", "first_rollout", "step1_end", "step2", "tool_processes", "tool_rss_mb")
MARK = "STARTUP "


def figures(events: list[dict], rows: list[dict], t0: float) -> dict[str, float]:
    """The start-up figures (seconds from `t0`, unix time) from Ray timeline `events` (chrome-trace dicts, ts in
    microseconds) and the run's metrics rows.

    >>> ev = [{"cat": "task::TrainerRank.__init__", "ph": "X", "ts": 105e6, "dur": 1e6},
    ...       {"cat": "task::RolloutWorker.__init__", "ph": "X", "ts": 104e6, "dur": 9e6},
    ...       {"cat": "task::RolloutWorker.rollout", "ph": "X", "ts": 113e6, "dur": 3e6},
    ...       {"cat": "task::RolloutWorker.rollout", "ph": "X", "ts": 120e6, "dur": 3e6}]
    >>> figures(ev, [{"time/end": 118.0, "time/step": 5.0}, {"time/end": 124.0, "time/step": 6.0}], 100.0)
    {'actors_start': 4.0, 'first_rollout': 13.0, 'step1_end': 18.0, 'step2': 6.0}
    """
    tasks = [e for e in events if e.get("ph") == "X" and str(e.get("cat", "")).startswith("task::")]
    inits = [e["ts"] / 1e6 for e in tasks if e["cat"].endswith(".__init__")]
    rollouts = [e["ts"] / 1e6 for e in tasks if e["cat"] == "task::RolloutWorker.rollout"]
    if not inits or not rollouts or len(rows) < 2:
        raise ValueError("the run has no actor start, no rollout or fewer than 2 steps in its task events")
    return {
        "actors_start": round(min(inits) - t0, 2),
        "first_rollout": round(min(rollouts) - t0, 2),
        "step1_end": round(rows[0]["time/end"] - t0, 2),
        "step2": round(rows[1]["time/step"], 2),
    }


class ToolMemory:
    """Samples the resident memory of the `ray::ToolActor` processes in a thread; `peak()` is the largest sum seen
    (MB) and the number of processes then."""

    def __init__(self, every_s: float = 0.2, prefix: str = "ray::ToolActor"):
        self.every_s, self.prefix, self.best = every_s, prefix, (0.0, 0)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> ToolMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        import psutil

        while not self._stop.wait(self.every_s):
            rss = []
            for p in psutil.process_iter(["cmdline", "memory_info"]):
                cmd = p.info["cmdline"] or []
                if cmd and cmd[0].startswith(self.prefix) and p.info["memory_info"] is not None:
                    rss.append(p.info["memory_info"].rss / 2**20)
            if sum(rss) > self.best[0]:
                self.best = (sum(rss), len(rss))

    def peak(self) -> dict[str, float]:
        return {"tool_processes": self.best[1], "tool_rss_mb": round(self.best[0])}


def child(overrides: list[str]) -> None:
    """One run, in this process; prints its figures as one JSON line after MARK."""
    t0 = time.time()
    import ray

    from recipes import videostar_grpo

    with tempfile.TemporaryDirectory(prefix="startup-") as tmp, ToolMemory() as memory:
        run = [f"run.run_dir={tmp}/run", "cold_start.steps=0", "run.steps=2", "run.save_every=1000", *overrides]
        videostar_grpo.main(run)
        rows = [json.loads(line) for line in (Path(tmp) / "run" / "metrics.jsonl").read_text().splitlines()]
        out = figures(ray.timeline(), rows, t0)
    print(MARK + json.dumps(out | memory.peak()), flush=True)


def run_once(variant: str) -> dict[str, float]:
    cmd = [sys.executable, __file__, "--child", *shlex.split(variant)]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith(MARK)]
    if proc.returncode or not lines:
        raise SystemExit(f"run {variant!r} failed ({proc.returncode}):\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}")
    return json.loads(lines[-1][len(MARK) :])


def summary(results: dict[str, list[dict]]) -> str:
    """Median of each figure per variant, then each variant's ratio to the first.

    >>> print(summary({"": [{"step1_end": 20.0}, {"step1_end": 30.0}], "x=1": [{"step1_end": 20.0}]}))
    figure      default      x=1
    step1_end     25.00    20.00
    ratio to the first:
    step1_end               0.80
    """
    names = list(results)
    keys = [k for k in FIGURES if all(k in r for rs in results.values() for r in rs)]
    med = {v: {k: statistics.median(r[k] for r in results[v]) for k in keys} for v in names}
    width = max(len(v or "default") for v in names) + 2
    lines = ["figure    " + "".join(f"{(v or 'default'):>{width}}" for v in names)]
    lines += [f"{k:<10}" + "".join(f"{med[v][k]:>{width}.2f}" for v in names) for k in keys]
    lines.append("ratio to the first:")
    for k in keys:
        base = med[names[0]][k]
        cells = "".join(f"{(med[v][k] / base if base else float('nan')):>{width}.2f}" for v in names[1:])
        lines.append(f"{k:<10}" + " " * width + cells)
    return "\n".join(lines)


def main(argv: list[str]) -> None:
    if argv[:1] == ["--child"]:
        return child(argv[1:])
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variant", action="append", help="space-separated key=value overrides (repeatable)")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    variants = args.variant or [""]
    results: dict[str, list[dict]] = {v: [] for v in variants}
    for k in range(args.repeats):
        for v in variants:
            results[v].append(run_once(v))
            print(f"run {k + 1}/{args.repeats} {v or 'default'}: {json.dumps(results[v][-1])}", flush=True)
    print(summary(results))


if __name__ == "__main__":
    main(sys.argv[1:])
