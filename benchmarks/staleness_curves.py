"""Does one-step off-policy GRPO learn as the synchronous loop does? The same run at rollout.staleness 0 and 1.

The run is the learning test's (tests/recipes/test_grpo_learns.py): the Video-STAR recipe on the embedded model
without its cold start, one reward that the untrained model already varies on (the share of its tokens on one side
of the initial embedding, `tests.recipes.token_reward`), G = 8, 16 tokens, one turn. Both runs start from the same
weights with the same seeds, so their first steps sample the same batches with the same weights; from step 2 on
the staleness-1 run trains on a batch sampled one update earlier. Prints the reward and seconds per step of each,
and draws both reward curves into one PNG.

    python benchmarks/staleness_curves.py --out docs/img/staleness_curves.png [--steps 8] [key=value ...]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

REWARD = "reward/tests.recipes.token_reward:embedding_side_share_mean"


def overrides(run_dir: Path, steps: int, staleness: int, model_dir: str) -> list[str]:
    """The learning test's settings at `staleness`."""
    plugin = "'tests.recipes.token_reward:embedding_side_share'"
    reward = f"{{name: {plugin}, weight: 1.0, args: {{model_dir: {model_dir}}}}}"
    return [
        f"run.run_dir={run_dir}",
        f"run.steps={steps}",
        f"run.save_every={steps}",
        "cold_start.steps=0",
        f"rewards.components=[{reward}]",
        "data.batch_size=2",
        "rollout.n=8",
        "rollout.max_new_tokens=16",
        "rollout.max_turns=1",
        "rollout.temperature=1.0",
        "rollout.top_k=50",
        "trainer.lr=2e-3",
        "trainer.kl_coef=0.0",
        "run.seed=3",
        f"rollout.staleness={staleness}",
    ]


def table(curves: dict[int, list[dict]]) -> str:
    """Step, then reward and seconds per staleness, one line per step.

    >>> rows = {0: [{"step": 1, REWARD: 0.5, "time/step": 2.0}], 1: [{"step": 1, REWARD: 0.25, "time/step": 1.0}]}
    >>> print(table(rows))
    step  reward s=0  reward s=1  sec s=0  sec s=1
       1      0.5000      0.2500     2.00     1.00
    """
    keys = sorted(curves)
    head = "step" + "".join(f"  reward s={k}" for k in keys) + "".join(f"  sec s={k}" for k in keys)
    lines = [head]
    for i, row in enumerate(curves[keys[0]]):
        rewards = "".join(f"{curves[k][i][REWARD]:>12.4f}" for k in keys)
        seconds = "".join(f"{curves[k][i]['time/step']:>9.2f}" for k in keys)
        lines.append(f"{int(row['step']):>4}{rewards}{seconds}")
    return "\n".join(lines)


def plot(curves: dict[int, list[dict]], out: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.6))
    for staleness, rows in sorted(curves.items()):
        label = "staleness 0 (synchronous)" if staleness == 0 else f"staleness {staleness} (off-policy)"
        ax.plot([r["step"] for r in rows], [r[REWARD] for r in rows], marker="o", label=label)
    ax.set_xlabel("step")
    ax.set_ylabel("mean reward")
    ax.set_title("The learning run at rollout.staleness 0 and 1")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out


def main(argv: list[str]) -> None:
    from common.tiny_model import build_tiny_model, default_model_dir
    from recipes import videostar_grpo

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("staleness_curves.png"))
    parser.add_argument("--steps", type=int, default=8)
    args, extra = parser.parse_known_args(argv)
    model_dir = str(build_tiny_model(default_model_dir()))
    curves = {}
    with tempfile.TemporaryDirectory(prefix="staleness-") as tmp:
        for staleness in (0, 1):
            run_dir = Path(tmp) / f"s{staleness}"
            videostar_grpo.main([*overrides(run_dir, args.steps, staleness, model_dir), *extra])
            curves[staleness] = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    print("\n" + table(curves))
    print(f"reward curves: {plot(curves, args.out)}")


if __name__ == "__main__":
    main(sys.argv[1:])
