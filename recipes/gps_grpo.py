"""Gold Points Sniper GRPO: dense, factual action descriptions, trained by group-relative policy optimisation with
GPS's semantic entailment score as the reward.

The policy watches a clip and describes the person's action, intention and context (the record's prompt: for CAP
records, the GPS paper's generic prompt, its Table I). A judge model labels each of the record's ground-truth gold
points entailed (2), neutral (1) or contradicted (0) by the description, all points of a description in one prompt
as the paper's evaluator does; the reward is ((Ne - Nc)/K + 1)/2 (`semantic_entailment`, docs/rewards.md). A
judge reply without one verdict per point scores 0 and is counted (`reward/semantic_entailment_errors`).

The GPS paper itself trains by supervised fine-tuning only (recipes/gps_sft.py: the four roles, one summed
objective); this recipe adds a GRPO stage on its evaluation metric, from the SFT checkpoint (init_from=...).
`recipes/configs/gps_paper.yaml` holds what the paper states (its judge, its score, its data and hardware) and says
which values are ours. Evaluate with `python -m eval.run --gps-staged` (docs/eval.md) for the paper's staged
inference.

On one machine (CPU is fine: the embedded default is the tiny model, the bundled `describe` sample records, whose
gold points are the sample clips' sub-motions and label, and the lexical word-overlap judge, which is no entailment
model: it shows the plumbing, not a result):

    python recipes/gps_grpo.py                       # the embedded default, a few minutes on 2 cores
    python recipes/gps_grpo.py --help                # every config key, its default and what it does
    python recipes/gps_grpo.py init_from=runs/gps_sft/checkpoint-60 run.steps=20 rollout.n=8

With a real judge (any OpenAI-compatible server; the key from the variable api_key_env names):

    python recipes/gps_grpo.py 'rewards.components=[{name: semantic_entailment, args: {judge: {kind: openai,
        base_url: "http://judge-host:8000/v1", model: Llama-3.3-70B-Instruct, api_key_env: JUDGE_KEY}}}]'

On a Ray cluster (the working directory is shipped to every node; run outputs go to an absolute run_dir):

    ray start --head
    ray job submit --working-dir . -- python recipes/gps_grpo.py config=recipes/configs/gps_paper.yaml \\
        model.path=/models/Qwen2.5-VL-7B-Instruct init_from=/shared/runs/gps_sft/checkpoint-2000 \\
        data.train=/data/records/cap/tuning_gold.jsonl rollout.engine=vllm trainer.world_size=4 \\
        trainer.num_gpus=1 rollout.num_workers=4 rollout.num_gpus=1 run.run_dir=/shared/runs/gps_grpo \\
        'rewards.components=[{name: semantic_entailment, args: {judge: {kind: openai, base_url: "http://judge:8000/v1",
        model: Llama-3.3-70B-Instruct, api_key_env: JUDGE_KEY, max_concurrency: 32}}}]'

The records: `python -m data_builders.cap` then `python -m data_builders.gold_points` (several gold points per
video; docs/datasets.md). Before any actor starts the recipe prints its resource plan and stops when the cluster
cannot hold it.

Config: recipes/grpo.py's GrpoConfig, then `recipes/configs/gps_grpo.yaml`, then `key=value` overrides; the system
prompt is `recipes/prompts/gps_system.txt`. The resolved config is `<run_dir>/config.yaml`.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from a checkout or a Ray job

from recipes import grpo  # noqa: E402
from recipes.config import cli  # noqa: E402

DEFAULT_YAML = Path(__file__).with_name("configs") / "gps_grpo.yaml"


def main(argv: list[str]) -> dict[str, float]:
    return grpo.main(argv, DEFAULT_YAML, "gps_grpo", __doc__)


if __name__ == "__main__":
    cli(main)
