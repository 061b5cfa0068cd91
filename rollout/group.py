"""RolloutGroup: the rollout workers of a run, driven together.

    group = RolloutGroup(cfg.rollout, model_path, seed=0)     # cfg.rollout.num_workers RolloutWorker actors
    out = group.rollout(records, seed=7)                       # G = cfg.rollout.n episodes per record
    trainer.sync_weights(group.workers)                        # handles with `update_weights`
    chains = group.replay(records, scripts)                    # scripted turns, real tool replies (SFT data)

A batch is dealt to the workers in turn (`records[i::W]`); trajectories come back in record order within each
worker's share, then group order.

Every wait on the workers (rollout, replay, tool_stats) lasts at most `timeout_s` (the recipes pass `run.timeout_s`;
the first call also waits for the engines to load): a worker that has not answered by then is killed and
`common.waits.ActorTimeoutError` names it.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from common.waits import DEFAULT_TIMEOUT_S, actor_name, check_timeout, get_all
from rollout.config import RolloutConfig
from rollout.engine import SamplingParams
from rollout.worker import SAMPLE_ERRORS


@dataclass
class RolloutOutput:
    """One batch's rollout: the trainable trajectories, the samples skipped (they could not be prepared: see
    rollout/worker.py), the tool counters summed over workers ({tool: {calls, errors, timeouts, cache_hits,
    batches}}) and the skipped samples by kind ({"video_error": 1, "sample_error": 0}; every kind present)."""

    trajectories: list
    skipped: int
    tool_stats: dict[str, dict[str, int]]
    skipped_by_kind: dict[str, int] = field(default_factory=dict)


def split_skipped(trajs: list, tool_stats: dict[str, dict[str, int]]) -> RolloutOutput:
    """The trajectories without the placeholders of records that could not be prepared, which are counted by kind
    (one per record: its group_index-0 placeholder; ids may repeat across workers)."""
    ok = [t for t in trajs if t.finish_reason not in SAMPLE_ERRORS]
    by_kind = Counter(t.finish_reason for t in trajs if t.finish_reason in SAMPLE_ERRORS and t.group_index == 0)
    skipped_by_kind = {kind: by_kind[kind] for kind in SAMPLE_ERRORS}
    return RolloutOutput(ok, sum(skipped_by_kind.values()), tool_stats, skipped_by_kind)


class RolloutGroup:
    timeout_s: float = DEFAULT_TIMEOUT_S

    def __init__(self, cfg: RolloutConfig, model_path: str, seed: int = 0, timeout_s: float = DEFAULT_TIMEOUT_S):
        import ray

        from rollout.worker import RolloutWorker

        self.cfg, self.timeout_s = cfg, check_timeout(timeout_s)
        remote = ray.remote(num_cpus=cfg.num_cpus, num_gpus=cfg.num_gpus)(RolloutWorker)
        threads = 1 if cfg.num_gpus == 0 else None  # CPU cores are shared with the trainer ranks and tool actors
        self.workers = [
            remote.remote(cfg, model_path, seed=seed + i, torch_threads=threads) for i in range(cfg.num_workers)
        ]

    def sampling(self, seed: int | None = None) -> SamplingParams:
        """The config's sampling parameters (per-turn budget, temperature, top-p, top-k) with `seed`."""
        c = self.cfg
        return SamplingParams(
            max_new_tokens=c.max_new_tokens, temperature=c.temperature, top_p=c.top_p, top_k=c.top_k, seed=seed
        )

    def _call(self, method: str, calls: dict[int, tuple]) -> list:
        """`method(*args)` on the workers named by index, waiting at most timeout_s (ActorTimeoutError)."""
        refs = [getattr(self.workers[i], method).remote(*args) for i, args in calls.items()]
        names = [actor_name("rollout worker", i, self.workers) for i in calls]
        return get_all(refs, names, [self.workers[i] for i in calls], method, self.timeout_s)

    def _deal(self, method: str, items: list, *extra_lists: list, args: tuple = ()) -> list:
        w = len(self.workers)
        calls = {i: (items[i::w], *[x[i::w] for x in extra_lists], *args) for i in range(w) if items[i::w]}
        return [t for part in self._call(method, calls) for t in part]

    def tool_stats(self) -> dict[str, dict[str, int]]:
        """Per-tool counters summed over workers since the last call (which resets them)."""
        total: dict[str, dict[str, int]] = {}
        for stats in self._call("tool_stats", {i: () for i in range(len(self.workers))}):
            for name, counts in stats.items():
                mine = total.setdefault(name, {})
                for key, value in counts.items():
                    mine[key] = mine.get(key, 0) + value
        return total

    def rollout(self, records: list[dict], seed: int, n: int | None = None) -> RolloutOutput:
        """`n` (default `cfg.n`) episodes per record; the placeholders of records that could not be prepared are
        dropped and counted by kind."""
        n = self.cfg.n if n is None else n
        trajs = self._deal("rollout", records, args=(n, self.sampling(seed)))
        return split_skipped(trajs, self.tool_stats())

    def replay(self, records: list[dict], scripts: list[list[str]], max_new_tokens: int) -> list:
        """One trajectory per record whose assistant turns are its script, with the real tools answering its calls
        (RolloutWorker.replay). The tool counters of the replay are reset, not reported."""
        trajs = self._deal("replay", records, scripts, args=(SamplingParams(max_new_tokens=max_new_tokens),))
        self.tool_stats()
        return trajs

    def shutdown(self) -> None:
        import ray

        for worker in self.workers:
            ray.kill(worker)
