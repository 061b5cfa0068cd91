"""RolloutGroup: the rollout workers of a run, driven together.

    group = RolloutGroup(cfg.rollout, model_path, seed=0)     # cfg.rollout.num_workers RolloutWorker actors
    out = group.rollout(records, seed=7)                       # G = cfg.rollout.n episodes per record
    trainer.sync_weights(group.workers)                        # handles with `update_weights`
    chains = group.replay(records, scripts)                    # scripted turns, real tool replies (SFT data)

A batch is cut into contiguous chunks of records (`chunk_bounds`: about `cfg.chunks_per_worker` per worker, a
record's G rollouts always in one chunk; one worker: one chunk) and balanced across the workers: worker i starts
with chunk i and a worker that is free takes the next chunk nobody has started (`common.balance.least_loaded`), so
a slow conversation holds up only its own worker. Trajectories come back in record order, then group order, whatever
worker ran them. Chunk c samples with the seed `chunk_seed(seed, c)`: which tokens a chunk's episodes draw depends
on the rollout seed, the chunk's records and number (so, for a batch, on the number of workers and
`chunks_per_worker`), never on which worker ran it or when.

Every wait on the workers (rollout, replay, tool_stats) lasts at most `timeout_s` (the recipes pass `run.timeout_s`;
the first call also waits for the engines to load). A worker that dies (SIGKILL, the OOM killer, a lost node) or
does not answer in time is replaced by a new one, which gets the current policy weights (`on_replace`, set by the
GRPO loop to the trainer's weight sync), and its chunk of the batch runs again with the same seed: the trajectories
are those the dead worker would have returned (`common.recovery`). A chunk that fails twice runs record by record;
a record that then fails alone has crashed (or hung) a worker twice: it is quarantined (`on_quarantine`, which the
loop writes to the run's quarantine.jsonl so that it is not sampled again) and its group is skipped, counted as
`rollout/skipped/quarantined`. The counters of a batch are in `RolloutOutput.recovery`.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from common.balance import least_loaded
from common.recovery import Failure, Replaceable, WeightSyncError
from common.waits import DEFAULT_TIMEOUT_S
from rollout.config import RolloutConfig
from rollout.engine import SamplingParams
from rollout.trajectory import Trajectory
from rollout.worker import SAMPLE_ERRORS, _sample_id

QUARANTINED = "quarantined"
CHUNK_SEED_STRIDE = 1_000_003  # chunk seeds lie this far apart: a chunk's per-turn seeds (seed + call) stay its own
SKIPPED = (*SAMPLE_ERRORS, QUARANTINED)  # the finish_reasons of placeholders, dropped before rewards


def chunk_bounds(num_records: int, num_workers: int, per_worker: int) -> list[tuple[int, int]]:
    """The [start, end) record ranges of a batch's chunks: `per_worker` per worker, at most one per record, sizes
    differing by at most one record (the larger first); a single chunk for a single worker.

    >>> chunk_bounds(5, 2, 2)
    [(0, 2), (2, 3), (3, 4), (4, 5)]
    >>> chunk_bounds(3, 1, 2), chunk_bounds(2, 4, 2), chunk_bounds(0, 2, 2)
    ([(0, 3)], [(0, 1), (1, 2)], [])
    """
    count = min(num_records, 1 if num_workers == 1 else per_worker * num_workers)
    bounds, start = [], 0
    for c in range(count):
        end = start + num_records // count + (c < num_records % count)
        bounds.append((start, end))
        start = end
    return bounds


def chunk_seed(seed: int | None, chunk: int) -> int | None:
    """The sampling seed of chunk `chunk` of a rollout with seed `seed`; chunk 0 keeps the rollout's seed (so one
    worker samples as it always did), None stays None (the worker picks one).

    >>> chunk_seed(7, 0), chunk_seed(7, 2), chunk_seed(None, 1)
    (7, 2000013, None)
    """
    return None if seed is None else seed + chunk * CHUNK_SEED_STRIDE


def record_key(record: Any) -> str:
    """What identifies a record across steps and resumes: its "id", else its video and clip."""
    if isinstance(record, dict) and "id" in record:
        return str(record["id"])
    if isinstance(record, dict):
        return f"{record.get('video')}|{record.get('clip')}"
    return repr(record)[:200]


@dataclass
class RolloutOutput:
    """One batch's rollout: the trainable trajectories, the samples skipped (they could not be prepared: see
    rollout/worker.py), the tool counters summed over workers ({tool: {calls, errors, timeouts, cache_hits,
    batches}}) and the skipped samples by kind ({"video_error": 1, "sample_error": 0}; every kind present)."""

    trajectories: list
    skipped: int
    tool_stats: dict[str, dict[str, int]]
    skipped_by_kind: dict[str, int] = field(default_factory=dict)
    recovery: dict[str, int] = field(default_factory=dict)
    """Workers replaced (`restarts`), calls run again (`retries`) and records quarantined in this batch."""


def split_skipped(trajs: list, tool_stats: dict[str, dict[str, int]]) -> RolloutOutput:
    """The trajectories without the placeholders of records that could not be prepared, which are counted by kind
    (one per record: its group_index-0 placeholder; ids may repeat across workers)."""
    ok = [t for t in trajs if t.finish_reason not in SKIPPED]
    by_kind = Counter(t.finish_reason for t in trajs if t.finish_reason in SKIPPED and t.group_index == 0)
    skipped_by_kind = {kind: by_kind[kind] for kind in SKIPPED}
    return RolloutOutput(ok, sum(skipped_by_kind.values()), tool_stats, skipped_by_kind)


def sampling_params(cfg: RolloutConfig, seed: int | None = None) -> SamplingParams:
    """The config's sampling parameters (per-turn budget, temperature, top-p, top-k) with `seed`."""
    return SamplingParams(
        max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature, top_p=cfg.top_p, top_k=cfg.top_k, seed=seed
    )


def sum_tool_stats(per_worker: Any) -> dict[str, dict[str, int]]:
    """Per-tool counters ({tool: {counter: n}}) summed over workers.

    >>> sum_tool_stats([{"pose": {"calls": 2}}, {"pose": {"calls": 1, "errors": 1}}])
    {'pose': {'calls': 3, 'errors': 1}}
    """
    total: dict[str, dict[str, int]] = {}
    for stats in per_worker:
        for name, counts in stats.items():
            mine = total.setdefault(name, {})
            for key, value in counts.items():
                mine[key] = mine.get(key, 0) + value
    return total


class RolloutGroup:
    timeout_s: float = DEFAULT_TIMEOUT_S

    def __init__(
        self,
        cfg: RolloutConfig,
        model_path: str,
        seed: int = 0,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        retries: int = 2,
        on_replace: Callable[[Any], None] | None = None,
        on_quarantine: Callable[[dict, str], None] | None = None,
    ):
        """`retries`: run.actor_retries; 0 turns recovery off (a worker that dies or hangs fails the call with
        ActorFailedError), any other number runs a failed share once more whole, then record by record.
        `on_replace(worker)`: sets a new worker up (weights), called for one replaced worker at a time (workers run
        their chunks from threads of their own); `on_quarantine(record, why)`: told of each quarantined record."""
        import ray

        from rollout.worker import RolloutWorker

        self.cfg = cfg
        remote = ray.remote(num_cpus=cfg.num_cpus, num_gpus=cfg.num_gpus)(RolloutWorker)
        threads = cfg.cpu_threads if cfg.num_gpus == 0 else None  # CPU cores are shared with the ranks and tools

        def make(i: int) -> Any:
            return remote.remote(cfg, model_path, seed=seed + i, torch_threads=threads)

        self.pool = Replaceable("rollout worker", make, cfg.num_workers, timeout_s, retries, self._set_up)
        self.timeout_s, self.retries = self.pool.timeout_s, retries
        self.on_replace, self.on_quarantine = on_replace, on_quarantine
        self.quarantined: list[str] = []  # record keys, this batch
        # Workers fail and are replaced from their own driver threads; `on_replace` (a weight sync: the trainer ranks
        # take one call at a time) runs for one of them at a time. Only replacements take this lock.
        self._set_up_lock = threading.Lock()

    @property
    def workers(self) -> list:
        """The current worker handles (a replaced worker's handle changes)."""
        return self.pool.actors

    def _set_up(self, i: int, worker: Any) -> None:
        if self.on_replace is not None:
            with self._set_up_lock:
                self.on_replace(worker)

    def sampling(self, seed: int | None = None) -> SamplingParams:
        return sampling_params(self.cfg, seed)

    def _deal(self, method: str, items: list, *extra_lists: list, args: tuple = (), sampling: SamplingParams) -> list:
        """`method(chunk of items, chunk of each extra list, *args, sampling with the chunk's seed)` on the workers,
        balanced (see the module docstring); the answers joined in chunk order."""
        bounds = chunk_bounds(len(items), len(self.workers), self.cfg.chunks_per_worker)
        chunks = [
            (items[a:b], *[x[a:b] for x in extra_lists], *args, replace(sampling, seed=chunk_seed(sampling.seed, c)))
            for c, (a, b) in enumerate(bounds)
        ]
        # a chunk whose worker failed runs again once whole, then record by record (0 retries: no recovery)
        one_by_one = self._one_by_one(method) if self.retries else None

        def run(i: int, c: int) -> list:
            (part,) = self.pool.call(method, {i: chunks[c]}, method, one_by_one, retries=min(self.retries, 1))
            return part

        return [t for part in least_loaded(len(self.workers), len(chunks), run) for t in part]

    def _one_by_one(self, method: str) -> Callable[[int, tuple, Failure], list]:
        """What a chunk that failed twice becomes: each record alone on worker i (each in a fresh worker after a
        failure); a record that fails alone is quarantined and gives placeholders."""

        def run(i: int, args: tuple, failure: Failure) -> list:
            records, rest = args[0], args[1:]
            n = 1 if method == "replay" else args[1]
            out = []
            for k, record in enumerate(records):
                one = (records[k : k + 1], *[x[k : k + 1] if isinstance(x, list) else x for x in rest])
                (got,) = self.pool.submit(method, {i: one}, f"{method} of record {record_key(record)!r}").values()
                if isinstance(got, Failure):
                    self.pool.replace(i, got.text())
                    got = self._quarantine(record, k, n, f"{failure.text()}; then alone: {got.text()}")
                out.extend(got)
            return out

        return run

    def _quarantine(self, record: Any, position: int, n: int, why: str) -> list:
        key = record_key(record)
        print(f"[recovery] quarantined record {key!r}: it crashed or hung a rollout worker twice ({why})", flush=True)
        self.quarantined.append(key)
        if self.on_quarantine is not None:
            self.on_quarantine(record, why)
        sample_id = _sample_id(record, position)
        meta = {**record, "rollout_error": why} if isinstance(record, dict) else {"rollout_error": why}
        return [Trajectory(sample_id, g, [], [], [], [], finish_reason=QUARANTINED, record=meta) for g in range(n)]

    def load_weights(self, trainer: Any) -> float:
        """The trainer's current weights into every worker (`trainer.sync_weights`); a worker that died or did not
        take them in time is replaced (and the new one set up by `on_replace`). Returns the seconds spent."""
        try:
            return trainer.sync_weights(self.workers)
        except WeightSyncError as e:
            for i in e.failed:
                self.pool.replace(i, "no answer to the weight update")
            return e.seconds

    def tool_stats(self) -> dict[str, dict[str, int]]:
        """Per-tool counters summed over workers since the last call (which resets them)."""
        calls = {i: () for i in range(len(self.workers))}
        return sum_tool_stats(self.pool.call("tool_stats", calls))

    def rollout(self, records: list[dict], seed: int, n: int | None = None) -> RolloutOutput:
        """`n` (default `cfg.n`) episodes per record; the placeholders of records that could not be prepared (or
        were quarantined) are dropped and counted by kind."""
        n = self.cfg.n if n is None else n
        self.quarantined = []
        trajs = self._deal("rollout", records, args=(n,), sampling=self.sampling(seed))
        out = split_skipped(trajs, self.tool_stats())
        out.recovery = {**self.pool.take_counts(), QUARANTINED: len(self.quarantined)}
        return out

    def replay(self, records: list[dict], scripts: list[list[str]], max_new_tokens: int) -> list:
        """One trajectory per record whose assistant turns are its script, with the real tools answering its calls
        (RolloutWorker.replay). The tool counters of the replay are reset, not reported."""
        trajs = self._deal("replay", records, scripts, sampling=SamplingParams(max_new_tokens=max_new_tokens))
        self.tool_stats()
        return trajs

    def shutdown(self) -> None:
        self.pool.shutdown()
