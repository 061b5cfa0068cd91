"""Where a GRPO step's wall time goes: rollout (generation), tools, rewards, train, weight sync, and the rest.

Runs the Video-STAR recipe with its default config (plus any `key=value` overrides given here) for a few steps
in a temporary run directory, leaves out the first step (start-up: model loads, first tool calls), and prints the
mean seconds per phase, each phase's share of the step, and the share spent outside model compute (everything
but generation and training).

    python benchmarks/step_breakdown.py                 # the embedded default
    python benchmarks/step_breakdown.py run.steps=6 rollout.n=8
    python benchmarks/step_breakdown.py --timeline timeline.png rollout.staleness=1

`--timeline PATH` also draws when each actor is busy over the last two steps (Ray's task events,
benchmarks/timeline.py): with rollout.staleness=1 the rollout worker's bars run under the trainer ranks'.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

PHASES = ("rollout", "tools", "rewards", "train", "sync")


def breakdown(rows: list[dict]) -> dict[str, float]:
    """Mean seconds per phase over the given steps; "other" is the step time no phase accounts for."""
    if not rows:
        raise ValueError("no steps to summarise")
    mean = {p: sum(r[f"time/{p}"] for r in rows) / len(rows) for p in PHASES}
    mean["step"] = sum(r["time/step"] for r in rows) / len(rows)
    mean["other"] = max(0.0, mean["step"] - sum(mean[p] for p in PHASES))
    return mean


def report(mean: dict[str, float]) -> str:
    step = mean["step"]
    lines = [f"{'phase':<10}{'seconds':>10}{'share':>9}"]
    for phase in (*PHASES, "other"):
        lines.append(f"{phase:<10}{mean[phase]:>10.3f}{mean[phase] / step:>9.1%}")
    lines.append(f"{'step':<10}{step:>10.3f}{1:>9.1%}")
    outside = (step - mean["rollout"] - mean["train"]) / step
    lines.append(f"outside model compute (tools + rewards + sync + other): {outside:.1%}")
    return "\n".join(lines)


def main(argv: list[str]) -> None:
    from recipes import videostar_grpo

    timeline = None
    if "--timeline" in argv:
        at = argv.index("--timeline")
        timeline, argv = Path(argv[at + 1]), argv[:at] + argv[at + 2 :]
    with tempfile.TemporaryDirectory(prefix="step-breakdown-") as tmp:
        overrides = [f"run.run_dir={tmp}/run", "run.steps=4", "run.save_every=1000", *argv]
        videostar_grpo.main(overrides)
        rows = [json.loads(line) for line in (Path(tmp) / "run" / "metrics.jsonl").read_text().splitlines()]
    steady = rows[1:] or rows
    print(f"\nstep time breakdown over steps {int(steady[0]['step'])}-{int(steady[-1]['step'])}:")
    print(report(breakdown(steady)))
    if timeline is not None:
        draw_timeline(rows, timeline, " ".join(argv))


def draw_timeline(rows: list[dict], out: Path, settings: str) -> None:
    """The actors' busy time over the last two steps (from the end of the step before them) as a PNG."""
    import ray

    from benchmarks.timeline import busy_spans, plot_timeline

    if len(rows) < 3:
        raise SystemExit("--timeline needs run.steps >= 3 (two steps after the one before them)")
    start, end = rows[-3]["time/end"], rows[-1]["time/end"]
    spans = busy_spans(ray.timeline(), start, end)
    title = f"steps {int(rows[-2]['step'])}-{int(rows[-1]['step'])}: when each actor is busy ({settings or 'default'})"
    plot_timeline(spans, out, title)
    print(f"timeline of steps {int(rows[-2]['step'])}-{int(rows[-1]['step'])}: {out}")


if __name__ == "__main__":
    main(sys.argv[1:])
