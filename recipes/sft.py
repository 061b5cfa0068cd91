"""The SFT loop (the cold start before GRPO): replay chains -> SFT steps -> log -> checkpoint -> probe, once for
every recipe.

An SFT record is a sample record (common/schema.py) plus `chain`: the assistant turns a builder wrote
(`data_builders.videostar_cot`, `.hieroaction_sar`, `.gps_roles`, `.template_teacher`). Each chain is replayed on
a rollout worker (`RolloutWorker.replay`): its turns are tokenised exactly as a rollout's, and a turn that calls
a tool is followed by the real tool's reply. So SFT trains on the token layout GRPO samples, with the tool replies
masked out of the loss. Paper recipes (`videostar_sft.py`, `hieroaction_sft.py`, `gps_sft.py`) are leaves: a
docstring, a YAML and a prompt file; they call `main`.
"""

from __future__ import annotations

import copy
import dataclasses
import importlib
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from eval.config import EvalConfig
from recipes.config import (
    EMBEDDED,
    ConfigError,
    DataConfig,
    ModelConfig,
    RunConfig,
    load_recipe_config,
    raise_problems,
    validate_sections,
)
from recipes.resources import check_cluster, fit_cluster
from recipes.run import (
    Sampler,
    init_ray,
    prepare_run_dir,
    resolve_model,
    resolve_records,
    resume,
    save_checkpoint,
)
from rewards.combine import RewardSpec
from rewards.config import RewardsConfig
from rl.checkpoint import latest_checkpoint
from rl.config import TrainerConfig
from rollout.config import RolloutConfig

IM_END = "<|im_end|>"
TURN_ENDS = ("</answer>", "</tool_call>")  # a rollout stops a turn there; any other turn ends with <|im_end|>
# data.builder -> the function that writes SFT records for the sample data (data.train=embedded), imported on use
BUILDERS = {
    "videostar_cot": "data_builders.videostar_cot:embedded_sft_records",
    "template_teacher": "data_builders.template_teacher:embedded_sft_records",
    "hieroaction_sar": "data_builders.hieroaction_sar:embedded_sft_records",
    "hieroaction_sar_brief": "data_builders.hieroaction_sar:embedded_brief_records",
    "gps_roles": "data_builders.gps_roles:embedded_sft_records",
}


@dataclass
class SftDataConfig(DataConfig):
    """SFT records (sample records with a `chain`) and how they are drawn."""

    train: str = EMBEDDED
    """SFT records (JSONL: sample records with a `chain`), or "embedded[:split]": chains that `builder` writes for
    the bundled sample data (under the run directory)."""
    batch_size: int = 8
    """Conversations per optimizer step (all ranks together; a multiple of trainer.world_size)."""
    builder: str = "videostar_cot"
    """With data.train=embedded: the builder of the chains: videostar_cot, template_teacher, hieroaction_sar,
    hieroaction_sar_brief (one line per SAR block) or gps_roles."""

    def validate(self, where: str = "data") -> list[str]:
        problems = super().validate(where)
        if self.builder not in BUILDERS:
            problems.append(f"{where}.builder: {self.builder!r} is not one of {', '.join(map(repr, BUILDERS))}")
        return problems


def _sft_trainer() -> TrainerConfig:
    return TrainerConfig(
        lr=5e-3, lr_schedule="cosine", warmup_steps=5, min_lr_ratio=0.1, kl_coef=0.0, group_by_length=True
    )


@dataclass
class SftConfig:
    """Supervised fine-tuning on chains replayed through the real tools (the cold start before GRPO)."""

    model: ModelConfig = field(default_factory=ModelConfig)
    """The model to fine-tune."""
    data: SftDataConfig = field(default_factory=SftDataConfig)
    """SFT records."""
    rollout: RolloutConfig = field(default_factory=RolloutConfig)
    """The prompt, tools, frames and budgets of the replay (the same as the GRPO run that follows), and of the
    probe rollouts (eval.samples; rollout.n episodes each)."""
    rewards: RewardsConfig = field(
        default_factory=lambda: RewardsConfig(components=[RewardSpec("format"), RewardSpec("accuracy")])
    )
    """Rewards the probe rollouts are scored with (their means are logged as eval/<name>_mean)."""
    trainer: TrainerConfig = field(default_factory=_sft_trainer)
    """Trainer ranks: strategy, learning-rate schedule, micro-batching or packing (kl_coef is unused)."""
    eval: EvalConfig = field(default_factory=lambda: EvalConfig(samples=4))
    """The probe after the last step (eval.samples, eval.before); eval actors every K steps (eval.every_k)."""
    run: RunConfig = field(default_factory=lambda: RunConfig(run_dir="runs/sft", steps=60, save_every=30))
    """Run directory, length, checkpoints, trackers, Ray."""

    def validate(self) -> list[str]:
        problems = validate_sections(self)
        if self.data.batch_size % self.trainer.world_size:
            problems.append(f"data.batch_size {self.data.batch_size} must be a multiple of trainer.world_size")
        return problems


def load(argv: list[str], default_yaml: str | Path | None, title: str = "") -> SftConfig:
    """The config from defaults <- YAML <- `key=value`, checked (ConfigError); `--help` prints it and exits."""
    return load_recipe_config(SftConfig, argv, default_yaml, title)


def main(argv: list[str], default_yaml: str | Path | None, name: str = "sft", title: str = "") -> dict[str, Any]:
    """Load the config (`title` heads `--help`), then train."""
    return run(load(argv, default_yaml, title or __doc__), name)


def cold_start(grpo: Any, name: str = "cold_start", builder: str = "template_teacher") -> tuple[str, Any]:
    """Run the SFT stage a GRPO config's `cold_start` asks for (`cold_start_config`, chains by `builder`). Returns
    its last checkpoint (the GRPO stage's init_from) and its rollout workers, which have GRPO's rollout config:
    handed to `grpo.run`, they serve the next stage with their tools loaded and their tool results cached (None
    when a resumed run's stage had already finished and is not run again)."""
    cold_start_config(grpo, builder)  # checked before Ray starts
    init_ray(grpo.run)
    fit_cluster(grpo)  # once for both stages: this stage's rollout workers serve GRPO, with the same requests
    cfg = cold_start_config(grpo, builder)  # again: with the requests scaled to the cluster
    done = latest_checkpoint(cfg.run.run_dir)
    if cfg.run.resume and done is not None and done.name == f"checkpoint-{cfg.run.steps}":
        print(f"[{name}] already done: {done}")
        return str(done), None
    out = run(cfg, name, keep_workers=True)
    return out["checkpoint"], out["workers"]


def cold_start_config(grpo: Any, builder: str = "template_teacher") -> SftConfig:
    """The SFT stage a GRPO config's `cold_start` asks for: chains of its training records written by `builder`
    (a key of BUILDERS: `template_teacher` for Video-STAR's ovar records, `hieroaction_sar` for aqa records), its
    model, rollout (prompt, tools, frames, budgets) and trainer ranks, a constant rate, under <run_dir>/cold_start."""
    cold = grpo.cold_start
    cfg = SftConfig(model=copy.deepcopy(grpo.model), rollout=copy.deepcopy(grpo.rollout))
    cfg.data = SftDataConfig(train=grpo.data.train, batch_size=cold.batch_size, seed=grpo.data.seed, builder=builder)
    cfg.trainer = dataclasses.replace(grpo.trainer, lr=cold.lr, lr_schedule="constant", warmup_steps=0, kl_coef=0.0)
    cfg.eval = EvalConfig(samples=0)
    run_dir = str(Path(grpo.run.run_dir).expanduser().resolve() / "cold_start")
    cfg.run = dataclasses.replace(grpo.run, run_dir=run_dir, steps=cold.steps, save_every=cold.steps)
    raise_problems(cfg.validate())
    return cfg


def run(cfg: SftConfig, name: str = "sft", keep_workers: bool = False) -> dict[str, Any]:
    """Train; returns the last step's metrics, the last checkpoint under "checkpoint" and, with `keep_workers`,
    the rollout workers under "workers" (still running, for a stage that follows with the same rollout config).
    The run directory gets config.yaml, metrics.jsonl, loss.png and checkpoint-<step>/."""
    from eval.during_training import TrainingEval
    from recipes.tracking import SFT_CONSOLE_KEYS, Tracker, plot_sft
    from rl.trainer import TrainerGroup
    from rollout.group import RolloutGroup

    model_path, records, run_dir = _prepare(cfg, name)
    # every eval.every_k steps (or never)
    evals = TrainingEval(cfg.eval, run_dir, cfg.rollout, cfg.run.timeout_s, cfg.run.actor_retries)
    init_ray(cfg.run)
    raise_problems(check_cluster(cfg))  # the cluster Ray joined: before any actor starts
    workers = RolloutGroup(
        cfg.rollout, model_path, seed=cfg.run.seed, timeout_s=cfg.run.timeout_s, retries=cfg.run.actor_retries
    )
    trainer = TrainerGroup(
        cfg.trainer, model_path, seed=cfg.run.seed, total_steps=cfg.run.steps, timeout_s=cfg.run.timeout_s
    )
    workers.on_replace = lambda worker: trainer.sync_weights([worker])  # a replaced worker gets the current policy
    try:
        chains, dropped = _replay(workers, records, cfg, run_dir, name)
        sampler = Sampler(chains, cfg.data.batch_size, seed=cfg.data.seed)
        start = resume(cfg.run, run_dir, trainer, sampler)
        resumed = start if cfg.run.resume else None
        tracker = Tracker(run_dir, cfg.run.trackers, dataclasses.asdict(cfg), name, SFT_CONSOLE_KEYS, resumed)
        probe_records = records[: cfg.eval.samples]
        if start == 0 and cfg.eval.before and probe_records:
            tracker.log({"step": 0, **probe(workers, trainer, probe_records, cfg, seed=cfg.run.seed)})
        for step in range(start + 1, cfg.run.steps + 1):
            t_step = time.perf_counter()
            metrics = trainer.sft_step(sampler.next_batch())  # the schedule sets the learning rate
            metrics.update({"step": step, "data/epoch": sampler.epoch, "data/replay_dropped": sum(dropped.values())})
            metrics["time/step"] = time.perf_counter() - t_step
            if step == cfg.run.steps and probe_records:  # what the policy does now: format, answers, tool calls
                metrics.update(probe(workers, trainer, probe_records, cfg, seed=cfg.run.seed + step))
            tracker.log(metrics)
            if step % cfg.run.save_every == 0 or step == cfg.run.steps or evals.due(step):
                evals.launch(step, save_checkpoint(trainer, run_dir, step, sampler, cfg.run))
            evals.poll()
        evals.close()
        tracker.close()
    finally:
        trainer.shutdown()  # frees the ranks' placement group, so later jobs in this Ray session can schedule
        if not keep_workers:
            workers.shutdown()
    plot_sft(tracker.rows(), run_dir / "loss.png")
    last = latest_checkpoint(run_dir)
    print(f"[{name}] done: {cfg.run.steps} steps; last checkpoint: {last}")
    return {**tracker.last, "checkpoint": str(last), **({"workers": workers} if keep_workers else {})}


def _replay(workers: Any, records: list[dict], cfg: SftConfig, run_dir: Path, name: str) -> tuple[list, dict]:
    """The chains as trajectories (real tool replies between the turns, masked out of the loss), written to
    chains/replayed.jsonl to inspect; what was dropped, by reason."""
    t0 = time.perf_counter()
    chains, dropped = replay_chains(workers, records, cfg.rollout.max_response_tokens)
    write_chains(chains, run_dir / "chains" / "replayed.jsonl")
    print(
        f"[{name}] {len(chains)}/{len(records)} chains replayed ({time.perf_counter() - t0:.1f}s); dropped {dropped}"
    )
    if not chains:
        budget = cfg.rollout.max_response_tokens
        raise RuntimeError(f"no chain fits rollout.max_response_tokens={budget}: {dropped}")
    return chains, dropped


def _prepare(cfg: SftConfig, name: str) -> tuple[str, list[dict], Path]:
    """Before Ray: the model, the run directory, the SFT records (built for the sample data when embedded)."""
    model_path = resolve_model(cfg.model.path)
    run_dir = prepare_run_dir(cfg)
    train_path = cfg.data.train
    if train_path.startswith(EMBEDDED):
        module, _, fn = BUILDERS[cfg.data.builder].partition(":")
        build = getattr(importlib.import_module(module), fn)
        (run_dir / "chains").mkdir(exist_ok=True)
        train_path = str(build(resolve_records(train_path), run_dir / "chains", cfg.rollout))
    records = load_chain_records(train_path)
    print(f"[{name}] run dir: {run_dir}  model: {model_path}  train: {train_path} ({len(records)} chains)")
    return model_path, records, run_dir


def load_chain_records(path: str) -> list[dict]:
    """Schema-valid records that each carry a non-empty `chain` of strings (ConfigError naming the file, line
    and id of the first that does not)."""
    from common.schema import load_records

    records = load_records(path)
    for i, rec in enumerate(records, 1):
        chain = rec.get("chain")
        if not (isinstance(chain, list) and chain and all(isinstance(t, str) and t.strip() for t in chain)):
            raise ConfigError(
                f"{path}: record {i} ({rec['id']!r}) has no 'chain' (a list of assistant turns): "
                "build SFT records with python -m data_builders.videostar_cot / hieroaction_sar / gps_roles"
            )
    if not records:
        raise ConfigError(f"data.train: no records in {path}")
    return records


def script_of(chain: list[str]) -> list[str]:
    """The turns as the model must write them: a turn that a stop string does not end gets <|im_end|>, so the
    model learns to end it (an answer or a tool call is stopped by the rollout's stop strings).

    >>> script_of(["<tool_call>{}</tool_call>", "a description"])
    ['<tool_call>{}</tool_call>', 'a description<|im_end|>']
    """
    return [t if t.rstrip().endswith(TURN_ENDS) or t.rstrip().endswith(IM_END) else t + IM_END for t in chain]


def replay_chains(workers: Any, records: list[dict], max_new_tokens: int) -> tuple[list, dict[str, int]]:
    """Trajectories of the chains (real tools answering their calls), and the counts of what was dropped: a
    video that does not decode, or a conversation longer than the response budget ("length")."""
    trajs = workers.replay(records, [script_of(r["chain"]) for r in records], max_new_tokens)
    kept = [t for t in trajs if t.finish_reason in ("answer", "stop")]
    dropped = Counter(t.finish_reason for t in trajs if t.finish_reason not in ("answer", "stop"))
    return kept, dict(dropped)


def write_chains(trajs: list, path: Path) -> None:
    """The replayed chains as the model is trained on them (each turn, its tool calls and the real replies)."""
    import json

    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as f:
        for t in trajs:
            turns = [
                {"text": turn.text, "tool_calls": [dataclasses.asdict(c) for c in turn.tool_calls]} for turn in t.turns
            ]
            f.write(json.dumps({"id": t.sample_id, "video": t.record.get("video"), "turns": turns}) + "\n")


def probe(workers: Any, trainer: Any, records: list[dict], cfg: SftConfig, seed: int) -> dict[str, float]:
    """Roll the current policy out on `records` (rollout.n episodes each) and score `rewards`: the reward means,
    the tool-call rate and the share of episodes that closed an answer."""
    from rewards.combine import score_batch, summarize

    workers.load_weights(trainer)
    trajs = workers.rollout(records, seed=seed).trajectories
    if not trajs:
        return {}
    scores = summarize(score_batch(trajs, cfg.rewards.components))
    metrics = {f"eval/{k[len('reward/') :]}": v for k, v in scores.items()}
    metrics["eval/tool_call_rate"] = sum(1 for t in trajs if t.tool_calls) / len(trajs)
    metrics["eval/answer_rate"] = sum(1 for t in trajs if t.finish_reason == "answer") / len(trajs)
    metrics["eval/samples"] = float(len(trajs))
    return {k: v for k, v in metrics.items() if not k.endswith("_errors")}
