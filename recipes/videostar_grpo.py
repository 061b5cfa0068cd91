"""Video-STAR GRPO: open-vocabulary action recognition, with tools, trained by group-relative policy optimisation.

The policy watches a clip, may call tools (`pose_estimation`: boxes, 17 COCO keypoints, joint angles and the limbs
that move most; `human_detection`: people per frame with ids that persist; `action_explanation`: definitions of
actions as phases; `video_description`: key frames and their description), reasons in <think>, and answers in
<answer>. Rewards: accuracy + format + tool usage + sub-motion (the tool and sub-motion rewards count only when the
answer is right; the sub-motion reward weighs the ranked `Sub-motions:` line against the record's `sub_motions`),
as in Video-STAR (arXiv 2510.08480).

The embedded default runs two stages: a cold-start SFT (recipes/sft.py on template-teacher chains of the sample
records, through the real tools; `<run_dir>/cold_start/`), then GRPO from its last checkpoint (recipes/grpo.py).

On one machine (CPU is fine: the embedded default is a tiny model and bundled sample data):

    python recipes/videostar_grpo.py                       # the embedded default, about 5 minutes on 2 cores
    python recipes/videostar_grpo.py --help                # every config key, its default and what it does
    python recipes/videostar_grpo.py run.steps=20 rollout.n=8 trainer.lr=1e-5 run.trackers=[jsonl,tensorboard]
    python recipes/videostar_grpo.py init_from=runs/videostar_sft/checkpoint-100   # after recipes/videostar_sft.py

On a Ray cluster (the working directory is shipped to every node; run outputs go to an absolute run_dir):

    ray start --head                     # then `ray start --address=HEAD:6379` on a second 8-GPU node
    ray job submit --working-dir . -- python recipes/videostar_grpo.py config=recipes/configs/videostar_paper.yaml \\
        model.path=/models/Qwen2.5-VL-7B-Instruct init_from=/shared/runs/vstar_sft/checkpoint-500 \\
        data.train=/data/hmdb51/b2n_train_base.jsonl trainer.world_size=8 trainer.num_gpus=1 rollout.num_workers=8 \\
        rollout.num_gpus=0.8 rollout.tool_pool.num_gpus=0.05 rollout.tools.pose_estimation.device=cuda \\
        run.run_dir=/shared/runs/videostar

Before any actor starts the recipe prints its resource plan and stops when the cluster cannot hold it; the
embedded default's small CPU requests are scaled down to fit a small cluster instead (README.md, "On a Ray
cluster"; one 8-GPU node: README.md, "A real model and dataset on GPUs").

Config: recipes/grpo.py's GrpoConfig, then `recipes/configs/videostar_grpo.yaml`, then `key=value` overrides;
the system prompt is `recipes/prompts/videostar_system.txt`. The resolved config is `<run_dir>/config.yaml`.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from a checkout or a Ray job

from recipes import grpo, sft  # noqa: E402
from recipes.config import cli  # noqa: E402

DEFAULT_YAML = Path(__file__).with_name("configs") / "videostar_grpo.yaml"


def main(argv: list[str]) -> dict[str, float]:
    cfg = grpo.load(argv, DEFAULT_YAML, __doc__)
    workers = None
    if cfg.cold_start.steps > 0 and not cfg.init_from:  # stage 1: the cold start, an SFT run of its own
        cfg.init_from, workers = sft.cold_start(cfg, "videostar_cold_start")
    # stage 2: GRPO from that checkpoint; the stage's rollout workers (same rollout config) keep their warm tools
    return grpo.run(cfg, "videostar_grpo", workers=workers)


if __name__ == "__main__":
    cli(main)
