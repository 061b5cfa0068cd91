"""HieroAction SFT: supervised fine-tuning on Stepwise Action Reasoning targets, before (or instead of) GRPO.

The targets are written from the `aqa` annotations by templates (`python -m data_builders.hieroaction_sar`):
<look>, <recognition> with each phase's times, observation and conclusion, <assessment> per phase with difficulty
and score, and the <answer> JSON that the HieroAction rewards parse. The loop is Video-STAR SFT's
(`recipes/videostar_sft.py:train`: replay -> SFT steps -> checkpoints -> evaluation with the HieroAction rewards);
only the config, the system prompt (the GRPO recipe's) and the data differ. GRPO then starts from it:
`python recipes/hieroaction_grpo.py init_from=<run_dir>/checkpoint-<N>`.

On one machine (CPU is fine: the embedded default writes SAR targets for the bundled aqa sample records):

    python recipes/hieroaction_sft.py
    python recipes/hieroaction_sft.py run.steps=200 trainer.strategy=deepspeed

On a Ray cluster:

    ray job submit --working-dir . -- python recipes/hieroaction_sft.py \\
        model.path=/models/Qwen2.5-VL-7B-Instruct data.train=/data/finediving/aqa_train_sar.jsonl \\
        trainer.world_size=8 trainer.num_gpus=1 trainer.lr=1e-5 data.batch_size=32 run.steps=1000 \\
        run.run_dir=/shared/runs/hiero_sft

Config: the Video-STAR SFT dataclasses with the defaults below, then `recipes/configs/hieroaction_sft.yaml`, then
`key=value` overrides.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from a checkout or a Ray job

from recipes.config import load_config  # noqa: E402
from recipes.hieroaction_grpo import EMBEDDED_SPLIT, SYSTEM_PROMPT, HieroRewardsConfig  # noqa: E402
from recipes.videostar_grpo import ModelConfig, RolloutConfig, ToolsConfig  # noqa: E402
from recipes.videostar_sft import EvalConfig, SftDataConfig, SftRunConfig, SftTrainerConfig, train  # noqa: E402

DEFAULT_YAML = Path(__file__).with_name("configs") / "hieroaction_sft.yaml"


@dataclass
class HieroSftRolloutConfig(RolloutConfig):
    max_new_tokens: int = 768
    max_response_tokens: int = 1024
    """A SAR target of an 8-phase clip is ~500 tokens: the replay budget."""
    max_turns: int = 1


@dataclass
class HieroSftToolsConfig(ToolsConfig):
    enabled: dict[str, dict[str, Any]] = field(default_factory=dict)


@dataclass
class HieroSftEvalConfig(EvalConfig):
    max_new_tokens: int = 768
    rewards: list[dict[str, Any]] = field(default_factory=lambda: HieroRewardsConfig().components)
    """The HieroAction GRPO mix: sar_format, temporal_iou, hier_action, aqa_score."""


@dataclass
class HieroSftRunConfig(SftRunConfig):
    run_dir: str = "runs/hieroaction_sft"


@dataclass
class HieroActionSftConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: SftDataConfig = field(default_factory=SftDataConfig)
    rollout: HieroSftRolloutConfig = field(default_factory=HieroSftRolloutConfig)
    tools: HieroSftToolsConfig = field(default_factory=HieroSftToolsConfig)
    trainer: SftTrainerConfig = field(default_factory=SftTrainerConfig)
    eval: HieroSftEvalConfig = field(default_factory=HieroSftEvalConfig)
    run: HieroSftRunConfig = field(default_factory=HieroSftRunConfig)


def embedded_sar_targets(cfg: Any, records_path: str, run_dir: Path) -> str:
    from data_builders.hieroaction_sar import build

    out = run_dir / "chains" / "hieroaction_sar.jsonl"
    summary = build(records_path, out, max_tokens=cfg.rollout.max_response_tokens, progress=False)
    print(f"[sar] {summary['kept_records']}/{summary['input_records']} kept, dropped {summary['dropped']}")
    return str(out)


def main(argv: list[str]) -> dict[str, float]:
    cfg = load_config(HieroActionSftConfig, argv, DEFAULT_YAML)
    return train(cfg, SYSTEM_PROMPT, embedded_sar_targets, name="hieroaction_sft", split=EMBEDDED_SPLIT)


if __name__ == "__main__":
    main(sys.argv[1:])
