"""Gold Points Sniper SFT: one VLM trained on the four GPS roles at once (gold points extraction, validation,
Socratic questions and answers, final description), one summed objective as in the paper.

The role records come from `python -m data_builders.gps_roles` (four records per annotated video). The loop is
Video-STAR SFT's (`recipes/videostar_sft.py:train`); only the config, the system prompt and the data differ. No
evaluation by default: describing is judged by the semantic-entailment reward, which needs a judge model
(e.g. `eval.samples=8 eval.rewards=[{name: semantic_entailment, args: {judge: {...}}}]`, see docs/rewards.md).

On one machine (CPU is fine: the embedded default makes describe annotations from the bundled sample records,
their sub-motions and label as gold points, and the template annotator writes the roles):

    python recipes/gps_sft.py

On a Ray cluster:

    ray job submit --working-dir . -- python recipes/gps_sft.py \\
        model.path=/models/Qwen2.5-VL-7B-Instruct data.train=/data/cap/train_roles.jsonl \\
        trainer.world_size=8 trainer.num_gpus=1 trainer.lr=1e-5 data.batch_size=64 run.steps=2000 \\
        run.run_dir=/shared/runs/gps_sft

Config: the Video-STAR SFT dataclasses with the defaults below, then `recipes/configs/gps_sft.yaml`, then
`key=value` overrides.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from a checkout or a Ray job

from recipes.config import load_config  # noqa: E402
from recipes.videostar_grpo import ModelConfig, RolloutConfig, ToolsConfig  # noqa: E402
from recipes.videostar_sft import EvalConfig, SftDataConfig, SftRunConfig, SftTrainerConfig, train  # noqa: E402

DEFAULT_YAML = Path(__file__).with_name("configs") / "gps_sft.yaml"
SYSTEM_PROMPT = (
    "You are an expert in fine-grained human action understanding. Watch the video and do exactly what the user "
    "asks: list gold points (the key facts of the person's action, intention and context), judge whether given "
    "gold points are sufficient, question yourself about what is missing, or describe the person in detail, "
    "stating only what is true."
)


@dataclass
class GpsRolloutConfig(RolloutConfig):
    max_new_tokens: int = 256
    max_response_tokens: int = 384
    max_turns: int = 1


@dataclass
class GpsToolsConfig(ToolsConfig):
    enabled: dict[str, dict[str, Any]] = field(default_factory=dict)


@dataclass
class GpsEvalConfig(EvalConfig):
    samples: int = 0
    """No evaluation by default (see the module docstring)."""


@dataclass
class GpsRunConfig(SftRunConfig):
    run_dir: str = "runs/gps_sft"


@dataclass
class GpsSftConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: SftDataConfig = field(default_factory=SftDataConfig)
    rollout: GpsRolloutConfig = field(default_factory=GpsRolloutConfig)
    tools: GpsToolsConfig = field(default_factory=GpsToolsConfig)
    trainer: SftTrainerConfig = field(default_factory=SftTrainerConfig)
    eval: GpsEvalConfig = field(default_factory=GpsEvalConfig)
    run: GpsRunConfig = field(default_factory=GpsRunConfig)


def embedded_gps_roles(cfg: Any, records_path: str, run_dir: Path) -> str:
    """Describe annotations from the sample ovar records, then the four roles by the template annotator."""
    from data_builders.gps_roles import TemplateAnnotator, build, describe_from_ovar
    from data_builders.schema import load_records, write_records

    annotations = run_dir / "chains" / "describe.jsonl"
    write_records(annotations, [describe_from_ovar(r) for r in load_records(records_path)])
    out = run_dir / "chains" / "gps_roles.jsonl"
    summary = build(annotations, out, TemplateAnnotator(), progress=False)
    print(f"[gps] {summary['kept_records']} role records from {summary['input_records']} annotations")
    print(f"[gps] roles: {json.dumps(_role_counts(out))}")
    return str(out)


def _role_counts(path: Path) -> dict[str, int]:
    counts: dict[str, int] = {}
    for line in path.read_text().splitlines():
        role = json.loads(line)["meta"]["role"]
        counts[role] = counts.get(role, 0) + 1
    return counts


def main(argv: list[str]) -> dict[str, float]:
    cfg = load_config(GpsSftConfig, argv, DEFAULT_YAML)
    return train(cfg, SYSTEM_PROMPT, embedded_gps_roles, name="gps_sft", split="train")


if __name__ == "__main__":
    main(sys.argv[1:])
