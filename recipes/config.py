"""Recipe configuration: dataclass defaults, then a YAML file, then `key=value` overrides.

Every recipe describes its config as nested dataclasses with a docstring under each field. `load_config` merges,
in order: the dataclass defaults, the recipe's YAML (`config=PATH` on the command line replaces the default
YAML), then dotted `key=value` overrides (`rollout.n=8 trainer.lr=1e-6`). Unknown keys and wrong types fail here,
before any actor starts. `save_config` writes the resolved config into the run directory.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")


class ConfigError(ValueError):
    """A bad config: unknown key, wrong type, a file that does not exist."""


def load_config(schema: type[T], argv: list[str], default_yaml: str | Path | None = None) -> T:
    """Merge defaults <- YAML <- overrides into an instance of `schema`.

    `argv` holds `key=value` items; `config=PATH` names the YAML file to use instead of `default_yaml`.
    """
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    overrides, yaml_path = [], default_yaml
    for item in argv:
        if "=" not in item:
            raise ConfigError(f"expected key=value, got {item!r}")
        key, value = item.split("=", 1)
        if key == "config":
            yaml_path = value
        else:
            overrides.append(f"{key}={value}")
    try:
        base = OmegaConf.structured(schema)
        layers = [base]
        if yaml_path:
            path = Path(yaml_path)
            if not path.is_file():
                raise ConfigError(f"config file not found: {path}")
            loaded = OmegaConf.load(path)
            _clear_replaced_mappings(base, loaded)
            layers.append(loaded)
        layers.append(OmegaConf.from_dotlist(overrides))
        merged = OmegaConf.merge(*layers)
        return OmegaConf.to_object(merged)
    except OmegaConfBaseException as e:
        raise ConfigError(f"bad config: {e}".splitlines()[0] + _where(e)) from None


def _clear_replaced_mappings(base: Any, layer: Any) -> None:
    """Empty each plain-dict field of `base` that the YAML `layer` sets, so the file's mapping replaces the
    default instead of being merged key by key: a recipe YAML that lists `tools.enabled: {pose_estimation: {}}`
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


def _where(e: Any) -> str:
    key = getattr(e, "full_key", None)
    return f" (key: {key})" if key else ""


def to_yaml(cfg: Any) -> str:
    from omegaconf import OmegaConf

    return OmegaConf.to_yaml(OmegaConf.structured(cfg))


def save_config(cfg: Any, path: str | Path) -> None:
    Path(path).write_text(to_yaml(cfg))
