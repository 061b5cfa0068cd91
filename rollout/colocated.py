"""ColocatedRollout: the rollout engines live inside the trainer ranks (`rollout.placement: colocated`).

    trainer = TrainerGroup(cfg.trainer, model_path)
    rollout = ColocatedRollout(cfg.rollout, trainer, model_path, seed=0)   # one engine per rank, in its process
    out = rollout.rollout(records, seed=7)                                  # a chunk of records per rank
    rollout.load_weights(trainer)                                           # in-process, tensor by tensor

It drives the same `RolloutWorker` as the split placement (`rollout.group.RolloutGroup`), but each one is built
inside a trainer rank actor (`TrainerRank.start_rollout`), so no GPU is set aside for rollouts and a weight update
never leaves the process: every rank gathers the policy one tensor at a time (`iter_full_weights`, a collective)
and loads it into its own engine in buckets (`TrainerRank.sync_colocated`). An engine with a sleep mode (vLLM on
GPU, `enable_sleep_mode`) sleeps during training and wakes for the update and the next rollout.

A rank that dies takes its engine with it: every failure is the trainer's (`TrainerDiedError`), which the GRPO
loop answers by rebuilding the trainer from its last checkpoint and this object with it (`rebind`). Records that
fail to prepare still become counted placeholders (rollout/worker.py); there is no record-by-record quarantine.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

from rollout.config import RolloutConfig
from rollout.engine import SamplingParams
from rollout.group import RolloutOutput, chunk_bounds, chunk_seed, sampling_params, split_skipped, sum_tool_stats


class ColocatedRollout:
    def __init__(self, cfg: RolloutConfig, trainer: Any, model_path: str, seed: int = 0):
        self.cfg, self.model_path, self.seed = cfg, model_path, seed
        self.on_replace: Callable[[Any], None] | None = None  # unused: engines are never replaced alone
        self.on_quarantine: Callable[[dict, str], None] | None = None
        self.rebind(trainer)

    def rebind(self, trainer: Any) -> ColocatedRollout:
        """Build the engines in the ranks of `trainer` (a new group after a rebuild) from `model_path`."""
        self.trainer = trainer
        trainer.each("start_rollout", {i: (self.cfg, self.model_path, self.seed) for i in range(trainer.world_size)})
        return self

    @property
    def workers(self) -> list:
        return list(self.trainer.ranks)

    def sampling(self, seed: int | None = None) -> SamplingParams:
        return sampling_params(self.cfg, seed)

    def _deal(self, method: str, items: list, *extra: list, args: tuple = (), sampling: SamplingParams) -> list:
        """One contiguous chunk per rank (`chunk_bounds` with one chunk per worker), seeded as the split placement
        seeds its chunks: the ranks step together, so there is nothing to balance. Answers in record order."""
        bounds = chunk_bounds(len(items), self.trainer.world_size, 1)
        calls = {
            c: (items[a:b], *[x[a:b] for x in extra], *args, replace(sampling, seed=chunk_seed(sampling.seed, c)))
            for c, (a, b) in enumerate(bounds)
        }
        return [t for part in self.trainer.each(method, calls).values() for t in part]

    def rollout(self, records: list[dict], seed: int, n: int | None = None) -> RolloutOutput:
        """`n` (default `cfg.n`) episodes per record, one chunk per rank (the split placement with
        `chunks_per_worker: 1` samples the same); the placeholders of records that could not be prepared are dropped
        and counted."""
        n = self.cfg.n if n is None else n
        trajs = self._deal("rollout", records, args=(n,), sampling=self.sampling(seed))
        out = split_skipped(trajs, self.tool_stats())
        out.recovery = {"restarts": 0, "retries": 0, "quarantined": 0}
        return out

    def replay(self, records: list[dict], scripts: list[list[str]], max_new_tokens: int) -> list:
        trajs = self._deal("replay", records, scripts, sampling=SamplingParams(max_new_tokens=max_new_tokens))
        self.tool_stats()
        return trajs

    def tool_stats(self) -> dict[str, dict[str, int]]:
        """Per-tool counters summed over the ranks since the last call (which resets them)."""
        return sum_tool_stats(self._on_every_rank("tool_stats").values())

    def load_weights(self, trainer: Any) -> float:
        """The policy into every rank's engine, in process (`TrainerRank.sync_colocated`); the seconds spent."""
        if trainer is not self.trainer:
            raise ValueError("a colocated rollout takes the weights of the trainer it lives in; rebind() it first")
        return max(self._on_every_rank("sync_colocated").values())

    def _on_every_rank(self, method: str) -> dict[int, Any]:
        return self.trainer.each(method, {i: () for i in range(self.trainer.world_size)})

    def shutdown(self) -> None:
        """Nothing of its own: the engines end with the trainer's ranks (the trainer shuts them down)."""
