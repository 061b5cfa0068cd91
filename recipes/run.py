"""What both training loops (recipes/grpo.py, recipes/sft.py) do around their steps: resolve the embedded model
and data, prepare the run directory, start Ray, draw batches, and save and resume checkpoints.

Checkpoints you can trust: a save appears whole or not at all (`rl.checkpoint.save_rank`) and is followed by the
run's retention (run.keep_last, run.keep_every); resume takes the newest complete checkpoint, falls back to the one
before when it does not load, and refuses a run whose config changed what the checkpoint was trained on (the data
file, the batch shape, the rewards; `run.resume_force`) or whose reference policy has other weights.
"""

from __future__ import annotations

import json
import os
import random
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from common.checkpoint_marker import complete_checkpoints, incomplete_reason, step_dirs
from common.offline import offline_env
from recipes.config import EMBEDDED, ConfigError, RunConfig, save_config
from rl.checkpoint import (
    CheckpointMismatch,
    checkpoint_path,
    latest_checkpoint,
    prune_checkpoints,
    remove_partial_saves,
)


def resolve_model(path: str) -> str:
    """A model directory: `path`, or the tiny model built (once) for "embedded"."""
    offline_env()
    if path != EMBEDDED:
        return str(Path(path).expanduser().resolve())
    from common.tiny_model import build_tiny_model, default_model_dir

    return str(build_tiny_model(default_model_dir()))


def resolve_records(train: str) -> str:
    """A records file: `train`, or one split of the sample data built (once) for "embedded[:split]"."""
    if not train.startswith(EMBEDDED):
        return str(Path(train).expanduser().resolve())
    from common.sample_data import build_sample_data, default_sample_dir

    return str(build_sample_data(default_sample_dir())[train.partition(":")[2] or "train"])


def load_records(path: str) -> list[dict]:
    from common.schema import load_records as load

    records = load(path)
    if not records:
        raise ConfigError(f"data.train: no records in {path}")
    return records


def prepare_run_dir(cfg: Any) -> Path:
    """The absolute run directory, with the resolved config saved in it (`config.yaml`, read back by eval). When
    resuming, the config.yaml already there is compared with `cfg` first (`check_resume_config`)."""
    run_dir = Path(cfg.run.run_dir).expanduser().resolve()
    cfg.run.run_dir = str(run_dir)
    has_checkpoints = latest_checkpoint(run_dir, complete=False) is not None
    if has_checkpoints and not cfg.run.resume:
        raise ConfigError(f"run.run_dir {run_dir} already holds checkpoints: pass run.resume=true or a new run_dir")
    if has_checkpoints and (run_dir / "config.yaml").is_file():
        check_resume_config(run_dir / "config.yaml", cfg)
    run_dir.mkdir(parents=True, exist_ok=True)
    save_config(cfg, run_dir / "config.yaml")
    return run_dir


# What a checkpoint was trained on: resuming under other values would silently train another experiment.
RESUME_KEYS = ("data.train", "data.batch_size", "rollout.n", "rewards.components", "best_of_g")
_ABSENT = object()


def resume_changes(saved: Any, cfg: Any) -> list[str]:
    """Each of RESUME_KEYS (and trainer.world_size when either config uses DeepSpeed, whose optimizer partitions
    are per rank) whose value differs between `saved` (a run's config.yaml, as a mapping) and the config `cfg`, as
    "key: old -> new" (JSON values). A key either config lacks is not compared; a data file named another way
    (a relative path, a symlink) is the same file.

    >>> from recipes.grpo import GrpoConfig
    >>> saved = {"data": {"train": "a.jsonl", "batch_size": 2}, "rollout": {"n": 8}, "trainer": {"world_size": 1}}
    >>> resume_changes(saved, GrpoConfig())
    ['data.train: "a.jsonl" -> "embedded"', 'rollout.n: 8 -> 4']
    """
    from omegaconf import OmegaConf

    old = saved if isinstance(saved, dict) else OmegaConf.to_container(saved)
    new = OmegaConf.to_container(OmegaConf.structured(cfg))
    keys = list(RESUME_KEYS)
    if "deepspeed" in (_get(old, "trainer.strategy"), _get(new, "trainer.strategy")):
        keys.append("trainer.world_size")
    changes = []
    for key in keys:
        a, b = _get(old, key), _get(new, key)
        if a is _ABSENT or b is _ABSENT or a == b or (key == "data.train" and _same_file(a, b)):
            continue
        changes.append(f"{key}: {json.dumps(a)} -> {json.dumps(b)}")
    return changes


def _get(tree: dict, dotted: str) -> Any:
    for part in dotted.split("."):
        if not isinstance(tree, dict) or part not in tree:
            return _ABSENT
        tree = tree[part]
    return tree


def _same_file(a: Any, b: Any) -> bool:
    try:
        return os.path.samefile(Path(a).expanduser(), Path(b).expanduser())
    except (OSError, TypeError):
        return False


def check_resume_config(path: Path, cfg: Any) -> None:
    """Refuse (ConfigError naming each changed key with its old and new value) to resume the run of `path` (its
    config.yaml) under a config that changed what it trained on (`resume_changes`), unless run.resume_force."""
    from omegaconf import OmegaConf

    changes = resume_changes(OmegaConf.load(path), cfg)
    if not changes:
        return
    listing = "\n  ".join(changes)
    if cfg.run.resume_force:
        print(f"[resume] WARNING (run.resume_force): changed since {path}:\n  {listing}", file=sys.stderr)
        return
    raise ConfigError(
        f"run.resume: {path.parent} was trained with another config; changed since its config.yaml:\n  {listing}\n"
        "Resume with the old values, start a new run.run_dir, or pass run.resume_force=true"
    )


def init_ray(run_cfg: Any) -> None:
    import ray

    if ray.is_initialized():
        return
    env = {"env_vars": offline_env()}
    if run_cfg.ray_address or os.environ.get("RAY_ADDRESS"):
        ray.init(address=run_cfg.ray_address or None, runtime_env=env)
    else:
        ray.init(num_cpus=run_cfg.ray_num_cpus, include_dashboard=False, runtime_env=env)


def resolve_init_from(init_from: str, rollout: Any) -> str:
    """The checkpoint a run starts from. When it sits in a recipe's run directory (its config.yaml beside it) whose
    system prompt or tools differ from `rollout`'s, a warning names the difference: the policy would sample from a
    prompt it has not seen."""
    from eval.config import run_rollout_config

    path = Path(init_from).expanduser().resolve()
    if not (path / "config.json").is_file():
        raise ConfigError(f"init_from: no model directory (config.json) at {init_from}")
    print(f"[init_from] starting from {path}")
    trained = run_rollout_config(path.parent)
    if trained is None:
        return str(path)
    trained.resolve_system_prompt()
    before, now = sorted(trained.enabled_tools()), sorted(rollout.enabled_tools())
    if before != now:
        extra, missing = sorted(set(now) - set(before)), sorted(set(before) - set(now))
        fix = [f"rollout.tools.{n}=null" for n in extra] + [f"rollout.tools.{n}={{}}" for n in missing]
        print(
            f"[init_from] WARNING: {path.parent} was trained with tools {before}, this run enables {now}: the "
            f"system prompt differs from the one the checkpoint learned. To match: {' '.join(fix)}",
            file=sys.stderr,
        )
    if trained.system_prompt != rollout.system_prompt:
        print(
            f"[init_from] WARNING: {path.parent} was trained with another rollout.system_prompt than this run's",
            file=sys.stderr,
        )
    return str(path)


@dataclass
class Sampler:
    """Deterministic epochs over the records: a seeded shuffle per epoch, and a cursor saved with checkpoints.
    Records whose key (`rollout.group.record_key`) is in `skip` (the run's quarantine) are passed over."""

    records: list
    batch_size: int
    seed: int = 0
    epoch: int = 0
    index: int = 0
    skip: set = field(default_factory=set)

    def _order(self) -> list[int]:
        order = list(range(len(self.records)))
        random.Random(self.seed * 1_000_003 + self.epoch).shuffle(order)
        return order

    def next_batch(self) -> list:
        from rollout.group import record_key

        if self.skip and all(record_key(r) in self.skip for r in self.records):
            raise RuntimeError(f"every one of the {len(self.records)} training records is quarantined")
        batch = []
        while len(batch) < self.batch_size:
            order = self._order()
            if self.index >= len(order):
                self.epoch, self.index = self.epoch + 1, 0
                continue
            record = self.records[order[self.index]]
            self.index += 1
            if not self.skip or record_key(record) not in self.skip:
                batch.append(record)
        return batch

    def state(self) -> dict:
        return {"epoch": self.epoch, "index": self.index}

    def load_state(self, state: dict) -> None:
        self.epoch, self.index = int(state["epoch"]), int(state["index"])


class Quarantine:
    """Records that crashed or hung a rollout worker twice (`rollout.group.RolloutGroup`): one JSON line each in
    `<run_dir>/quarantine.jsonl` ({"key", "id", "video", "why"}), read back when the run resumes; `keys` is the set
    the Sampler skips. Delete a line to give a record another chance."""

    def __init__(self, run_dir: str | Path):
        self.path = Path(run_dir) / "quarantine.jsonl"
        self.keys: set[str] = set()
        if self.path.is_file():
            for n, line in enumerate(self.path.read_text().splitlines(), 1):
                try:
                    self.keys.add(str(json.loads(line)["key"]))
                except (ValueError, KeyError, TypeError):
                    print(f"[quarantine] {self.path}:{n}: not a quarantine line, ignored: {line[:200]!r}")
        if self.keys:
            print(f"[quarantine] {len(self.keys)} records of {self.path} are not sampled")

    def add(self, record: Any, why: str) -> None:
        from rollout.group import record_key

        key = record_key(record)
        self.keys.add(key)
        fields = record if isinstance(record, dict) else {}
        line = {"key": key, "id": fields.get("id"), "video": fields.get("video"), "why": why}
        with self.path.open("a") as f:
            f.write(json.dumps(line, default=str) + "\n")


def save_checkpoint(trainer: Any, run_dir: Path, step: int, sampler: Sampler, run_cfg: Any = None) -> Path:
    """`checkpoint-<step>/`: loads with from_pretrained as is; trainer_state/ holds what exact resume needs. Written
    whole or not at all; then the older checkpoints the run's retention does not keep are pruned (run.keep_last,
    run.keep_every of `run_cfg`, by default of the run's config.yaml)."""
    run_dir = Path(run_dir)
    for name in remove_partial_saves(run_dir):
        print(f"[checkpoint] removed {name}: a save that did not finish")
    path = checkpoint_path(run_dir, step)
    t0 = time.perf_counter()
    trainer.save_checkpoint(str(path), {"step": step, "sampler": sampler.state()})
    print(f"[checkpoint] {path} ({time.perf_counter() - t0:.1f}s)", flush=True)
    run_cfg = run_cfg or saved_run_config(run_dir)
    for line in prune_checkpoints(run_dir, run_cfg.keep_last, run_cfg.keep_every, keep=path):
        print(f"[checkpoint] pruned {line}")
    return path


def saved_run_config(run_dir: Path) -> RunConfig:
    """The retention fields of the `run:` section of run_dir/config.yaml (the defaults when it has none)."""
    from omegaconf import OmegaConf

    path, out = Path(run_dir) / "config.yaml", RunConfig()
    run = OmegaConf.load(path).get("run") if path.is_file() else None
    for name in ("keep_last", "keep_every"):
        if run is not None and isinstance(run.get(name), int):
            setattr(out, name, run.get(name))
    return out


def resume(run_cfg: Any, run_dir: Path, trainer: Any, sampler: Sampler) -> int:
    """With run.resume, restore the newest complete checkpoint (weights, optimizer, RNG, data cursor); returns its
    step. One that does not load is reported and the one before it tried; a checkpoint this trainer may not resume
    (reference policy, strategy) is refused (ConfigError)."""
    if not run_cfg.resume:
        return 0
    for name in remove_partial_saves(run_dir):
        print(f"[resume] removed {name}: a save that did not finish")
    for _, path in step_dirs(run_dir):
        reason = incomplete_reason(path)
        if reason:
            print(f"[resume] ignoring {path.name}: {reason}", file=sys.stderr)
    candidates = [path for _, path in reversed(complete_checkpoints(run_dir, resumable=True))]
    if not candidates:
        print(f"[resume] no complete checkpoint in {run_dir}; starting at step 0")
        return 0
    failures = []
    for i, ckpt in enumerate(candidates):
        try:
            state = trainer.load_checkpoint(str(ckpt))
        except CheckpointMismatch as e:
            raise ConfigError(f"run.resume: {e}") from None
        except Exception as e:  # a file that does not read: the checkpoint before it may
            why = f"{type(e).__name__}: {str(e)[:500]}"
            then = "trying the checkpoint before it" if i + 1 < len(candidates) else "no complete checkpoint is left"
            print(f"[resume] {ckpt.name} does not load ({why}); {then}", file=sys.stderr)
            failures.append(f"{ckpt.name}: {why}")
            continue
        sampler.load_state(state["sampler"])
        print(f"[resume] from {ckpt} (step {state['step']})")
        return int(state["step"])
    raise RuntimeError(f"[resume] no checkpoint of {run_dir} loads:\n  " + "\n  ".join(failures))
