"""The reward registry: names -> reward plugins, and dotted paths to plugins that live outside the repo.

A per-sample reward is `fn(traj, record, **args) -> float | None`; a batched one is
`fn(trajs, records, **args) -> list[float | None]` (one value per trajectory, in order). None means "not
applicable to this sample" and is left out of means. `traj` is a `rollout.trajectory.Trajectory`, `record` the
sample record it came from (`traj.record`), `args` the `args` of the recipe's reward spec. A batched one may put an
exception instance in place of one sample's value: that sample scores 0 and counts as the reward's error.

    @register("length_penalty")
    def length_penalty(traj, record, max_tokens=1024):
        return -min(1.0, traj.num_model_tokens / max_tokens)

A class works too (for a reward that loads a model): it is registered or named like a function and is
instantiated once, with no arguments, by `Reward.load()` (once per reward worker); its instances are called
like the function above.

A plugin outside the repo is named by dotted path, `my_pkg.my_mod:my_reward`; the module must be importable
(installed, or on PYTHONPATH of every process that scores). It is per-sample unless it was decorated with
`register(..., batched=True)` or carries an attribute `batched = True`.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

# Modules whose import registers the built-in rewards (imported on first lookup, and by `import rewards`).
BUILTIN_MODULES = (
    "rewards.videostar",
    "rewards.submotion",
    "rewards.hieroaction",
    "rewards.mcq",
    "rewards.entailment",
)


class RewardNotFoundError(LookupError, ValueError):
    """A reward name or dotted path that does not resolve; the message names what is missing.

    A ValueError too, so a config check can catch every bad-config error as ValueError."""


@dataclass(frozen=True)
class Reward:
    """A resolved reward plugin: the function (or class) as written, whether it is batched, and where it lives."""

    name: str  # the registered name, or the dotted path it was looked up by
    fn: Callable[..., Any]
    batched: bool
    origin: str  # "module:qualname (file:line)", for error messages

    def load(self) -> Callable[..., Any]:
        """The callable to score with: the function itself, or one instance of a class plugin."""
        return self.fn() if inspect.isclass(self.fn) else self.fn


_REGISTRY: dict[str, Reward] = {}
_builtins_loaded = False


def _origin(fn: Any) -> str:
    module = getattr(fn, "__module__", "?")
    qualname = getattr(fn, "__qualname__", repr(fn))
    try:
        where = f"{inspect.getsourcefile(fn)}:{inspect.getsourcelines(fn)[1]}"
    except (TypeError, OSError):
        where = "unknown location"
    return f"{module}:{qualname} ({where})"


def register(name: str, batched: bool = False) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator: register a reward function (or class) under `name`.

    Refuses a name that is already taken by a different plugin (ValueError naming both places); registering the
    same definition again (a module reloaded) is allowed. Sets `fn.batched` so a dotted-path lookup knows too.
    """
    if not isinstance(name, str) or not name or ":" in name:
        raise ValueError(f"a reward name must be a non-empty string without ':', got {name!r}")

    def decorator(fn: Callable[..., Any]) -> Callable[..., Any]:
        if not callable(fn):
            raise TypeError(f"reward {name!r}: register() needs a function or class, got {type(fn).__name__}")
        entry = Reward(name=name, fn=fn, batched=bool(batched), origin=_origin(fn))
        old = _REGISTRY.get(name)
        if old is not None and old.origin != entry.origin:
            raise ValueError(
                f"reward {name!r} is already registered by {old.origin}; refusing to register {entry.origin} "
                "under the same name (pick another name, or name the plugin by its dotted path)"
            )
        try:
            fn.batched = bool(batched)
        except (AttributeError, TypeError):  # e.g. a bound method; the registry entry still knows
            pass
        _REGISTRY[name] = entry
        return fn

    return decorator


def unregister(name: str) -> None:
    """Remove a registered reward (for tests and interactive use). Unknown names are ignored."""
    _REGISTRY.pop(name, None)


def _load_builtins() -> None:
    global _builtins_loaded
    if not _builtins_loaded:
        _builtins_loaded = True
        for module in BUILTIN_MODULES:
            importlib.import_module(module)


def available_rewards() -> list[str]:
    """The registered reward names, sorted (the built-ins and whatever plugins have been imported)."""
    _load_builtins()
    return sorted(_REGISTRY)


def _import_module(module: str, path: str) -> Any:
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as e:
        missing = e.name or module
        if module == missing or module.startswith(missing + "."):
            raise RewardNotFoundError(
                f"reward {path!r}: module {module!r} not found (is it installed or on PYTHONPATH?)"
            ) from None
        raise ImportError(f"reward {path!r}: importing module {module!r} failed: {e}") from e


def get_reward(name_or_dotted: str) -> Reward:
    """Resolve a registered name (`"accuracy"`) or a dotted path (`"my_pkg.my_mod:my_reward"`).

    Raises RewardNotFoundError naming the unknown reward (with the available names), the missing module or the
    missing attribute.
    """
    if not isinstance(name_or_dotted, str) or not name_or_dotted.strip():
        raise RewardNotFoundError(f"a reward is named by a non-empty string, got {name_or_dotted!r}")
    _load_builtins()
    name = name_or_dotted.strip()
    if name in _REGISTRY:
        return _REGISTRY[name]
    if ":" not in name:
        hint = " (a plugin outside the registry is named 'package.module:function')" if "." in name else ""
        raise RewardNotFoundError(
            f"unknown reward {name!r}{hint}; available: {', '.join(available_rewards()) or '(none)'}"
        )
    module_name, _, attr = name.partition(":")
    if not module_name or not attr:
        raise RewardNotFoundError(f"reward {name!r}: a dotted path is 'package.module:function'")
    obj: Any = _import_module(module_name, name)
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise RewardNotFoundError(f"reward {name!r}: module {module_name!r} has no attribute {attr!r}")
        obj = getattr(obj, part)
    if not callable(obj):
        raise RewardNotFoundError(f"reward {name!r}: {attr!r} is a {type(obj).__name__}, not a function or class")
    return Reward(name=name, fn=obj, batched=bool(getattr(obj, "batched", False)), origin=_origin(obj))
