"""Reward workers: score trajectories off the driver, in Ray actors (or in process for tests and small runs).

    pool = RewardPool(cfg.rewards, num_workers=2)        # checks the specs now, starts the actors
    out = pool.score(trajs)                               # RewardOutput, in the order of trajs
    metrics.update(summarize(out))

The pool waits at most `timeout_s` (the recipes pass `run.timeout_s`) for its workers to load their plugins and for
each batch. A worker that dies (the OOM killer, a lost node) or has not answered by then (a plugin stuck on a
socket) is killed and replaced, and its chunk scored again, up to `retries` times (run.actor_retries; rewards are
pure functions of the trajectories, so a rescored chunk counts once); then `common.recovery.ActorFailedError` names
it. A worker that fails while loading its plugins is not retried: that is a config error.

`RewardWorker` is a plain class, made remote where it is used (`ray.remote(num_cpus=1)(RewardWorker)`); it
resolves its plugins once, so a model-based reward loads its model once per worker. A plugin named by dotted
path must be importable in the worker processes too: install it, or ship it with the job
(`ray job submit --working-dir .`, or `actor_options={"runtime_env": {"py_modules": [...]}}`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

from common.recovery import Replaceable
from common.waits import DEFAULT_TIMEOUT_S, actor_name, check_timeout, get_all
from rewards.combine import RewardOutput, RewardSpec, parse_specs, resolve, score_batch

DEFAULT_ACTOR_OPTIONS: dict[str, Any] = {"num_cpus": 1}


class RewardWorker:
    """Scores batches of trajectories with a fixed list of reward specs (dicts or RewardSpec)."""

    def __init__(self, specs: Sequence[RewardSpec | Mapping[str, Any]]):
        self.specs = parse_specs(specs)
        self.resolved = resolve(self.specs)

    def score(self, trajs: Sequence[Any]) -> RewardOutput:
        return score_batch(trajs, self.specs, self.resolved)

    def ready(self) -> bool:
        """True once the plugins are loaded (lets the caller wait for the actors to start)."""
        return True


def split_contiguous(n: int, parts: int) -> list[tuple[int, int]]:
    """[start, end) bounds of at most `parts` contiguous, non-empty chunks of n items, sizes differing by <= 1.

    >>> split_contiguous(5, 2)
    [(0, 3), (3, 5)]
    >>> split_contiguous(1, 3)
    [(0, 1)]
    """
    parts = max(1, min(parts, n))
    size, extra = divmod(n, parts)
    bounds, start = [], 0
    for k in range(parts):
        end = start + size + (1 if k < extra else 0)
        if end > start:
            bounds.append((start, end))
        start = end
    return bounds


def _light(traj: Any) -> Any:
    """The trajectory without its multimodal tensors (pixel values): rewards read text, calls and the record."""
    if dataclasses.is_dataclass(traj) and getattr(traj, "mm_inputs", None):
        return dataclasses.replace(traj, mm_inputs={})
    return traj


class RewardPool:
    """`num_workers` RewardWorker actors sharing the scoring of each batch, or one in-process worker (`local`).

    The specs are checked in the constructor, on the driver, so a bad config fails before anything starts. A
    batch is split into contiguous chunks, one per worker; the results are joined in order and the error counts
    summed. Trajectories travel without `mm_inputs` unless `send_mm_inputs` is set.
    """

    def __init__(
        self,
        specs: Sequence[RewardSpec | Mapping[str, Any]],
        num_workers: int = 1,
        actor_options: dict[str, Any] | None = None,
        local: bool = False,
        send_mm_inputs: bool = False,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        retries: int = 2,
    ):
        if num_workers < 1:
            raise ValueError(f"num_workers must be >= 1, got {num_workers}")
        self.timeout_s = check_timeout(timeout_s)
        self.specs = parse_specs(specs)
        self.local = local
        self.send_mm_inputs = send_mm_inputs
        if local:
            self.workers: list[Any] = [RewardWorker(self.specs)]
            return
        import ray

        options = {**DEFAULT_ACTOR_OPTIONS, **(actor_options or {})}
        remote_cls = ray.remote(**options)(RewardWorker)
        self.pool = Replaceable(
            "reward worker", lambda i: remote_cls.remote(self.specs), num_workers, timeout_s, retries
        )
        self.workers = self.pool.actors
        try:  # surfaces a plugin that fails (or hangs) while loading, now
            self._get([w.ready.remote() for w in self.workers], "reward workers loading their plugins")
        except BaseException:
            self.shutdown()  # no caller holds the pool yet to shut it down
            raise

    def score(self, trajs: Sequence[Any]) -> RewardOutput:
        """Score a batch; `RewardOutput` in the order of `trajs`."""
        trajs = list(trajs) if self.send_mm_inputs else [_light(t) for t in trajs]
        if self.local:
            return self.workers[0].score(trajs)
        chunks = split_contiguous(len(trajs), len(self.workers))
        parts = self.pool.call("score", {i: (trajs[a:b],) for i, (a, b) in enumerate(chunks)}, "reward scoring")
        if not parts:  # an empty batch
            return self._empty_output()
        return RewardOutput.concat(parts)

    def _get(self, refs: list, phase: str) -> list:
        """The answers of workers[0..len(refs)), waiting at most timeout_s (ActorTimeoutError)."""
        workers = self.workers[: len(refs)]
        names = [actor_name("reward worker", i, self.workers) for i in range(len(refs))]
        return get_all(refs, names, workers, phase, self.timeout_s)

    def _empty_output(self) -> RewardOutput:
        """The output of an empty batch: every component present, no values."""
        return RewardOutput([], {s.name: [] for s in self.specs}, {s.name: 0 for s in self.specs})

    def take_counts(self) -> dict[str, int]:
        """Workers replaced (`restarts`) and chunks scored again (`retries`) since the last call."""
        return {"restarts": 0, "retries": 0} if self.local else self.pool.take_counts()

    def shutdown(self) -> None:
        """Stop the worker actors (no-op for a local pool)."""
        if not self.local:
            self.pool.shutdown()
        self.workers = []
