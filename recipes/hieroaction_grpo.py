"""HieroAction GRPO: action quality assessment with Stepwise Action Reasoning, trained by group-relative policy
optimisation.

The policy watches a clip and answers in four blocks, <look>, <recognition>, <assessment>, <answer>, the answer
one JSON object {action, sub_actions [{name, start, end}], difficulty, score}. Rewards, as in HieroAction
("Hierarchically Guided VLM for Fine-Grained Action Analysis"): 0.1 SAR format + 0.3 temporal IoU of the
sub-actions + 0.3 hierarchical action (class and sub-action sequence) + 0.3 score and difficulty. No tools.

The embedded default runs two stages: a cold-start SFT on SAR chains that `data_builders.hieroaction_sar` writes
from the sample aqa records (recipes/sft.py; `<run_dir>/cold_start/`), then GRPO from its last checkpoint
(recipes/grpo.py). A real model gets its SFT stage from recipes/hieroaction_sft.py and starts with init_from=...

On one machine (CPU is fine: the embedded default is a tiny model and the bundled `aqa` sample records):

    python recipes/hieroaction_grpo.py                      # the embedded default, about 20 minutes on 2 cores
    python recipes/hieroaction_grpo.py --help
    python recipes/hieroaction_grpo.py run.steps=20 rollout.n=8 trainer.lr=1e-5

On a Ray cluster (the working directory is shipped to every node; run outputs go to an absolute run_dir):

    ray start --head
    ray job submit --working-dir . -- python recipes/hieroaction_grpo.py \\
        config=recipes/configs/hieroaction_paper.yaml model.path=/models/Qwen2.5-VL-7B-Instruct \\
        init_from=/shared/runs/hiero_sft/checkpoint-N \\
        data.train=/data/finediving/train.jsonl trainer.world_size=4 trainer.num_gpus=1 rollout.num_workers=4 \\
        rollout.num_gpus=1 run.run_dir=/shared/runs/hieroaction     # one 8-GPU node: 4 ranks + 4 vLLM workers

Config: recipes/grpo.py's GrpoConfig, then `recipes/configs/hieroaction_grpo.yaml`, then `key=value` overrides;
the system prompt is `recipes/prompts/hieroaction_system.txt`. The resolved config is `<run_dir>/config.yaml`.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from a checkout or a Ray job

from recipes import grpo, sft  # noqa: E402
from recipes.config import cli  # noqa: E402

DEFAULT_YAML = Path(__file__).with_name("configs") / "hieroaction_grpo.yaml"


def main(argv: list[str]) -> dict[str, float]:
    cfg = grpo.load(argv, DEFAULT_YAML, __doc__)
    workers = None
    if cfg.cold_start.steps > 0 and not cfg.init_from:  # stage 1: SFT on the records' SAR chains, a run of its own
        cfg.init_from, workers = sft.cold_start(cfg, "hieroaction_cold_start", builder="hieroaction_sar_brief")
    # stage 2: GRPO from that checkpoint, on the stage's rollout workers (the same rollout config)
    return grpo.run(cfg, "hieroaction_grpo", workers=workers)


if __name__ == "__main__":
    cli(main)
