"""HieroAction SFT: supervised fine-tuning on Stepwise Action Reasoning targets, before (or instead of) GRPO.

The targets are written from the `aqa` annotations by templates (`python -m data_builders.hieroaction_sar`):
<look>, <recognition> with each phase's times, observation and conclusion, <assessment> per phase with difficulty
and score, and the <answer> JSON that the HieroAction rewards parse. The loop is recipes/sft.py's (replay -> SFT
steps -> checkpoints -> a probe scored with the HieroAction rewards). GRPO then starts from it:
`python recipes/hieroaction_grpo.py init_from=<run_dir>/checkpoint-<N>`.

On one machine (CPU is fine: the embedded default writes SAR targets for the bundled aqa sample records):

    python recipes/hieroaction_sft.py
    python recipes/hieroaction_sft.py run.steps=200 trainer.strategy=deepspeed

On a Ray cluster:

    ray job submit --working-dir . -- python recipes/hieroaction_sft.py \\
        config=recipes/configs/hieroaction_sft_paper.yaml model.path=/models/Qwen2.5-VL-7B-Instruct \\
        data.train=/data/finediving/train_sar.jsonl trainer.world_size=4 trainer.num_gpus=1 \\
        run.run_dir=/shared/runs/hiero_sft

`recipes/configs/hieroaction_sft_paper.yaml` holds the paper's SFT settings (lr 2e-5, batch 16, 25 epochs, 3,072
output tokens, seed 42), each value citing the paper; the embedded default's rate is tuned for the tiny random
model, never for a real one.

Config: recipes/sft.py's SftConfig, then `recipes/configs/hieroaction_sft.yaml`, then `key=value` overrides; the
system prompt is `recipes/prompts/hieroaction_system.txt` (the GRPO recipe's).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from a checkout or a Ray job

from recipes import sft  # noqa: E402
from recipes.config import cli  # noqa: E402

DEFAULT_YAML = Path(__file__).with_name("configs") / "hieroaction_sft.yaml"


def main(argv: list[str]) -> dict[str, Any]:
    return sft.main(argv, DEFAULT_YAML, "hieroaction_sft", __doc__)


if __name__ == "__main__":
    cli(main)
