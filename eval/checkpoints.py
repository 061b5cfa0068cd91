"""Checkpoint directories: is this one loadable, which training step is it, which ones has a run written so far.

Any Hugging Face model directory loads (config.json, safetensors weights, processor files). The recipes write
`<run_dir>/checkpoint-<step>/` whole, with a `COMPLETE` marker listing every file and its size
(common/checkpoint_marker.py, the rule training resumes by too); a run's `config.yaml` says how many steps it will
make.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from common.checkpoint_marker import complete_checkpoints, read_marker

_STEP = re.compile(r"(?:checkpoint|step|global_step)[-_]?(\d+)$")


class CheckpointError(ValueError):
    """A directory that is not a loadable checkpoint; the message says what was expected."""


@dataclass(frozen=True)
class Checkpoint:
    path: Path
    step: int | None  # the training step it was saved at, when known

    @property
    def label(self) -> str:
        return self.path.name


def check_checkpoint(path: str | Path) -> Checkpoint:
    """A loadable model directory, or CheckpointError saying what is missing. Pickle weights are refused."""
    path = Path(path).expanduser().resolve()
    expected = "a model directory with config.json, *.safetensors weights and the processor/tokenizer files"
    if not path.is_dir():
        raise CheckpointError(f"checkpoint {path}: not a directory (expected {expected})")
    config = path / "config.json"
    try:
        model_type = json.loads(config.read_text()).get("model_type")
    except (OSError, ValueError) as e:
        raise CheckpointError(f"checkpoint {path}: no readable config.json ({e}); expected {expected}") from None
    if not model_type:
        raise CheckpointError(f"checkpoint {path}: config.json has no model_type; expected {expected}")
    if not any(path.glob("*.safetensors")):
        bins = [p.name for p in path.glob("*.bin")]
        why = f"only pickle weights {bins[:3]}, which are not loaded" if bins else "no *.safetensors weights"
        raise CheckpointError(f"checkpoint {path}: {why}; expected {expected}")
    if not (path / "tokenizer.json").is_file() and not (path / "tokenizer_config.json").is_file():
        raise CheckpointError(f"checkpoint {path}: no tokenizer files; expected {expected}")
    return Checkpoint(path=path, step=checkpoint_step(path))


def checkpoint_step(path: str | Path) -> int | None:
    """The step the recipe recorded (the COMPLETE marker, else `trainer_state/extra_state.json`), else from a name
    like checkpoint-40 / step_40, else None."""
    path = Path(path)
    step = (read_marker(path) or {}).get("step")
    if isinstance(step, int):
        return step
    try:
        step = json.loads((path / "trainer_state" / "extra_state.json").read_text()).get("step")
        if isinstance(step, int):
            return step
    except (OSError, ValueError, AttributeError):
        pass
    match = _STEP.search(path.name)
    return int(match[1]) if match else None


def run_checkpoints(run_dir: str | Path) -> list[Checkpoint]:
    """The complete checkpoints of a recipe's run directory, by step: their marker is there and every file it
    lists has its size (one being written, cut short or pruned is not listed). Those retention cut to their
    weights (run.keep_every) are listed too."""
    return [Checkpoint(path=p.resolve(), step=step) for step, p in complete_checkpoints(run_dir)]


def run_final_step(run_dir: str | Path) -> int | None:
    """`run.steps` from the run's config.yaml (the recipe always saves the last step), or None if unknown."""
    path = Path(run_dir) / "config.yaml"
    if not path.is_file():
        return None
    try:
        from omegaconf import OmegaConf

        steps = OmegaConf.load(path).get("run", {}).get("steps")
    except Exception:  # a config from another tool: no stop condition from it
        return None
    return int(steps) if isinstance(steps, int) else None
