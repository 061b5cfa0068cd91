"""The pieces GRPO recipes share: config checks, actor set-up, the data sampler, metrics, checkpoints.

Recipes keep the training loop itself in view; what is here is the plumbing around it.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import random
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from recipes.config import ConfigError, save_config

CHECKPOINT_PREFIX = "checkpoint-"


def _offline_env() -> None:
    # ultralytics and the HF hub look hosts up at import unless told not to; runs never need the network.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("YOLO_OFFLINE", "1")
    os.environ.setdefault("YOLO_AUTOINSTALL", "False")
    os.environ.setdefault("YOLO_CONFIG_DIR", str(Path(tempfile.gettempdir()) / "actionrl-yolo"))
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


# ----------------------------------------------------------------------------------------------------- config
def check_config(cfg: Any) -> list:
    """Everything that can be checked before Ray starts: paths, names, batch shapes. Returns the reward specs."""
    from envs.base import available_tools
    from rewards.combine import parse_specs

    problems = []
    if cfg.model.path != "embedded" and not (Path(cfg.model.path) / "config.json").is_file():
        problems.append(f"model.path: no model directory (config.json) at {cfg.model.path}")
    if cfg.data.train != "embedded" and not Path(cfg.data.train).is_file():
        problems.append(f"data.train: records file not found: {cfg.data.train}")
    unknown = sorted(set(enabled_tools(cfg.tools)) - set(available_tools()))
    if unknown:
        problems.append(f"tools.enabled: unknown tool(s) {unknown}; available: {available_tools()}")
    if cfg.rollout.engine not in ("hf", "vllm"):
        problems.append(f"rollout.engine: must be 'hf' or 'vllm', got {cfg.rollout.engine!r}")
    group = cfg.data.batch_size * cfg.rollout.n
    if cfg.rollout.n < 2:
        problems.append("rollout.n: GRPO needs at least 2 rollouts per sample")
    if group % cfg.trainer.world_size:
        problems.append(f"data.batch_size * rollout.n = {group} must be divisible by trainer.world_size")
    problems += check_trainer(cfg.trainer)
    try:
        specs = parse_specs(cfg.rewards.components)
    except (KeyError, ValueError, ImportError) as e:
        problems.append(f"rewards.components: {e}")
        specs = []
    if problems:
        raise ConfigError("bad config:\n  " + "\n  ".join(problems))
    return specs


def check_trainer(tcfg: Any) -> list[str]:
    """Problems with a recipe's `trainer` section (strategy, ZeRO stage, packing budget)."""
    problems = []
    if tcfg.strategy not in ("fsdp2", "deepspeed"):
        problems.append(f"trainer.strategy: 'fsdp2' or 'deepspeed', got {tcfg.strategy!r}")
    if tcfg.strategy == "deepspeed" and tcfg.zero_stage not in (2, 3):
        problems.append(f"trainer.zero_stage: 2 or 3 with DeepSpeed, got {tcfg.zero_stage}")
    if tcfg.pack_max_tokens < 0:
        problems.append(f"trainer.pack_max_tokens: 0 (off) or a positive token budget, got {tcfg.pack_max_tokens}")
    from rl.trainer import ATTN_IMPLEMENTATIONS

    if tcfg.attn_implementation not in ATTN_IMPLEMENTATIONS:
        attn = tcfg.attn_implementation
        problems.append(f"trainer.attn_implementation: one of {ATTN_IMPLEMENTATIONS}, got {attn!r}")
    return problems


def resolve_embedded(model_path: str, train_path: str, split: str = "train") -> tuple[str, str]:
    """Build (or reuse) the tiny model and the sample data where the config says "embedded"; `split` names the
    sample records file to train on (a key of `build_sample_data`'s paths: "train", "aqa_train", ...)."""
    _offline_env()
    if model_path == "embedded":
        from data_builders.tiny_model import build_tiny_model, default_model_dir

        model_path = str(build_tiny_model(default_model_dir()))
    if train_path == "embedded":
        from data_builders.sample_data import build_sample_data, default_sample_dir

        train_path = str(build_sample_data(default_sample_dir())[split])
    return model_path, train_path


def resolve_init_from(init_from: str, model_path: str, tools_cfg: Any = None) -> str:
    """The model directory GRPO starts from: an SFT checkpoint when `init_from` names one, else `model_path`.

    When the checkpoint sits in a recipe's run directory (its `config.yaml` beside it) and that run enabled other
    tools than `tools_cfg` does, a warning names both sets: the system prompt lists the enabled tools' schemas, so
    a policy fine-tuned on one set samples from a prompt it has not seen."""
    if not init_from:
        return model_path
    path = Path(init_from).expanduser().resolve()
    if not (path / "config.json").is_file():
        raise ConfigError(f"init_from: no model directory (config.json) at {init_from}")
    print(f"[init_from] starting from {path} (no warm-up cold start)")
    if tools_cfg is not None:
        trained = tools_of_run(path.parent / "config.yaml")
        now = sorted(enabled_tools(tools_cfg))
        if trained is not None and trained != now:
            extra, missing = sorted(set(now) - set(trained)), sorted(set(trained) - set(now))
            fix = [f"tools.enabled.{n}=null" for n in extra] + [f"tools.enabled.{n}={{}}" for n in missing]
            print(
                f"[init_from] WARNING: {path.parent} was trained with tools {trained}, this run enables {now}: "
                f"the system prompt differs from the one the checkpoint learned. To match: {' '.join(fix)}",
                file=sys.stderr,
            )
    return str(path)


def tools_of_run(config_path: Path) -> list[str] | None:
    """The enabled tool names a recipe run saved in its `config.yaml`, or None where there is none to read."""
    import yaml

    try:
        saved = yaml.safe_load(config_path.read_text())
        enabled = saved["tools"]["enabled"]
    except (OSError, yaml.YAMLError, KeyError, TypeError):
        return None
    return sorted(name for name, conf in (enabled or {}).items() if conf is not None)


def prepare_run_dir(cfg: Any) -> Path:
    run_dir = Path(cfg.run.run_dir).expanduser().resolve()
    cfg.run.run_dir = str(run_dir)
    if run_dir.exists() and not cfg.run.resume and any(run_dir.glob(CHECKPOINT_PREFIX + "*")):
        raise ConfigError(f"run.run_dir {run_dir} already holds checkpoints: pass run.resume=true or a new run_dir")
    run_dir.mkdir(parents=True, exist_ok=True)
    save_config(cfg, run_dir / "config.yaml")
    return run_dir


def load_train_records(path: str) -> list[dict]:
    from data_builders.schema import load_records

    records = load_records(path)
    if not records:
        raise ConfigError(f"data.train: no records in {path}")
    return records


# ----------------------------------------------------------------------------------------------------- actors
def init_ray(run_cfg: Any) -> None:
    import ray

    if ray.is_initialized():
        return
    env = {"env_vars": {k: os.environ[k] for k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "YOLO_OFFLINE",
                                                     "YOLO_AUTOINSTALL", "YOLO_CONFIG_DIR", "TOKENIZERS_PARALLELISM")
                        if k in os.environ}}  # fmt: skip
    if run_cfg.ray_address or os.environ.get("RAY_ADDRESS"):
        ray.init(address=run_cfg.ray_address or None, runtime_env=env)
    else:
        ray.init(num_cpus=run_cfg.ray_num_cpus, include_dashboard=False, runtime_env=env)


def enabled_tools(tools_cfg: Any) -> dict[str, dict]:
    """Tool name -> config of the enabled tools (a tool whose config is null/None is disabled)."""
    return {name: dict(conf) for name, conf in tools_cfg.enabled.items() if conf is not None}


def make_tool_pool(tools_cfg: Any):
    from envs.pool import ToolPool

    options = {"num_cpus": tools_cfg.num_cpus, "num_gpus": tools_cfg.num_gpus}
    return ToolPool(
        enabled_tools(tools_cfg),
        num_actors_per_tool=tools_cfg.actors_per_tool,
        actor_options=options,
        timeout_s=tools_cfg.timeout_s,
        cache_size=tools_cfg.cache_size,
    )


def make_rollout_workers(cfg: Any, model_path: str, tools: Any, system_prompt: str) -> list:
    import ray

    from rollout.worker import RolloutWorker

    remote = ray.remote(num_cpus=cfg.rollout.num_cpus, num_gpus=cfg.rollout.num_gpus)(RolloutWorker)
    return [
        remote.remote(
            model_path,
            engine=cfg.rollout.engine,
            engine_kwargs=dict(cfg.rollout.engine_kwargs),
            tools=tools,
            num_frames=cfg.data.num_frames,
            max_side=cfg.data.max_side,
            system_prompt=system_prompt,
            max_turns=cfg.rollout.max_turns,
            max_response_tokens=cfg.rollout.max_response_tokens,
            seed=cfg.run.seed + i,
            torch_threads=1 if cfg.rollout.num_gpus == 0 else None,
        )
        for i in range(cfg.rollout.num_workers)
    ]


def make_reward_pool(rewards_cfg: Any, specs: list):
    from rewards.worker import RewardPool

    return RewardPool(specs, num_workers=rewards_cfg.num_workers, actor_options={"num_cpus": rewards_cfg.num_cpus})


def make_trainer(tcfg: Any, model_path: str, seed: int, temperature: float = 1.0):
    from rl.trainer import TrainerGroup

    return TrainerGroup(
        model_path,
        world_size=tcfg.world_size,
        strategy=tcfg.strategy,
        zero_stage=tcfg.zero_stage,
        pack_max_tokens=tcfg.pack_max_tokens,
        attn_implementation=tcfg.attn_implementation,
        lr=tcfg.lr,
        weight_decay=tcfg.weight_decay,
        grad_clip=tcfg.grad_clip,
        clip_ratio=tcfg.clip_ratio,
        kl_coef=tcfg.kl_coef,
        micro_batch_size=tcfg.micro_batch_size,
        mini_batches=tcfg.mini_batches,
        seed=seed,
        temperature=temperature,  # log-probs of the distribution the rollout sampled from
        actor_options={"num_cpus": tcfg.num_cpus, "num_gpus": tcfg.num_gpus},
    )


# ------------------------------------------------------------------------------------------------------- data
@dataclass
class Sampler:
    """Deterministic epochs over the records: a seeded shuffle per epoch, and a cursor saved with checkpoints."""

    records: list[dict]
    batch_size: int
    seed: int = 0
    epoch: int = 0
    index: int = 0

    def _order(self) -> list[int]:
        order = list(range(len(self.records)))
        random.Random(self.seed * 1_000_003 + self.epoch).shuffle(order)
        return order

    def next_batch(self) -> list[dict]:
        batch = []
        while len(batch) < self.batch_size:
            order = self._order()
            if self.index >= len(order):
                self.epoch, self.index = self.epoch + 1, 0
                continue
            batch.append(self.records[order[self.index]])
            self.index += 1
        return batch

    def state(self) -> dict:
        return {"epoch": self.epoch, "index": self.index}

    def load_state(self, state: dict) -> None:
        self.epoch, self.index = int(state["epoch"]), int(state["index"])


def rollout(workers: list, batch: list[dict], rcfg: Any, seed: int) -> tuple[list, int, dict]:
    """Split the batch across the rollout workers.

    Returns the trainable trajectories, how many samples were skipped (their video failed to decode), and the
    tool counters of this step summed over workers ({tool: {calls, errors, timeouts, cache_hits}}).
    """
    import ray

    from rollout.engine import SamplingParams

    sampling = SamplingParams(
        max_new_tokens=rcfg.max_new_tokens,
        temperature=rcfg.temperature,
        top_p=rcfg.top_p,
        top_k=rcfg.top_k,
        seed=seed,
    )
    chunks = [batch[i :: len(workers)] for i in range(len(workers))]
    futures = [w.rollout.remote(chunk, rcfg.n, sampling) for w, chunk in zip(workers, chunks) if chunk]
    trajs = [t for part in ray.get(futures) for t in part]
    tool_stats: dict[str, dict[str, int]] = {}
    for stats in ray.get([w.tool_stats.remote() for w in workers]):
        for name, counts in stats.items():
            mine = tool_stats.setdefault(name, {})
            for key, value in counts.items():
                mine[key] = mine.get(key, 0) + value
    ok = [t for t in trajs if t.finish_reason != "video_error"]
    skipped = len({t.sample_id for t in trajs if t.finish_reason == "video_error"})
    return ok, skipped, tool_stats


def warmup_sft(cfg: Any, workers: list, trainer: Any, records: list[dict], run_dir: Path) -> list[dict]:
    """Supervised cold start on template-teacher chains replayed through the real tools (see
    data_builders.template_teacher). Logs one line per step to <run_dir>/warmup.jsonl."""
    import ray
    from tqdm import tqdm

    from data_builders.template_teacher import template_chain
    from rollout.engine import SamplingParams

    wcfg, world = cfg.warmup, cfg.trainer.world_size
    if wcfg.batch_size % world:
        raise ConfigError(f"warmup.batch_size {wcfg.batch_size} must be a multiple of trainer.world_size {world}")
    usable = [r for r in records if r.get("task") == "ovar"]
    if not usable:  # the template teacher writes Video-STAR chains, which only ovar records have
        raise ConfigError("warmup.steps > 0 needs ovar records (the template teacher's); set warmup.steps=0")
    tools = list(enabled_tools(cfg.tools))
    scripts = [template_chain(r, cfg.data.num_frames, tools=tools) for r in usable]
    chunks = [(usable[i :: len(workers)], scripts[i :: len(workers)]) for i in range(len(workers))]
    sampling = SamplingParams(max_new_tokens=256)
    futures = [w.replay.remote(recs, scr, sampling) for w, (recs, scr) in zip(workers, chunks) if recs]
    chains = [t for part in ray.get(futures) for t in part if t.finish_reason == "answer"]
    ray.get([w.tool_stats.remote() for w in workers])  # the warm-up's tool calls are not the first step's
    if not chains:
        raise RuntimeError(
            "warm-up: no teacher chain completed (check the tool replies fit rollout.max_response_tokens)"
        )
    calls = [c for t in chains for c in t.tool_calls]
    print(f"[warmup] {len(chains)}/{len(usable)} chains, {sum(c.ok for c in calls)}/{len(calls)} tool calls ok")
    with (run_dir / "warmup_chains.jsonl").open("w") as f:  # the cold-start data, to inspect
        for t in chains:
            turns = [{"text": turn.text, "tool_calls": [dataclasses.asdict(c) for c in turn.tool_calls]}
                     for turn in t.turns]  # fmt: skip
            f.write(json.dumps({"id": t.sample_id, "video": t.record.get("video"), "turns": turns}) + "\n")
    rows = []
    with (run_dir / "warmup.jsonl").open("a") as log:
        for i in tqdm(range(wcfg.steps), desc="warm-up SFT", unit="step"):
            batch = [chains[(i * wcfg.batch_size + j) % len(chains)] for j in range(wcfg.batch_size)]
            row = {"warmup_step": i + 1, **trainer.sft_step(batch, wcfg.lr)}
            log.write(json.dumps(row) + "\n")
            rows.append(row)
    trainer.reset_optimizer()
    trainer.reset_reference()  # the KL term holds GRPO near the cold-start policy, as an SFT checkpoint would
    trainer.sync_weights(workers)
    print(f"[warmup] loss {rows[0]['sft/loss']:.3f} -> {rows[-1]['sft/loss']:.3f}")
    return rows


def advantages(totals: list[float], trajs: list) -> list[float]:
    from rl.grpo import compute_advantages

    return compute_advantages(totals, [t.sample_id for t in trajs])


def fit_world_size(trajs: list, world_size: int) -> tuple[list, int]:
    """Drop whole trailing groups until the batch splits evenly across the trainer ranks (after skipped videos)."""
    dropped = 0
    while trajs and len(trajs) % world_size:
        last = trajs[-1].sample_id
        n = sum(1 for t in trajs if t.sample_id == last)
        trajs, dropped = trajs[:-n], dropped + 1
    return trajs, dropped


# ---------------------------------------------------------------------------------------------------- metrics
def _stats(prefix: str, values: list[float]) -> dict[str, float]:
    if not values:
        return {}
    mean = sum(values) / len(values)
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / len(values))
    return {f"{prefix}_mean": mean, f"{prefix}_std": std, f"{prefix}_min": min(values), f"{prefix}_max": max(values)}


def step_metrics(step, trajs, skipped, dropped, scored, advs, train_metrics, tool_stats, times) -> dict[str, float]:
    """One flat dict per step: reward components, advantages, train stats, tool calls, tokens, time split."""
    from rewards.combine import summarize

    calls = [c for t in trajs for c in t.tool_calls]
    tool_s = sum(t.timings.get("tools", 0.0) for t in trajs)
    gen_s = sum(t.timings.get("generate", 0.0) for t in trajs)
    # Tool time is spent inside the rollout call; split the rollout wall time by the workers' own accounting.
    tools_share = tool_s / (tool_s + gen_s) if tool_s + gen_s > 0 else 0.0
    m: dict[str, float] = {"step": step}
    m.update(summarize(scored))
    m.update(_stats("adv", list(advs)))
    m.update({k: float(v) for k, v in train_metrics.items()})
    m.update({
        "rollout/trajectories": len(trajs),
        "rollout/skipped_samples": skipped,  # their video failed to decode
        "rollout/dropped_groups": dropped,  # left out so the batch splits evenly across trainer ranks
        "rollout/model_tokens_mean": sum(t.num_model_tokens for t in trajs) / max(1, len(trajs)),
        "rollout/response_tokens_mean": sum(len(t.response_ids) for t in trajs) / max(1, len(trajs)),
        "rollout/turns_mean": sum(len(t.turns) for t in trajs) / max(1, len(trajs)),
        "tools/calls": len(calls),
        "tools/failed": sum(1 for c in calls if not c.ok),
        "tools/cached": sum(1 for c in calls if c.cached),
        "tools/call_rate": sum(1 for t in trajs if t.tool_calls) / max(1, len(trajs)),
    })  # fmt: skip
    for name, stat in tool_stats.items():
        for key, value in stat.items():
            m[f"tools/{name}/{key}"] = value
    rollout_s = times["rollout"]
    m.update({
        "time/rollout": rollout_s * (1 - tools_share),
        "time/tools": rollout_s * tools_share,
        "time/rewards": times["rewards"],
        "time/train": times["train"],
        "time/sync": times["sync"],
        "time/step": times["step"],
    })  # fmt: skip
    return m


class MetricsLogger:
    """Appends one JSON line per step to metrics.jsonl and prints a one-line summary."""

    KEYS = ("reward/total_mean", "train/pg_loss", "train/kl", "train/grad_norm", "tools/calls", "time/step")

    def __init__(self, run_dir: Path):
        self.path = Path(run_dir) / "metrics.jsonl"
        self.last: dict[str, float] = {}

    def log(self, metrics: dict[str, float]) -> None:
        self.last = metrics
        with self.path.open("a") as f:
            f.write(json.dumps(metrics) + "\n")
        shown = "  ".join(f"{k.split('/')[-1]}={metrics[k]:.4g}" for k in self.KEYS if k in metrics)
        print(f"[step {int(metrics['step'])}] {shown}", flush=True)

    def plot(self, out: Path) -> Path:
        """A PNG of the reward curves (total and each component) over steps."""
        rows = [json.loads(line) for line in self.path.read_text().splitlines() if line.strip()]
        return plot_rewards(rows, out)


def plot_rewards(rows: list[dict], out: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    keys = sorted({k for r in rows for k in r if k.startswith("reward/") and k.endswith("_mean")})
    fig, ax = plt.subplots(figsize=(7, 4))
    steps = [r["step"] for r in rows]
    for key in keys:
        ax.plot(steps, [r.get(key, float("nan")) for r in rows], marker="o", label=key[len("reward/") : -5])
    ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    ax.set_xlabel("step")
    ax.set_ylabel("mean reward")
    ax.set_title("Rewards per step")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out


# ------------------------------------------------------------------------------------------------ checkpoints
def save_checkpoint(trainer: Any, run_dir: Path, step: int, sampler: Sampler) -> Path:
    """`checkpoint-<step>/`: loads with from_pretrained as is; trainer_state/ holds what exact resume needs."""
    path = Path(run_dir) / f"{CHECKPOINT_PREFIX}{step}"
    t0 = time.perf_counter()
    trainer.save_checkpoint(str(path), {"step": step, "sampler": sampler.state()})
    print(f"[checkpoint] {path} ({time.perf_counter() - t0:.1f}s)", flush=True)
    return path


def latest_checkpoint(run_dir: Path) -> Path | None:
    done = [p for p in Path(run_dir).glob(CHECKPOINT_PREFIX + "*") if (p / "trainer_state").is_dir()]
    done = [p for p in done if p.name[len(CHECKPOINT_PREFIX) :].isdigit()]
    return max(done, key=lambda p: int(p.name[len(CHECKPOINT_PREFIX) :]), default=None)


def maybe_resume(cfg: Any, run_dir: Path, trainer: Any, sampler: Sampler) -> int:
    """With run.resume, restore the latest checkpoint (weights, optimizer, RNG, data cursor); returns its step."""
    if not cfg.run.resume:
        return 0
    ckpt = latest_checkpoint(run_dir)
    if ckpt is None:
        print(f"[resume] no checkpoint in {run_dir}; starting at step 0")
        return 0
    state = trainer.load_checkpoint(str(ckpt))
    sampler.load_state(state["sampler"])
    print(f"[resume] from {ckpt} (step {state['step']})")
    return int(state["step"])
