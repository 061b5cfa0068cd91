"""Recipe configuration: dataclass defaults, then a YAML file, then `key=value` overrides; checked before Ray starts.

A recipe's config is one dataclass per component, each from the package it configures and each documented field
by field: `rollout` (rollout.config.RolloutConfig), `trainer` (rl.config.TrainerConfig), `rewards`
(rewards.config.RewardsConfig), `eval` (eval.config.EvalConfig), and below `model`, `data` and `run`.
`load_config` merges, in order: the dataclass defaults, the recipe's YAML (`config=PATH` on the command line
replaces it), then dotted `key=value` overrides (`rollout.n=8 trainer.lr=1e-6`). An unknown key anywhere fails here
with the closest valid one; wrong types fail here; the config's own `validate()` then names every bad value.
`help_text` prints the whole tree with each field's default and docstring (`python recipes/<recipe>.py --help`).
`save_config` writes the resolved config into the run directory, where evaluation reads it back.
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import math
import textwrap
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any, TypeVar

from common.hints import did_you_mean
from common.waits import DEFAULT_TIMEOUT_S

T = TypeVar("T")
EMBEDDED = "embedded"


class ConfigError(ValueError):
    """A bad config: unknown key, wrong type or value, a file that does not exist."""


@dataclass
class ModelConfig:
    """The policy to train."""

    path: str = EMBEDDED
    """A Hugging Face model directory (Qwen2.5-VL class), or "embedded" for the tiny model built locally."""

    def validate(self, where: str = "model") -> list[str]:
        if self.path != EMBEDDED and not (Path(self.path).expanduser() / "config.json").is_file():
            return [f"{where}.path: no model directory (config.json) at {self.path}"]
        return []


@dataclass
class DataConfig:
    """Training records and how they are drawn."""

    train: str = EMBEDDED
    """Training records (JSONL, the schema of common/schema.py), or "embedded" for the bundled sample data
    ("embedded:aqa_train" for another of its splits)."""
    batch_size: int = 2
    """Samples per step (all ranks together); in GRPO each is rolled out `rollout.n` times."""
    seed: int = 0
    """Seed of the data order (a new shuffle each epoch)."""

    def validate(self, where: str = "data") -> list[str]:
        from common.sample_data import SPLITS

        problems = []
        if self.train.startswith(EMBEDDED):
            split = self.train.partition(":")[2] or "train"
            if self.train not in (EMBEDDED, f"{EMBEDDED}:{split}") or split not in SPLITS:
                problems.append(f"{where}.train: {self.train!r}: the sample data's splits are {', '.join(SPLITS)}")
        elif not Path(self.train).expanduser().is_file():
            problems.append(f"{where}.train: records file not found: {self.train}")
        if self.batch_size < 1:
            problems.append(f"{where}.batch_size: must be >= 1, got {self.batch_size}")
        return problems


@dataclass
class RunConfig:
    """Where the run writes, how long it runs, and the Ray cluster it runs on."""

    run_dir: str = "runs/run"
    """Everything the run writes goes here (made absolute; printed at start and end)."""
    steps: int = 4
    """Training steps (GRPO: batches; SFT: optimizer steps)."""
    save_every: int = 2
    """Checkpoint every N steps (and at the end). A checkpoint appears whole or not at all (a crash or a full disk
    mid-save leaves none behind)."""
    keep_last: int = 3
    """After each save, keep the newest N complete checkpoints whole and prune the older ones (but keep_every's);
    0 keeps every checkpoint."""
    keep_every: int = 0
    """Also keep the weights (not trainer_state/: evaluable, not resumable) of every checkpoint whose step is a
    multiple of N once it is older than keep_last's; 0: off."""
    resume: bool = False
    """Continue from the newest complete checkpoint in run_dir (the one before it, if that one does not load).
    Refused when the data file, the batch shape (data.batch_size, rollout.n, trainer.world_size with DeepSpeed) or
    the reward list differ from run_dir/config.yaml, or when the reference policy's weights changed."""
    resume_force: bool = False
    """With resume: continue although the data file, batch shape or reward list changed (each change is printed).
    It does not override the reference check, nor DeepSpeed's need for the same world size and ZeRO stage."""
    seed: int = 0
    """Seed of the trainer ranks and the rollout sampling."""
    trackers: list[str] = field(default_factory=lambda: ["jsonl"])
    """Where metrics go: any of jsonl (metrics.jsonl, always useful), tensorboard, wandb (offline unless
    WANDB_MODE=online); see docs/tracking.md."""
    ray_address: str = ""
    """Ray cluster to join ("auto" for a running cluster); empty starts a local Ray (or joins a job's)."""
    ray_num_cpus: int = 8
    """Logical CPUs of a local Ray, so the small actors of the embedded default fit on a 2-core machine."""
    timeout_s: float = DEFAULT_TIMEOUT_S
    """Longest wait, in seconds, for one answer of the rollout workers (a batch's rollout, including the engines'
    start on the first; the SFT replay of all chains), the reward workers (their start, a batch) and the eval actors
    (a chunk of records) and the trainer ranks (a step, a weight sync, a checkpoint). An actor silent that long is
    killed and replaced like one that died (run.actor_retries). Raise it for very large batches or slow engine
    loads."""
    actor_retries: int = 2
    """GRPO: a call whose actor died or hung (a rollout worker, a reward worker, an eval actor) runs again on a fresh
    actor, with the current weights, up to this many times; a dead trainer rank rebuilds the trainer from the last
    complete checkpoint up to this many times in the run. Then the run stops naming the actor. See
    docs/reliability.md."""
    max_empty_steps: int = 3
    """GRPO: this many steps in a row whose batch came back empty (every sample skipped: the data or the workers are
    broken) stop the run with what was skipped; 0 never stops."""

    def validate(self, where: str = "run") -> list[str]:
        from recipes.tracking import check_trackers

        problems = [p.replace("run.trackers", f"{where}.trackers") for p in check_trackers(list(self.trackers))]
        for name in ("steps", "save_every", "ray_num_cpus"):
            if getattr(self, name) < 1:
                problems.append(f"{where}.{name}: must be >= 1, got {getattr(self, name)}")
        for name in ("keep_last", "keep_every", "actor_retries"):
            if getattr(self, name) < 0:
                problems.append(f"{where}.{name}: must be >= 0 (0: off), got {getattr(self, name)}")
        if not 0 < self.timeout_s < math.inf:
            problems.append(f"{where}.timeout_s: must be a number of seconds > 0, got {self.timeout_s}")
        if self.max_empty_steps < 0:
            problems.append(
                f"{where}.max_empty_steps: 0 (never stop) or a number of steps, got {self.max_empty_steps}"
            )
        return problems


def validate_sections(cfg: Any) -> list[str]:
    """Every section's own problems (each config dataclass field that has a `validate(where)`)."""
    problems = []
    for f in dataclasses.fields(cfg):
        section = getattr(cfg, f.name)
        if dataclasses.is_dataclass(section) and hasattr(section, "validate"):
            problems += section.validate(f.name)
    return problems


def cli(main: Callable[[list[str]], Any]) -> None:
    """Run a recipe's `main` on the command line's arguments: a bad config prints its message, without a
    traceback, and exits with status 2."""
    import sys

    try:
        main(sys.argv[1:])
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(2) from None


def raise_problems(problems: list[str]) -> None:
    if problems:
        raise ConfigError("bad config:\n  " + "\n  ".join(problems))


# ----------------------------------------------------------------------------------------------------- loading
def split_argv(argv: list[str], default_yaml: str | Path | None) -> tuple[list[str], str | Path | None]:
    """`key=value` overrides and the YAML to use (`config=PATH` replaces `default_yaml`)."""
    overrides, yaml_path = [], default_yaml
    for item in argv:
        if "=" not in item:
            raise ConfigError(f"expected key=value, got {item!r} (python recipes/<recipe>.py --help lists the keys)")
        key, value = item.split("=", 1)
        if key == "config":
            yaml_path = value
        else:
            overrides.append(f"{key}={value}")
    return overrides, yaml_path


def load_config(schema: type[T], argv: list[str], default_yaml: str | Path | None = None) -> T:
    """Merge defaults <- YAML <- overrides into an instance of `schema` (ConfigError on an unknown key, with the
    closest valid one, or on a value of the wrong type)."""
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    overrides, yaml_path = split_argv(argv, default_yaml)
    base = OmegaConf.structured(schema)
    layers = [base]
    if yaml_path:
        path = Path(yaml_path)
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        loaded = OmegaConf.load(path)
        _clear_replaced_mappings(base, loaded)
        layers.append((loaded, str(path)))
    layers.append((OmegaConf.from_dotlist(overrides), "the command line"))
    merged = layers[0]
    for layer, source in layers[1:]:
        try:
            merged = OmegaConf.merge(merged, layer)
        except OmegaConfBaseException as e:
            raise ConfigError(f"bad config in {source}: {_explain(e, schema)}") from None
    try:
        return OmegaConf.to_object(merged)
    except OmegaConfBaseException as e:
        raise ConfigError(f"bad config: {_explain(e, schema)}") from None


def load_recipe_config(schema: type[T], argv: list[str], default_yaml: str | Path | None, title: str = "") -> T:
    """What a recipe's command line gets: `--help` prints the config tree (the YAML applied) and exits; otherwise
    the config, its system prompt file read, checked by its `validate()` and against the resources of a local Ray
    (ConfigError naming every problem)."""
    from recipes.resources import check_before_ray

    if "--help" in argv or "-h" in argv:
        print(help_text(load_config(schema, [], default_yaml), title))
        raise SystemExit(0)
    cfg = load_config(schema, argv, default_yaml)
    cfg.rollout.resolve_system_prompt()
    raise_problems(cfg.validate())
    raise_problems(check_before_ray(cfg))  # a local Ray: will the actors fit?
    return cfg


def _explain(e: Any, schema: type) -> str:
    """An OmegaConf error as one line naming the key; for an unknown key, the closest valid one."""
    from omegaconf.errors import ConfigAttributeError, ConfigKeyError

    key = str(getattr(e, "full_key", "") or getattr(e, "key", "") or "")
    text = str(e).splitlines()[0]
    if isinstance(e, (ConfigKeyError, ConfigAttributeError)):
        owner = getattr(e, "object_type", None)
        valid = [f.name for f in dataclasses.fields(owner)] if dataclasses.is_dataclass(owner) else []
        leaf = key.rsplit(".", 1)[-1]
        if "." not in key and owner is not schema:  # an item of a list: OmegaConf names the key alone
            key = f"{_path_of(schema, owner) or owner.__name__}.{key}"
        hint = did_you_mean(leaf, valid)
        return f"{key}: unknown key{hint} (valid here: {', '.join(valid)})" if valid else f"{key}: {text}"
    return f"{text} (key: {key})" if key else text


def _path_of(schema: type, target: type, prefix: str = "") -> str | None:
    """Where dataclass `target` sits in `schema`'s tree ("rewards.components[]" for a list item), or None."""
    import typing

    for name, hint in typing.get_type_hints(schema).items():
        inner = typing.get_args(hint)
        if hint is target:
            return prefix + name
        if target in inner:
            return f"{prefix}{name}[]"
        if dataclasses.is_dataclass(hint):
            found = _path_of(hint, target, f"{prefix}{name}.")
            if found:
                return found
    return None


def _clear_replaced_mappings(base: Any, layer: Any) -> None:
    """Empty each plain-dict field of `base` that the YAML `layer` sets, so the file's mapping replaces the
    default instead of being merged key by key: a recipe YAML that lists `rollout.tools: {pose_estimation: {}}`
    means pose only, not pose plus every default tool. (`key=value` overrides still merge key by key.)"""
    from omegaconf import DictConfig, OmegaConf

    for key, value in layer.items():
        node = base.get(key) if isinstance(base, DictConfig) else None
        if not isinstance(node, DictConfig) or not isinstance(value, DictConfig):
            continue
        if OmegaConf.get_type(node) is dict:
            base[key] = {}
        else:
            _clear_replaced_mappings(node, value)


def to_yaml(cfg: Any) -> str:
    from omegaconf import OmegaConf

    return OmegaConf.to_yaml(OmegaConf.structured(cfg))


def save_config(cfg: Any, path: str | Path) -> None:
    Path(path).write_text(to_yaml(cfg))


# -------------------------------------------------------------------------------------------------------- help
@cache
def field_docs(cls: type) -> dict[str, str]:
    """The docstring under each field of a dataclass (and of its bases), from its source."""
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if not dataclasses.is_dataclass(klass):
            continue
        try:
            tree = ast.parse(textwrap.dedent(inspect.getsource(klass)))
        except (OSError, TypeError):
            continue
        body = tree.body[0].body
        for stmt, after in zip(body, body[1:] + [None]):
            if isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name):
                doc = (
                    after.value.value if isinstance(after, ast.Expr) and isinstance(after.value, ast.Constant) else ""
                )
                docs[stmt.target.id] = inspect.cleandoc(doc) if isinstance(doc, str) else ""
    return docs


def help_text(cfg: Any, title: str = "") -> str:
    """The config tree of `cfg` (an instance: the recipe's defaults and YAML applied): each key with its value and
    its docstring, sections with their class docstring."""
    lines = [title] if title else []
    _help_lines(cfg, "", lines)
    lines.append(
        "\nSet any key as key=value (nested: rollout.tools.pose_estimation.device=cuda); config=FILE.yaml "
        "replaces the recipe's YAML."
    )
    return "\n".join(lines)


def _help_lines(cfg: Any, prefix: str, lines: list[str]) -> None:
    docs = field_docs(type(cfg))
    for f in dataclasses.fields(cfg):
        value, key = getattr(cfg, f.name), prefix + f.name
        if dataclasses.is_dataclass(value):
            intro = inspect.cleandoc(type(value).__doc__ or "").split("\n")[0]
            lines.append(f"\n{key}:  {intro}")
            _help_lines(value, key + ".", lines)
            continue
        shown = repr(value)
        shown = shown if len(shown) <= 70 else shown[:67] + "..."
        lines.append(f"  {key} = {shown}")
        for doc_line in textwrap.wrap(docs.get(f.name, "").replace("\n", " "), 100):
            lines.append(f"      {doc_line}")
