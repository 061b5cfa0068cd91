"""Combining rewards: a recipe's `rewards:` list -> per-component values and one weighted total per trajectory.

A recipe lists its rewards as dicts (YAML), e.g.

    rewards:
      - {name: accuracy, weight: 1.0}
      - {name: format, weight: 1.0}
      - {name: tool_usage, weight: 1.0, when: accuracy}
      - {name: my_pkg.my_mod:my_reward, weight: 0.5, args: {scale: 2}}

`parse_specs` checks such a list before anything starts (unknown rewards, bad gates, bad args fail early) and
`score_batch` scores a batch of trajectories with it.

Gates (`when`): a reward with `when` is computed only for the samples whose gate holds; elsewhere it is recorded
as 0.0 and contributes 0. The syntax is `NAME` or `NAME OP NUMBER`:
  - NAME is another reward in the same list (its registered name or dotted path, as written there);
  - OP is one of `>=`, `>`, `<=`, `<`, `==`, `!=`; NUMBER a decimal number (`1`, `0.5`, `-2`, `1e-3`);
  - `NAME` alone means `NAME > 0`; spaces around OP are allowed: "accuracy", "accuracy>=1", "iou < 0.5".
The gate reads the other reward's raw value (before its weight). A None value (not applicable) closes the gate;
a value from an error is 0.0. Gates may chain (a gated on b gated on c) but not form a cycle.

Errors: a plugin that raises, returns something that is not a number or None, or returns NaN/inf scores 0.0 for
that sample (a batched plugin that raises or returns the wrong number of values: for every sample of the call;
one that puts an exception instance in place of a sample's value: for that sample alone, e.g. a judge's malformed
reply about that sample).
`errors[name]` counts those samples; the first traceback of each (reward, exception type) is logged once per
process through `logging` (logger "rewards.combine"). The run goes on.
"""

from __future__ import annotations

import inspect
import logging
import math
import numbers
import operator
import re
import traceback
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from common.hints import did_you_mean
from rewards.registry import Reward, get_reward

logger = logging.getLogger(__name__)

_GATE = re.compile(
    r"^\s*(?P<name>[^\s<>=!]+)\s*(?:(?P<op>>=|<=|==|!=|>|<)\s*(?P<value>[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?))?\s*$"
)
_OPS: dict[str, Callable[[float, float], bool]] = {
    ">=": operator.ge,
    ">": operator.gt,
    "<=": operator.le,
    "<": operator.lt,
    "==": operator.eq,
    "!=": operator.ne,
}
_SPEC_KEYS = ("name", "weight", "args", "when")
_logged: set[tuple[str, str]] = set()


class NonFiniteRewardError(ValueError):
    """A plugin returned NaN or infinity."""


@dataclass
class RewardSpec:
    """One entry of a recipe's `rewards:` list."""

    name: str
    """Registered reward name (`accuracy`) or dotted path to a plugin (`my_pkg.my_mod:my_reward`)."""
    weight: float = 1.0
    """Multiplies the reward's value in the total."""
    args: dict = field(default_factory=dict)
    """Keyword arguments passed to the plugin on every call."""
    when: str | None = None
    """Gate: `NAME` or `NAME OP NUMBER` over another reward of the list (see the module docstring)."""


@dataclass
class RewardOutput:
    """Scores of one batch: the weighted total per trajectory, each component's values, error counts."""

    totals: list[float]
    components: dict[str, list[float | None]]
    errors: dict[str, int]
    scored: dict[str, int] = field(default_factory=dict)
    """Samples each component was computed on (gated-off samples are not)."""
    last_error: dict[str, str] = field(default_factory=dict)
    """The last exception of each component that failed in this batch ("Type: message")."""

    @staticmethod
    def concat(parts: Sequence[RewardOutput]) -> RewardOutput:
        """Join the outputs of consecutive chunks of one batch, in order; error counts add up."""
        if not parts:
            return RewardOutput([], {}, {})
        totals = [t for p in parts for t in p.totals]
        components = {name: [v for p in parts for v in p.components[name]] for name in parts[0].components}
        errors = {name: sum(p.errors.get(name, 0) for p in parts) for name in parts[0].errors}
        scored = {name: sum(p.scored.get(name, 0) for p in parts) for name in parts[0].errors}
        last_error = {name: text for p in parts for name, text in p.last_error.items()}
        return RewardOutput(totals, components, errors, scored, last_error)


def parse_gate(when: str) -> tuple[str, Callable[[float, float], bool], float]:
    """Split a gate into (reward name, comparison, threshold). Raises ValueError on a malformed gate.

    >>> name, op, threshold = parse_gate("accuracy >= 1")
    >>> name, op(1.0, threshold), op(0.5, threshold)
    ('accuracy', True, False)
    """
    m = _GATE.match(when) if isinstance(when, str) else None
    if m is None:
        raise ValueError(f"gate {when!r} is not 'NAME' or 'NAME OP NUMBER' with OP one of {', '.join(_OPS)}")
    if m["op"] is None:
        return m["name"], operator.gt, 0.0
    return m["name"], _OPS[m["op"]], float(m["value"])


def _plain(obj: Any) -> Any:
    """An OmegaConf node as plain Python containers (a recipe's config may hand us DictConfig/ListConfig)."""
    if type(obj).__module__.startswith("omegaconf"):
        from omegaconf import OmegaConf

        return OmegaConf.to_container(obj, resolve=True)
    return obj


def _to_spec(i: int, item: Any) -> RewardSpec:
    item = _plain(item)
    if isinstance(item, RewardSpec):
        item = {"name": item.name, "weight": item.weight, "args": item.args, "when": item.when}
    if not isinstance(item, Mapping):
        raise ValueError(f"rewards[{i}] must be a mapping with a 'name', got {type(item).__name__}")
    unknown = sorted(set(item) - set(_SPEC_KEYS))
    if unknown:
        raise ValueError(f"rewards[{i}]: unknown keys {unknown}; allowed: {', '.join(_SPEC_KEYS)}")
    name, weight, args, when = item.get("name"), item.get("weight", 1.0), item.get("args") or {}, item.get("when")
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"rewards[{i}]: 'name' must be a non-empty string, got {name!r}")
    if isinstance(weight, bool) or not isinstance(weight, numbers.Real) or not math.isfinite(weight):
        raise ValueError(f"rewards[{i}] ({name}): 'weight' must be a finite number, got {weight!r}")
    if not isinstance(args, Mapping):
        raise ValueError(f"rewards[{i}] ({name}): 'args' must be a mapping, got {type(args).__name__}")
    if when is not None and not isinstance(when, str):
        raise ValueError(f"rewards[{i}] ({name}): 'when' must be a string, got {when!r}")
    return RewardSpec(name=name.strip(), weight=float(weight), args=dict(args), when=when)


def _check_args(spec: RewardSpec, reward: Reward) -> None:
    """Fail early when the spec's args do not fit the plugin's signature."""
    target = reward.fn.__call__ if inspect.isclass(reward.fn) else reward.fn
    try:
        sig = inspect.signature(target)
    except (TypeError, ValueError):  # builtins and some C callables have no signature: checked at call time
        return
    leading = (None, None, None) if inspect.isclass(reward.fn) else (None, None)
    try:
        sig.bind(*leading, **spec.args)
    except TypeError as e:
        params = list(sig.parameters)[len(leading) :]
        hint = "".join(did_you_mean(key, params) for key in spec.args if key not in sig.parameters)
        raise ValueError(
            f"reward {spec.name!r} ({reward.origin}): args {spec.args} do not fit: {e}{hint} "
            f"(parameters: {', '.join(params)})"
        ) from None


def evaluation_order(specs: Sequence[RewardSpec]) -> list[RewardSpec]:
    """The specs ordered so that every gate is computed before the rewards it gates. Raises on a cycle."""
    done: set[str] = set()
    order: list[RewardSpec] = []
    pending = list(specs)
    while pending:
        ready = [s for s in pending if s.when is None or parse_gate(s.when)[0] in done]
        if not ready:
            raise ValueError(f"reward gates form a cycle among: {', '.join(s.name for s in pending)}")
        for s in ready:
            order.append(s)
            done.add(s.name)
        pending = [s for s in pending if s.name not in done]
    return order


def parse_specs(items: Sequence[Any]) -> list[RewardSpec]:
    """Validate a recipe's `rewards:` list (dicts or RewardSpec) and return RewardSpecs, in the given order.

    Resolves every name (importing dotted-path plugin modules), so an unknown reward fails here with the list of
    available ones; checks gates (syntax, the gated-on reward is in the list, not itself, no cycle), that no
    reward is listed twice, and that `args` fit each plugin's signature.
    """
    items = _plain(items)
    if isinstance(items, (str, bytes, Mapping)) or not isinstance(items, Sequence):
        raise ValueError(
            f"rewards must be a list of {{name, weight, args, when}} mappings, got {type(items).__name__}"
        )
    specs = [_to_spec(i, item) for i, item in enumerate(items)]
    names = [s.name for s in specs]
    for s in specs:
        if names.count(s.name) > 1:
            raise ValueError(f"reward {s.name!r} is listed twice; each reward appears once")
        reward = get_reward(s.name)  # RewardNotFoundError (a ValueError) names it and lists the available ones
        _check_args(s, reward)
        if s.when is not None:
            gate = parse_gate(s.when)[0]
            if gate == s.name:
                raise ValueError(f"reward {s.name!r} is gated on itself ({s.when!r})")
            if gate not in names:
                raise ValueError(
                    f"reward {s.name!r} is gated on {gate!r} ({s.when!r}), which is not in the rewards list "
                    f"({', '.join(names)})"
                )
    evaluation_order(specs)
    return specs


def resolve(specs: Sequence[RewardSpec]) -> dict[str, tuple[Reward, Callable[..., Any]]]:
    """Each spec's plugin and the callable to score with (class plugins instantiated here, once)."""
    out = {}
    for s in specs:
        reward = get_reward(s.name)
        out[s.name] = (reward, reward.load())
    return out


def _as_value(v: Any) -> float | None:
    """A plugin's return value as float or None; raises on anything else (the caller counts it as an error)."""
    if v is None:
        return None
    if isinstance(v, Exception):  # a batched plugin's way to fail one sample and keep the others' values
        raise v
    if not isinstance(v, numbers.Real) and hasattr(v, "item") and not isinstance(v, (str, bytes)):
        v = v.item()  # numpy / torch scalars
    if not isinstance(v, numbers.Real):
        raise TypeError(f"a reward must return a number or None, got {type(v).__name__}")
    v = float(v)
    if not math.isfinite(v):
        raise NonFiniteRewardError(f"reward returned {v}")
    return v


def _log_once(name: str, exc: BaseException, where: str) -> None:
    key = (name, type(exc).__name__)
    if key in _logged:
        return
    _logged.add(key)
    tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    logger.error(
        "reward %r failed (%s) on %s; it scores 0 there. Logged once per reward and exception type:\n%s",
        name,
        type(exc).__name__,
        where,
        tb,
    )


def _score_component(
    spec: RewardSpec, reward: Reward, fn: Callable[..., Any], trajs: Sequence[Any], active: list[int]
) -> tuple[dict[int, float | None], int, str]:
    """Values of one reward on the trajectories at `active` indices, how many of them came from errors, and the
    last error ("" when none)."""
    records = [getattr(trajs[i], "record", None) or {} for i in active]
    values: dict[int, float | None] = {}
    errors, last = 0, ""

    def checked(i: int, produce: Callable[[], Any]) -> None:
        nonlocal errors, last
        try:
            values[i] = _as_value(produce())
        except Exception as e:
            _log_once(spec.name, e, f"sample {getattr(trajs[i], 'sample_id', i)!r}")
            values[i], errors, last = 0.0, errors + 1, f"{type(e).__name__}: {e}"[:300]

    if not reward.batched:
        for i, rec in zip(active, records):
            checked(i, lambda i=i, rec=rec: fn(trajs[i], rec, **spec.args))
        return values, errors, last
    if not active:
        return values, 0, ""
    try:
        raw = list(fn([trajs[i] for i in active], records, **spec.args))
        if len(raw) != len(active):
            raise ValueError(f"batched reward returned {len(raw)} values for {len(active)} trajectories")
    except Exception as e:
        _log_once(spec.name, e, f"a batch of {len(active)}")
        return dict.fromkeys(active, 0.0), len(active), f"{type(e).__name__}: {e}"[:300]
    for i, v in zip(active, raw):
        checked(i, lambda v=v: v)
    return values, errors, last


def score_batch(
    trajs: Sequence[Any],
    specs: Sequence[RewardSpec | Mapping[str, Any]],
    resolved: dict[str, tuple[Reward, Callable[..., Any]]] | None = None,
) -> RewardOutput:
    """Score trajectories with every reward of `specs`; each trajectory's record is `traj.record`.

    `totals[i]` is the weighted sum of the components of trajectory i (None counts as 0). `components[name][i]`
    is the raw value (None = not applicable; 0.0 when gated off or on error). `errors[name]` counts the samples
    that scored 0 because the plugin failed. Without `resolved`, `specs` (dicts or RewardSpec) are checked and
    the plugins resolved here, on every call; with `resolved = resolve(parse_specs(...))` the loaded plugins are
    reused and `specs` must be the RewardSpecs they came from (this is what RewardWorker does).
    """
    if resolved is None:  # a caller with resolved plugins (RewardWorker) has parsed its specs already
        specs = parse_specs(specs)
        resolved = resolve(specs)
    n = len(trajs)
    components: dict[str, list[float | None]] = {}
    errors: dict[str, int] = {}
    scored: dict[str, int] = {}
    last_error: dict[str, str] = {}
    for spec in evaluation_order(specs):
        active = list(range(n))
        if spec.when is not None:
            gate, op, threshold = parse_gate(spec.when)
            active = [i for i, g in enumerate(components[gate]) if g is not None and op(g, threshold)]
        reward, fn = resolved[spec.name]
        values, errors[spec.name], last = _score_component(spec, reward, fn, trajs, active)
        scored[spec.name] = len(active)
        if last:
            last_error[spec.name] = last
        components[spec.name] = [values.get(i, 0.0) for i in range(n)]  # gated off: 0.0
    weights = {s.name: s.weight for s in specs}
    totals = [sum(weights[name] * (vals[i] or 0.0) for name, vals in components.items()) for i in range(n)]
    # report components in the recipe's order, not the evaluation order
    ordered = {s.name: components[s.name] for s in specs}
    return RewardOutput(totals, ordered, {s.name: errors[s.name] for s in specs}, scored, last_error)


def summarize(output: RewardOutput) -> dict[str, float]:
    """Metrics of one scored batch: `reward/total_mean`, `reward/total_std`, and per reward
    `reward/<name>_mean` (mean over the non-None values; absent when no sample had a value) and
    `reward/<name>_errors` (samples that scored 0 because the plugin failed).

    >>> summarize(RewardOutput([1.0, 0.0], {"accuracy": [1.0, None]}, {"accuracy": 0}))
    {'reward/total_mean': 0.5, 'reward/total_std': 0.5, 'reward/accuracy_mean': 1.0, 'reward/accuracy_errors': 0.0}
    """
    metrics: dict[str, float] = {}
    if output.totals:
        mean = sum(output.totals) / len(output.totals)
        metrics["reward/total_mean"] = mean
        metrics["reward/total_std"] = math.sqrt(sum((t - mean) ** 2 for t in output.totals) / len(output.totals))
    for name, values in output.components.items():
        present = [v for v in values if v is not None]
        if present:
            metrics[f"reward/{name}_mean"] = sum(present) / len(present)
        metrics[f"reward/{name}_errors"] = float(output.errors.get(name, 0))
    return metrics
