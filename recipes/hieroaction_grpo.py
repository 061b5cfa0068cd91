"""HieroAction GRPO: action quality assessment with Stepwise Action Reasoning, trained by group-relative policy
optimisation.

The policy watches a clip and answers in four blocks, <look>, <recognition>, <assessment>, <answer>, the answer
one JSON object {action, sub_actions [{name, start, end}], difficulty, score}. Rewards, as in HieroAction
("Hierarchically Guided VLM for Fine-Grained Action Analysis"): 0.1 SAR format + 0.3 temporal IoU of the
sub-actions + 0.3 hierarchical action (class and sub-action sequence) + 0.3 score and difficulty. No tools and
no warm-up by default.

On one machine (CPU is fine: the embedded default is a tiny model and the bundled `aqa` sample records):

    python recipes/hieroaction_grpo.py                      # the embedded default, a few minutes on 2 cores
    python recipes/hieroaction_grpo.py run.steps=20 rollout.n=8 trainer.lr=1e-5

On a Ray cluster (the working directory is shipped to every node; run outputs go to an absolute run_dir):

    ray start --head
    ray job submit --working-dir . -- python recipes/hieroaction_grpo.py \\
        model.path=/models/Qwen2.5-VL-7B-Instruct data.train=/data/finediving/aqa_train.jsonl \\
        rollout.engine=vllm rollout.num_gpus=1 trainer.num_gpus=1 trainer.world_size=8 \\
        run.run_dir=/shared/runs/hieroaction

Config: the same dataclasses as `recipes/videostar_grpo.py` (a docstring per field) with the HieroAction
defaults below, then `recipes/configs/hieroaction_grpo.yaml`, then `key=value` overrides. The resolved config is
written to `<run_dir>/config.yaml`.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from a checkout or a Ray job

from eval.during_training import EvalConfig  # noqa: E402
from recipes.config import load_config  # noqa: E402
from recipes.videostar_grpo import (  # noqa: E402
    DataConfig,
    ModelConfig,
    RewardsConfig,
    RolloutConfig,
    RunConfig,
    ToolsConfig,
    TrainerConfig,
    WarmupConfig,
    train,
)

DEFAULT_YAML = Path(__file__).with_name("configs") / "hieroaction_grpo.yaml"
EMBEDDED_SPLIT = "aqa_train"  # data.train=embedded trains on the sample data's aqa records


@dataclass
class HieroWarmupConfig(WarmupConfig):
    steps: int = 0
    """The template-teacher warm-up writes Video-STAR chains for ovar records; it does not apply here."""


@dataclass
class HieroRolloutConfig(RolloutConfig):
    max_new_tokens: int = 192
    """Tokens per assistant turn: the four SAR blocks and the JSON answer in one turn."""
    max_response_tokens: int = 256
    max_turns: int = 1
    """One turn: without tools there is nothing to wait for."""


@dataclass
class HieroToolsConfig(ToolsConfig):
    enabled: dict[str, dict[str, Any]] = field(default_factory=dict)
    """No tools by default; e.g. {pose_estimation: {}} lets the policy look at the keypoints."""


@dataclass
class HieroRewardsConfig(RewardsConfig):
    components: list[dict[str, Any]] = field(
        default_factory=lambda: [
            {"name": "sar_format", "weight": 0.1},
            {"name": "temporal_iou", "weight": 0.3},
            {"name": "hier_action", "weight": 0.3},
            {
                "name": "aqa_score",
                "weight": 0.3,
                "args": {"lam_q": 10.0, "lam_d": 10.0, "difficulty_range": [1.0, 4.0]},
            },
        ]
    )
    """The HieroAction mix (docs/rewards.md): 0.1 format, 0.3 each other; the lambdas sharpen the score term."""


@dataclass
class HieroRunConfig(RunConfig):
    run_dir: str = "runs/hieroaction_grpo"


@dataclass
class HieroActionConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    warmup: HieroWarmupConfig = field(default_factory=HieroWarmupConfig)
    rollout: HieroRolloutConfig = field(default_factory=HieroRolloutConfig)
    tools: HieroToolsConfig = field(default_factory=HieroToolsConfig)
    rewards: HieroRewardsConfig = field(default_factory=HieroRewardsConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    run: HieroRunConfig = field(default_factory=HieroRunConfig)
    eval: EvalConfig = field(default_factory=lambda: EvalConfig(benchmark="sample-aqa"))
    """Evaluation every K steps by eval actors beside training (docs/eval.md); off by default."""
    init_from: str = ""
    """An SFT checkpoint directory (e.g. from recipes/hieroaction_sft.py) to start GRPO from."""


SYSTEM_PROMPT = (
    "You are an expert judge of human actions. Watch the video and reason step by step in four blocks: "
    "<look></look> what you see; <recognition></recognition> the action's phases in order, each with its start and "
    "end in seconds; <assessment></assessment> how well and how hard it is performed; then <answer></answer> with "
    'one JSON object {"action": ..., "sub_actions": [{"name": ..., "start": ..., "end": ...}], '
    '"difficulty": ..., "score": ...}.'
)


def main(argv: list[str]) -> dict[str, float]:
    # The same loop as Video-STAR (rollout -> rewards -> advantages -> train -> sync -> log -> checkpoint), read it
    # in recipes/videostar_grpo.py:train; only the config, the prompt and the training records differ.
    cfg = load_config(HieroActionConfig, argv, DEFAULT_YAML)
    return train(cfg, SYSTEM_PROMPT, name="hieroaction_grpo", split=EMBEDDED_SPLIT)


if __name__ == "__main__":
    main(sys.argv[1:])
