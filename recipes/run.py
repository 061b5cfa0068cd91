"""What both training loops (recipes/grpo.py, recipes/sft.py) do around their steps: resolve the embedded model
and data, prepare the run directory, start Ray, draw batches, and save and resume checkpoints.
"""

from __future__ import annotations

import os
import random
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from recipes.config import EMBEDDED, ConfigError, save_config
from rl.checkpoint import checkpoint_path, latest_checkpoint

OFFLINE_ENV = (
    "HF_HUB_OFFLINE",
    "TRANSFORMERS_OFFLINE",
    "YOLO_OFFLINE",
    "YOLO_AUTOINSTALL",
    "YOLO_CONFIG_DIR",
    "TOKENIZERS_PARALLELISM",
)


def offline_env() -> None:
    # ultralytics and the HF hub look hosts up at import unless told not to; runs never need the network.
    for key, value in (
        ("HF_HUB_OFFLINE", "1"),
        ("TRANSFORMERS_OFFLINE", "1"),
        ("YOLO_OFFLINE", "1"),
        ("YOLO_AUTOINSTALL", "False"),
        ("TOKENIZERS_PARALLELISM", "false"),
        ("YOLO_CONFIG_DIR", str(Path(tempfile.gettempdir()) / "actionrl-yolo")),
    ):
        os.environ.setdefault(key, value)


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
    """The absolute run directory, with the resolved config saved in it (`config.yaml`, read back by eval)."""
    run_dir = Path(cfg.run.run_dir).expanduser().resolve()
    cfg.run.run_dir = str(run_dir)
    if run_dir.exists() and not cfg.run.resume and latest_checkpoint(run_dir, complete=False) is not None:
        raise ConfigError(f"run.run_dir {run_dir} already holds checkpoints: pass run.resume=true or a new run_dir")
    run_dir.mkdir(parents=True, exist_ok=True)
    save_config(cfg, run_dir / "config.yaml")
    return run_dir


def init_ray(run_cfg: Any) -> None:
    import ray

    if ray.is_initialized():
        return
    env = {"env_vars": {k: os.environ[k] for k in OFFLINE_ENV if k in os.environ}}
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
    """Deterministic epochs over the records: a seeded shuffle per epoch, and a cursor saved with checkpoints."""

    records: list
    batch_size: int
    seed: int = 0
    epoch: int = 0
    index: int = 0

    def _order(self) -> list[int]:
        order = list(range(len(self.records)))
        random.Random(self.seed * 1_000_003 + self.epoch).shuffle(order)
        return order

    def next_batch(self) -> list:
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


def save_checkpoint(trainer: Any, run_dir: Path, step: int, sampler: Sampler) -> Path:
    """`checkpoint-<step>/`: loads with from_pretrained as is; trainer_state/ holds what exact resume needs."""
    path = checkpoint_path(run_dir, step)
    t0 = time.perf_counter()
    trainer.save_checkpoint(str(path), {"step": step, "sampler": sampler.state()})
    print(f"[checkpoint] {path} ({time.perf_counter() - t0:.1f}s)", flush=True)
    return path


def resume(run_cfg: Any, run_dir: Path, trainer: Any, sampler: Sampler) -> int:
    """With run.resume, restore the latest checkpoint (weights, optimizer, RNG, data cursor); returns its step."""
    if not run_cfg.resume:
        return 0
    ckpt = latest_checkpoint(run_dir)
    if ckpt is None:
        print(f"[resume] no checkpoint in {run_dir}; starting at step 0")
        return 0
    state = trainer.load_checkpoint(str(ckpt))
    sampler.load_state(state["sampler"])
    print(f"[resume] from {ckpt} (step {state['step']})")
    return int(state["step"])
