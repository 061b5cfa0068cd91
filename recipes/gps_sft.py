"""Gold Points Sniper SFT: one VLM trained on the four GPS roles at once (gold points extraction, validation,
Socratic questions and answers, final description), one summed objective as in the paper.

The role records come from `python -m data_builders.gps_roles` (four records per annotated video). The loop is
recipes/sft.py's. No probe by default: describing is judged by the semantic-entailment reward, which needs a judge
model (e.g. `eval.samples=8 rewards.components=[{name: semantic_entailment, args: {judge: {...}}}]`, see
docs/rewards.md).

On one machine (CPU is fine: the embedded default makes describe annotations from the bundled sample records,
their sub-motions and label as gold points, and the template annotator writes the roles):

    python recipes/gps_sft.py

On a Ray cluster:

    ray job submit --working-dir . -- python recipes/gps_sft.py \\
        model.path=/models/Qwen2.5-VL-7B-Instruct data.train=/data/cap/train_roles.jsonl \\
        trainer.world_size=8 trainer.num_gpus=1 trainer.lr=1e-5 data.batch_size=64 run.steps=2000 \\
        rollout.max_side=448 run.run_dir=/shared/runs/gps_sft

Config: recipes/sft.py's SftConfig, then `recipes/configs/gps_sft.yaml`, then `key=value` overrides; the system
prompt is `recipes/prompts/gps_system.txt`.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from a checkout or a Ray job

from recipes import sft  # noqa: E402
from recipes.config import cli  # noqa: E402

DEFAULT_YAML = Path(__file__).with_name("configs") / "gps_sft.yaml"


def main(argv: list[str]) -> dict[str, Any]:
    return sft.main(argv, DEFAULT_YAML, "gps_sft", __doc__)


if __name__ == "__main__":
    cli(main)
