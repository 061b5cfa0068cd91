"""Where a GRPO step's wall time goes: rollout (generation), tools, rewards, train, weight sync, and the rest.

Runs the Video-STAR recipe with its default config (plus any `key=value` overrides given here) for a few steps
in a temporary run directory, leaves out the first step (start-up: model loads, first tool calls) and the last
(it starts no next rollout), and prints the mean seconds per phase, each phase's share of the step, and the share
spent outside model compute (everything but generation and training).

    python benchmarks/step_breakdown.py                 # the embedded default
    python benchmarks/step_breakdown.py run.steps=6 rollout.n=8
    python benchmarks/step_breakdown.py --timeline timeline.png rollout.staleness=1

`--timeline PATH` also draws when each actor is busy over the two steps before the last (Ray's task events,
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
    """Mean seconds per phase over the given steps; "other" is the step time no phase accounts for.

    With rollout.staleness=1 the rollout runs while the trainer trains: its generation and tool seconds count as
    far as the step waited for them (`time/rollout_wait`), shared between the two as in the whole rollout, and the
    rest is reported as "hidden" (run under training), not as part of the step."""
    if not rows:
        raise ValueError("no steps to summarise")
    exposed = [_exposed(r) for r in rows]
    mean = {p: sum(e[p] for e in exposed) / len(rows) for p in PHASES}
    mean["step"] = sum(r["time/step"] for r in rows) / len(rows)
    mean["other"] = max(0.0, mean["step"] - sum(mean[p] for p in PHASES))
    mean["hidden"] = sum(e["hidden"] for e in exposed) / len(rows)
    return mean


def _exposed(row: dict) -> dict[str, float]:
    """One step's phase seconds, the rollout's (generation and tools) cut to what the step waited for."""
    out = {p: row[f"time/{p}"] for p in PHASES}
    whole = out["rollout"] + out["tools"]
    waited = min(row.get("time/rollout_wait", whole), whole)
    share = waited / whole if whole > 0 else 1.0
    out["rollout"], out["tools"], out["hidden"] = out["rollout"] * share, out["tools"] * share, whole - waited
    return out


def report(mean: dict[str, float]) -> str:
    step = mean["step"]
    lines = [f"{'phase':<10}{'seconds':>10}{'share':>9}"]
    for phase in (*PHASES, "other"):
        lines.append(f"{phase:<10}{mean[phase]:>10.3f}{mean[phase] / step:>9.1%}")
    lines.append(f"{'step':<10}{step:>10.3f}{1:>9.1%}")
    if mean.get("hidden", 0.0) > 0:
        lines.append(f"rollout seconds hidden under training (rollout.staleness=1): {mean['hidden']:.3f}")
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
        overrides = [f"run.run_dir={tmp}/run", "run.steps=5", "run.save_every=1000", *argv]
        videostar_grpo.main(overrides)
        rows = [json.loads(line) for line in (Path(tmp) / "run" / "metrics.jsonl").read_text().splitlines()]
    steady = steady_steps(rows)
    print(f"\nstep time breakdown over steps {int(steady[0]['step'])}-{int(steady[-1]['step'])}:")
    print(report(breakdown(steady)))
    if timeline is not None:
        draw_timeline(rows, timeline, " ".join(a for a in argv if "/" not in a))  # settings, not paths


def steady_steps(rows: list[dict]) -> list[dict]:
    """The steps to average: not the first (start-up: model loads, first tool calls) and, from 3 steps on, not the
    last (with rollout.staleness=1 it starts no rollout for a next step, so it would look cheaper).

    >>> [r["step"] for r in steady_steps([{"step": k} for k in (1, 2, 3, 4)])], len(steady_steps([{"step": 1}]))
    ([2, 3], 1)
    """
    if len(rows) >= 3:
        return rows[1:-1]
    return rows[1:] or rows


def draw_timeline(rows: list[dict], out: Path, settings: str) -> None:
    """The actors' busy time over the last two steps (from the end of the step before them) as a PNG."""
    import ray

    from benchmarks.timeline import busy_spans, plot_timeline

    if len(rows) < 4:
        raise SystemExit("--timeline needs run.steps >= 4 (two steps between the first and the last)")
    # the two steps before the last: the last starts no rollout for a step after it
    first, last = rows[-3], rows[-2]
    spans = busy_spans(ray.timeline(), rows[-4]["time/end"], last["time/end"])
    steps = f"steps {int(first['step'])}-{int(last['step'])}"
    plot_timeline(spans, out, f"{steps}: when each actor is busy ({settings or 'default'})")
    print(f"timeline of {steps}: {out}")


if __name__ == "__main__":
    main(sys.argv[1:])
