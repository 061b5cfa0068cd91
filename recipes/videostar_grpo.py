"""Video-STAR GRPO: open-vocabulary action recognition, with tools, trained by group-relative policy optimisation.

The policy watches a clip, may call tools (`pose_estimation`: boxes, 17 COCO keypoints, joint angles and the limbs
that move most; `human_detection`: people per frame with ids that persist; `action_explanation`: definitions of
actions as phases; `video_description`: key frames and their description), reasons in <think>, and answers in
<answer>. Rewards: accuracy + format + tool usage (the tool reward
counts only when the answer is right), as in Video-STAR (arXiv 2510.08480).

On one machine (CPU is fine: the embedded default is a tiny model and bundled sample data):

    python recipes/videostar_grpo.py                       # the embedded default, a few minutes on 2 cores
    python recipes/videostar_grpo.py run.steps=20 rollout.n=8 trainer.lr=1e-5
    python recipes/videostar_grpo.py init_from=runs/videostar_sft/checkpoint-60   # GRPO after recipes/videostar_sft.py

On a Ray cluster (the working directory is shipped to every node; run outputs go to an absolute run_dir):

    ray start --head
    ray job submit --working-dir . -- python recipes/videostar_grpo.py \\
        model.path=/models/Qwen2.5-VL-7B-Instruct data.train=/data/hmdb51/train.jsonl \\
        rollout.engine=vllm trainer.world_size=8 run.run_dir=/shared/runs/videostar

Config: the dataclasses below (a docstring per field), then `recipes/configs/videostar_grpo.yaml`, then
`key=value` overrides. The resolved config is written to `<run_dir>/config.yaml`.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from a checkout or a Ray job

from eval.during_training import EvalConfig, TrainingEval  # noqa: E402
from recipes import common  # noqa: E402
from recipes.config import load_config  # noqa: E402

DEFAULT_YAML = Path(__file__).with_name("configs") / "videostar_grpo.yaml"


@dataclass
class ModelConfig:
    path: str = "embedded"
    """A Hugging Face model directory (Qwen2.5-VL class), or "embedded" for the tiny model built locally."""


@dataclass
class DataConfig:
    train: str = "embedded"
    """Training records (JSONL, the DESIGN.md schema), or "embedded" for the bundled sample data."""
    num_frames: int = 8
    """Frames sampled uniformly from each clip; the model and the tools see the same frames."""
    max_side: int = 112
    """Frames are resized so their longest side is at most this many pixels."""
    batch_size: int = 2
    """Samples (prompts) per step; each is rolled out `rollout.n` times."""
    seed: int = 0
    """Seed of the data order (a new shuffle each epoch)."""


@dataclass
class WarmupConfig:
    steps: int = 100
    """Supervised steps on template-teacher chains (run through the real tools) before GRPO: a short cold start so
    the embedded tiny model calls tools and closes its answers. 0 skips it (a real model with its own SFT cold
    start)."""
    lr: float = 5e-3
    batch_size: int = 4
    """Chains per supervised step (a multiple of trainer.world_size). On the embedded default, more small steps
    beat fewer large ones in the same time: 100 x 4 ends at loss ~0.3 and the policy's calls parse, 60 x 8 ends at
    ~0.8 with every call malformed."""


@dataclass
class RolloutConfig:
    engine: str = "hf"
    """"hf" (transformers generate, CPU or GPU) or "vllm" (GPU, the `gpu` extra)."""
    num_workers: int = 1
    """RolloutWorker actors; a batch is split across them."""
    n: int = 4
    """Group size G: rollouts per sample."""
    temperature: float = 0.7
    """Sampling temperature (the trainer scores tokens at the same temperature)."""
    top_p: float = 1.0
    top_k: int = 0
    """Sample among the k most likely tokens (0: the whole vocabulary). Log-probs stay those of the full
    distribution, as the engines report them."""
    max_new_tokens: int = 96
    """Tokens per assistant turn."""
    max_response_tokens: int = 1024
    """Tokens of the whole response (all turns and tool replies; a pose reply is ~200 tokens per person-frame)."""
    max_turns: int = 3
    """Assistant turns per episode (a turn that calls tools is followed by another)."""
    num_cpus: float = 0.5
    num_gpus: float = 0.0
    engine_kwargs: dict[str, Any] = field(default_factory=dict)
    """Extra engine arguments, e.g. {gpu_memory_utilization: 0.5, tensor_parallel_size: 2} for vllm."""


DEFAULT_TOOLS: dict[str, dict[str, Any]] = {
    "pose_estimation": {},
    "human_detection": {},
    "action_explanation": {"kb": "embedded", "top_k": 1},
    "video_description": {"describer": {"kind": "local", "model": "embedded", "max_new_tokens": 8}, "key_frames": 1},
}


@dataclass
class ToolsConfig:
    enabled: dict[str, Optional[dict[str, Any]]] = field(default_factory=lambda: dict(DEFAULT_TOOLS))  # noqa: UP045
    """Tools by name, each with its config (e.g. pose_estimation: {weights: /w/yolo11x-pose.pt, device: cuda});
    see docs/tools.md. The default enables all four, with a cheap describer (the tiny model, few tokens). A tool
    set to null is disabled (tools.enabled.video_description=null)."""
    actors_per_tool: int = 1
    timeout_s: float = 60.0
    """A call that takes longer gets an error reply; the episode goes on."""
    cache_size: int = 512
    """Results cached by (video, frames, tool, arguments): a group of G rollouts pays once."""
    num_cpus: float = 0.25
    num_gpus: float = 0.0


@dataclass
class RewardsConfig:
    components: list[dict[str, Any]] = field(
        default_factory=lambda: [
            {"name": "accuracy", "weight": 1.0},
            {"name": "format", "weight": 1.0},
            {"name": "tool_usage", "weight": 1.0, "when": "accuracy"},
        ]
    )
    """Reward components: {name (registered or pkg.module:function), weight, args, when (a gate)}."""
    num_workers: int = 1
    num_cpus: float = 0.25


@dataclass
class TrainerConfig:
    world_size: int = 2
    """Trainer rank actors (gloo on CPU, NCCL on GPU)."""
    strategy: str = "fsdp2"
    """"fsdp2" or "deepspeed" (ZeRO stage `zero_stage`)."""
    zero_stage: int = 3
    """DeepSpeed only: 2 (optimizer state and gradients partitioned) or 3 (parameters too)."""
    pack_max_tokens: int = 0
    """> 0: the GRPO updates and the warm-up's supervised steps pack sequences into rows of at most this many
    tokens instead of padding micro-batches of micro_batch_size (docs/sft.md)."""
    attn_implementation: str = "auto"
    """The trainer's attention: "auto" (flash_attention_2 on GPU when flash-attn is installed, else sdpa), "sdpa",
    "eager" or "flash_attention_2"."""
    lr: float = 1e-5
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    clip_ratio: float = 0.2
    kl_coef: float = 0.01
    """Weight of the KL to the reference policy (low_var_kl); 0 drops the reference model."""
    micro_batch_size: int = 2
    mini_batches: int = 1
    """Optimizer steps per batch (PPO mini-batches)."""
    num_cpus: float = 0.5
    num_gpus: float = 0.0


@dataclass
class RunConfig:
    run_dir: str = "runs/videostar_grpo"
    """Everything the run writes goes here (made absolute; printed at start and end)."""
    steps: int = 4
    save_every: int = 2
    """Checkpoint every N steps (and at the end)."""
    resume: bool = False
    """Continue from the latest checkpoint in run_dir."""
    seed: int = 0
    ray_address: str = ""
    """Ray cluster to join ("auto" for a running cluster); empty starts a local Ray (or joins a job's)."""
    ray_num_cpus: int = 8
    """Logical CPUs of a local Ray, so the small actors of the default fit on a 2-core machine."""


@dataclass
class VideoStarConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    warmup: WarmupConfig = field(default_factory=WarmupConfig)
    rollout: RolloutConfig = field(default_factory=RolloutConfig)
    tools: ToolsConfig = field(default_factory=ToolsConfig)
    rewards: RewardsConfig = field(default_factory=RewardsConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    run: RunConfig = field(default_factory=RunConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    """Evaluation every K steps by eval actors beside training (docs/eval.md); off by default."""
    init_from: str = ""
    """An SFT checkpoint directory (e.g. from recipes/videostar_sft.py): GRPO starts from it (policy and reference)
    and the warm-up cold start is skipped. Empty: start from model.path, after the warm-up."""


SYSTEM_PROMPT = (
    "You are an expert in human action recognition. Watch the video. You may call tools to inspect the people "
    "in it, look up definitions of candidate actions and describe key frames. Think step by step inside "
    "<think></think>: decompose the motion into sub-motions, pick 2-3 candidate actions and match each against the "
    "evidence. Then give the action inside <answer></answer>."
)


def main(argv: list[str]) -> dict[str, float]:
    return train(load_config(VideoStarConfig, argv, DEFAULT_YAML), SYSTEM_PROMPT)


def train(cfg: Any, system_prompt: str, name: str = "videostar_grpo", split: str = "train") -> dict[str, float]:
    """The GRPO loop, for any config shaped like VideoStarConfig (the HieroAction recipe runs it too).
    `split` names the sample-data records that data.train=embedded trains on."""
    specs = common.check_config(cfg)  # fails here, before Ray starts, on a bad path or name
    model_path, train_path = common.resolve_embedded(cfg.model.path, cfg.data.train, split=split)
    model_path = common.resolve_init_from(cfg.init_from, model_path, cfg.tools)  # replaces the warm-up
    run_dir = common.prepare_run_dir(cfg)
    evals = TrainingEval.from_recipe(cfg, run_dir, system_prompt)  # checks the benchmark before Ray starts
    records = common.load_train_records(train_path)
    print(f"[{name}] run dir: {run_dir}  model: {model_path}  train: {train_path} ({len(records)} records)")

    common.init_ray(cfg.run)
    tools = common.make_tool_pool(cfg.tools)
    workers = common.make_rollout_workers(cfg, model_path, tools, system_prompt)
    rewards = common.make_reward_pool(cfg.rewards, specs)
    trainer = common.make_trainer(cfg.trainer, model_path, seed=cfg.run.seed, temperature=cfg.rollout.temperature)
    sampler = common.Sampler(records, cfg.data.batch_size, seed=cfg.data.seed)
    logger = common.MetricsLogger(run_dir)

    start_step = common.maybe_resume(cfg, run_dir, trainer, sampler)
    if start_step > 0:
        trainer.sync_weights(workers)  # the rollout engines start from the resumed policy
    elif cfg.warmup.steps > 0 and not cfg.init_from:  # cold start on teacher chains, then sync the rollout engines
        common.warmup_sft(cfg, workers, trainer, records, run_dir)
    for step in range(start_step + 1, cfg.run.steps + 1):
        t_step = time.perf_counter()
        batch = sampler.next_batch()

        # rollout: G episodes per sample, with tool calls
        t0 = time.perf_counter()
        trajs, skipped, tool_stats = common.rollout(workers, batch, cfg.rollout, seed=cfg.run.seed * 100003 + step)
        trajs, dropped = common.fit_world_size(trajs, cfg.trainer.world_size)
        t_rollout = time.perf_counter() - t0

        # rewards: every component separately, then the weighted total
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
        if step % cfg.run.save_every == 0 or step == cfg.run.steps or evals.due(step):
            ckpt = common.save_checkpoint(trainer, run_dir, step, sampler)
            evals.launch(step, ckpt)  # eval actors on their own resources; training does not wait
        evals.poll()  # log the evaluations that have finished, tagged with their step

    evals.close()
    trainer.shutdown()  # frees the ranks' placement group, so later jobs in this Ray session can schedule
    logger.plot(run_dir / "rewards.png")
    print(f"[{name}] done: {cfg.run.steps} steps; run dir: {run_dir}")
    return logger.last


if __name__ == "__main__":
    main(sys.argv[1:])
