"""Video-STAR SFT: the cold start. Supervised fine-tuning on tool-using chains of thought, before GRPO.

Each training record carries a `chain` (built by `python -m data_builders.videostar_cot`: a tool call, then what
the real tool output shows, sub-motions, 2-3 candidates, matching scores, the answer). The chains are replayed on
rollout workers through the real tools, so every conversation is tokenised exactly as GRPO samples it; the
trainer ranks (FSDP2 or DeepSpeed ZeRO-2/3) minimise cross-entropy on the assistant's tokens only. At the end the
policy is rolled out on a few records and the format / accuracy rewards and the tool-call rate are logged.
The last checkpoint starts GRPO: `python recipes/videostar_grpo.py init_from=<run_dir>/checkpoint-<N>`.

On one machine (CPU is fine: the embedded default builds chains for the bundled sample data with the template
teacher, then trains the tiny model):

    python recipes/videostar_sft.py                                    # a couple of minutes on 2 cores
    python recipes/videostar_sft.py trainer.strategy=deepspeed trainer.zero_stage=2 run.steps=100

On a Ray cluster (the working directory is shipped to every node; run outputs go to an absolute run_dir):

    ray start --head
    ray job submit --working-dir . -- python recipes/videostar_sft.py \\
        model.path=/models/Qwen2.5-VL-7B-Instruct data.train=/data/hmdb51/train_cot.jsonl \\
        trainer.world_size=8 trainer.num_gpus=1 trainer.strategy=deepspeed trainer.lr=1e-5 \\
        data.batch_size=64 trainer.micro_batch_size=2 run.steps=500 run.run_dir=/shared/runs/vstar_sft

Config: the dataclasses below (a docstring per field), then `recipes/configs/videostar_sft.yaml`, then
`key=value` overrides. The resolved config is written to `<run_dir>/config.yaml`.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from a checkout or a Ray job

from recipes import common, sft_common  # noqa: E402
from recipes.config import ConfigError, load_config  # noqa: E402
from recipes.videostar_grpo import SYSTEM_PROMPT, ModelConfig, RolloutConfig, RunConfig, ToolsConfig  # noqa: E402

DEFAULT_YAML = Path(__file__).with_name("configs") / "videostar_sft.yaml"


@dataclass
class SftDataConfig:
    train: str = "embedded"
    """SFT records (JSONL: sample records with a `chain`), or "embedded": chains built for the bundled sample
    data by the template teacher (cached under the run directory)."""
    num_frames: int = 8
    """Frames sampled per clip; the same as the GRPO run that follows, so the tools see the same frames."""
    max_side: int = 112
    batch_size: int = 8
    """Conversations per optimizer step (all ranks together; a multiple of trainer.world_size)."""
    seed: int = 0


@dataclass
class SftTrainerConfig:
    world_size: int = 2
    strategy: str = "fsdp2"
    """"fsdp2" or "deepspeed" (ZeRO stage `zero_stage`)."""
    zero_stage: int = 3
    lr: float = 5e-3
    """Peak learning rate (5e-3 suits the tiny random model; ~1e-5 a 7B model)."""
    lr_schedule: str = "cosine"
    """"cosine" (to lr * min_lr_ratio at run.steps) or "constant"; both after a linear warm-up."""
    warmup_steps: int = 5
    min_lr_ratio: float = 0.1
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    micro_batch_size: int = 2
    """Sequences per forward on each rank; gradients accumulate over a rank's batch share."""
    group_by_length: bool = True
    """Order each rank's sequences by length before cutting micro-batches (less padding)."""
    pack_max_tokens: int = 0
    """> 0: pack each rank's sequences into rows of at most this many tokens (no padding; micro_batch_size and
    group_by_length are then unused). 0: right-padded micro-batches."""
    attn_implementation: str = "auto"
    """The trainer's attention: "auto" (flash_attention_2 on GPU when flash-attn is installed, else sdpa), "sdpa",
    "eager" or "flash_attention_2"."""
    num_cpus: float = 0.5
    num_gpus: float = 0.0


@dataclass
class EvalConfig:
    samples: int = 4
    """Training records rolled out by the policy after SFT (0: no evaluation)."""
    before: bool = False
    """Also evaluate the untrained policy first (logged as step 0)."""
    n: int = 1
    max_new_tokens: int = 96
    temperature: float = 0.7
    top_p: float = 1.0
    top_k: int = 0
    rewards: list[dict[str, Any]] = field(default_factory=lambda: [{"name": "format"}, {"name": "accuracy"}])
    """Reward components to log (mean over the evaluation episodes)."""


@dataclass
class SftRunConfig(RunConfig):
    run_dir: str = "runs/videostar_sft"
    steps: int = 60
    save_every: int = 30


@dataclass
class VideoStarSftConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: SftDataConfig = field(default_factory=SftDataConfig)
    rollout: RolloutConfig = field(default_factory=RolloutConfig)
    """Only the replay and evaluation budgets are used: max_response_tokens, max_turns, workers."""
    tools: ToolsConfig = field(default_factory=ToolsConfig)
    trainer: SftTrainerConfig = field(default_factory=SftTrainerConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    run: SftRunConfig = field(default_factory=SftRunConfig)


def embedded_videostar_chains(cfg: Any, records_path: str, run_dir: Path) -> str:
    """Template-teacher chains for the sample records, through the real pose tool (data_builders.videostar_cot)."""
    from data_builders.videostar_cot import ChainBuilder, TemplateTeacher, build, template_judge

    out = run_dir / "chains" / "videostar_cot.jsonl"
    builder = ChainBuilder(TemplateTeacher(), template_judge, common.enabled_tools(cfg.tools), cfg.data.num_frames,
                           cfg.data.max_side, cfg.rollout.max_response_tokens)  # fmt: skip
    summary = build(records_path, out, builder, progress=False)
    print(f"[chains] {summary['kept_records']}/{summary['input_records']} kept, dropped {summary['dropped']}")
    return str(out)


def make_sft_trainer(tcfg: Any, model_path: str, steps: int, seed: int):
    from rl.trainer import TrainerGroup

    return TrainerGroup(
        model_path, world_size=tcfg.world_size, strategy=tcfg.strategy, zero_stage=tcfg.zero_stage, lr=tcfg.lr,
        weight_decay=tcfg.weight_decay, grad_clip=tcfg.grad_clip, kl_coef=0.0, micro_batch_size=tcfg.micro_batch_size,
        lr_schedule=tcfg.lr_schedule, lr_warmup_steps=tcfg.warmup_steps, lr_total_steps=steps,
        min_lr_ratio=tcfg.min_lr_ratio, group_by_length=tcfg.group_by_length, pack_max_tokens=tcfg.pack_max_tokens,
        attn_implementation=tcfg.attn_implementation, seed=seed,
        actor_options={"num_cpus": tcfg.num_cpus, "num_gpus": tcfg.num_gpus},
    )  # fmt: skip


def check_sft_config(cfg: Any) -> None:
    problems = []
    if cfg.model.path != "embedded" and not (Path(cfg.model.path) / "config.json").is_file():
        problems.append(f"model.path: no model directory (config.json) at {cfg.model.path}")
    if cfg.data.train != "embedded" and not Path(cfg.data.train).is_file():
        problems.append(f"data.train: records file not found: {cfg.data.train}")
    if cfg.data.batch_size % cfg.trainer.world_size:
        problems.append(f"data.batch_size {cfg.data.batch_size} must be a multiple of trainer.world_size")
    problems += common.check_trainer(cfg.trainer)
    if problems:
        raise ConfigError("bad config:\n  " + "\n  ".join(problems))


def main(argv: list[str]) -> dict[str, float]:
    cfg = load_config(VideoStarSftConfig, argv, DEFAULT_YAML)
    return train(cfg, SYSTEM_PROMPT, embedded_videostar_chains)


def train(cfg: Any, system_prompt: str, embedded_chains: Any, name: str = "videostar_sft",
          split: str = "train") -> dict[str, float]:  # fmt: skip
    """The SFT loop for any config shaped like VideoStarSftConfig (the HieroAction and GPS recipes run it too).
    `embedded_chains(cfg, records_path, run_dir) -> chains path` builds the data when data.train is "embedded"."""
    check_sft_config(cfg)  # fails here, before Ray starts, on a bad path or shape
    model_path, sample_path = common.resolve_embedded(cfg.model.path, cfg.data.train, split=split)
    run_dir = common.prepare_run_dir(cfg)
    train_path = embedded_chains(cfg, sample_path, run_dir) if cfg.data.train == "embedded" else cfg.data.train
    records = sft_common.load_chain_records(train_path)
    print(f"[{name}] run dir: {run_dir}  model: {model_path}  train: {train_path} ({len(records)} chains)")

    common.init_ray(cfg.run)
    tools = common.make_tool_pool(cfg.tools)
    workers = common.make_rollout_workers(cfg, model_path, tools, system_prompt)
    trainer = make_sft_trainer(cfg.trainer, model_path, cfg.run.steps, cfg.run.seed)
    logger = common.MetricsLogger(run_dir)
    logger.KEYS = ("sft/loss", "sft/lr", "sft/grad_norm", "eval/format_mean", "eval/tool_call_rate", "time/step")

    # the chains as trajectories: real tool replies between the turns, masked out of the loss
    t0 = time.perf_counter()
    chains, dropped = sft_common.replay_chains(workers, records, cfg.rollout.max_response_tokens)
    print(
        f"[{name}] {len(chains)}/{len(records)} chains replayed ({time.perf_counter() - t0:.1f}s); dropped {dropped}"
    )
    if not chains:
        raise RuntimeError(f"no chain fits rollout.max_response_tokens={cfg.rollout.max_response_tokens}: {dropped}")
    sampler = common.Sampler(chains, cfg.data.batch_size, seed=cfg.data.seed)

    try:
        run_steps(cfg, run_dir, workers, trainer, sampler, logger, records[: cfg.eval.samples], dropped)
    finally:
        trainer.shutdown()  # frees the ranks' placement group, so later jobs in this Ray session can schedule
    rows = [json.loads(line) for line in logger.path.read_text().splitlines() if line.strip()]
    sft_common.plot_sft(rows, run_dir / "loss.png")
    print(f"[{name}] done: {cfg.run.steps} steps; last checkpoint: {common.latest_checkpoint(run_dir)}")
    return logger.last


def run_steps(cfg: Any, run_dir: Path, workers: list, trainer: Any, sampler: Any, logger: Any, eval_records: list,
              dropped: dict) -> None:  # fmt: skip
    """resume -> (evaluate) -> SFT step -> log -> checkpoint, ..., evaluate on the last step."""
    start_step = common.maybe_resume(cfg, run_dir, trainer, sampler)
    if start_step == 0 and cfg.eval.before and eval_records:
        logger.log({"step": 0, **sft_common.evaluate(workers, trainer, eval_records, cfg, seed=cfg.run.seed)})
    for step in range(start_step + 1, cfg.run.steps + 1):
        t_step = time.perf_counter()
        batch = sampler.next_batch()
        metrics = trainer.sft_step(batch)  # the schedule sets the learning rate
        metrics.update({"step": step, "data/epoch": sampler.epoch, "data/replay_dropped": sum(dropped.values())})
        metrics["time/step"] = time.perf_counter() - t_step
        if step == cfg.run.steps and eval_records:  # what the policy does now: format, answers, tool calls
            metrics.update(sft_common.evaluate(workers, trainer, eval_records, cfg, seed=cfg.run.seed + step))
        logger.log(metrics)
        if step % cfg.run.save_every == 0 or step == cfg.run.steps:
            common.save_checkpoint(trainer, run_dir, step, sampler)


if __name__ == "__main__":
    main(sys.argv[1:])
