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
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from a checkout or a Ray job

from recipes import common  # noqa: E402
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


SYSTEM_PROMPT = (
    "You are an expert judge of human actions. Watch the video and reason step by step in four blocks: "
    "<look></look> what you see; <recognition></recognition> the action's phases in order, each with its start and "
    "end in seconds; <assessment></assessment> how well and how hard it is performed; then <answer></answer> with "
    'one JSON object {"action": ..., "sub_actions": [{"name": ..., "start": ..., "end": ...}], '
    '"difficulty": ..., "score": ...}.'
)


def main(argv: list[str]) -> dict[str, float]:
    cfg = load_config(HieroActionConfig, argv, DEFAULT_YAML)
    specs = common.check_config(cfg)  # fails here, before Ray starts, on a bad path or name
    model_path, train_path = common.resolve_embedded(cfg.model.path, cfg.data.train, split=EMBEDDED_SPLIT)
    run_dir = common.prepare_run_dir(cfg)
    records = common.load_train_records(train_path)
    print(f"[hieroaction_grpo] run dir: {run_dir}  model: {model_path}  train: {train_path} ({len(records)} records)")

    common.init_ray(cfg.run)
    tools = common.make_tool_pool(cfg.tools)  # an empty pool when tools.enabled is empty
    workers = common.make_rollout_workers(cfg, model_path, tools, SYSTEM_PROMPT)
    rewards = common.make_reward_pool(cfg.rewards, specs)
    trainer = common.make_trainer(cfg.trainer, model_path, seed=cfg.run.seed, temperature=cfg.rollout.temperature)
    sampler = common.Sampler(records, cfg.data.batch_size, seed=cfg.data.seed)
    logger = common.MetricsLogger(run_dir)

    start_step = common.maybe_resume(cfg, run_dir, trainer, sampler)
    if start_step > 0:
        trainer.sync_weights(workers)  # the rollout engines start from the resumed policy
    elif cfg.warmup.steps > 0:  # only for ovar records (the template teacher's); it says so otherwise
        common.warmup_sft(cfg, workers, trainer, records, run_dir)
    for step in range(start_step + 1, cfg.run.steps + 1):
        t_step = time.perf_counter()
        batch = sampler.next_batch()

        # rollout: G episodes per sample (one SAR turn each, unless tools are enabled)
        t0 = time.perf_counter()
        trajs, skipped, tool_stats = common.rollout(workers, batch, cfg.rollout, seed=cfg.run.seed * 100003 + step)
        trajs, dropped = common.fit_world_size(trajs, cfg.trainer.world_size)
        t_rollout = time.perf_counter() - t0

        # rewards: format, temporal IoU, hierarchical action, score -- each separately, then the weighted total
        t0 = time.perf_counter()
        scored = rewards.score(trajs)
        t_rewards = time.perf_counter() - t0

        # advantages: group-normalised GRPO (verl's core_algos)
        advantages = common.advantages(scored.totals, trajs)

        # train: clipped policy loss + KL to the reference, on the FSDP2 ranks
        t0 = time.perf_counter()
        train_metrics = trainer.train_step(trajs, advantages)
        t_train = time.perf_counter() - t0

        # sync: the rollout engines get the new weights
        t_sync = trainer.sync_weights(workers)

        metrics = common.step_metrics(
            step, trajs, skipped, dropped, scored, advantages, train_metrics, tool_stats,
            {"rollout": t_rollout, "rewards": t_rewards, "train": t_train, "sync": t_sync,
             "step": time.perf_counter() - t_step},
        )  # fmt: skip
        logger.log(metrics)
        if step % cfg.run.save_every == 0 or step == cfg.run.steps:
            common.save_checkpoint(trainer, run_dir, step, sampler)

    logger.plot(run_dir / "rewards.png")
    print(f"[hieroaction_grpo] done: {cfg.run.steps} steps; run dir: {run_dir}")
    return logger.last


if __name__ == "__main__":
    main(sys.argv[1:])
