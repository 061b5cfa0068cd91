"""rollout.staleness in the GRPO loop: which weights sample each step's batch, what a checkpoint records, and that
no weight update lands while a rollout runs. The rollout workers and the trainer are stand-ins that count weight
versions (named fakes); the real actors learn with staleness 1 in test_grpo_learns.py."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace

import pytest

from recipes import grpo
from recipes.run import Sampler


class FakeWorkers:
    """Stands in for RolloutGroup: a rollout reports the weight version it sampled with; a weight load during a
    rollout is an error (the engines take weights between rollouts)."""

    def __init__(self):
        self.version, self.busy, self.overlaps = 0, threading.Event(), 0

    def rollout(self, batch, seed):
        self.busy.set()
        version = self.version
        time.sleep(0.05)  # the main thread trains meanwhile
        self.busy.clear()
        return SimpleNamespace(batch=[r["id"] for r in batch], seed=seed, version=version)

    def load_weights(self, version):
        self.overlaps += self.busy.is_set()
        self.version = version


def run_loop(staleness: int, steps: int = 5, save_after: int = 2):
    """The loop's rollout and sync calls as _train_step makes them; returns per step (batch ids, seed, weight
    version sampled with, staleness), the sampler state a checkpoint after `save_after` records, and the fake."""
    cfg = SimpleNamespace(rollout=SimpleNamespace(staleness=staleness), run=SimpleNamespace(seed=1, steps=steps))
    records = [{"id": i} for i in range(7)]
    workers = FakeWorkers()
    s = SimpleNamespace(prefetch=None, executor=ThreadPoolExecutor(1), sampler=Sampler(records, 2), workers=workers)
    got, saved = [], None
    for step in range(1, steps + 1):
        out, _, _, stale = grpo._rollout(cfg, s, step)
        got.append((out.batch, out.seed, out.version, stale))
        time.sleep(0.02)  # training: the update of this step makes weight version `step`
        grpo._await_prefetch(s)
        workers.load_weights(step)
        if step == save_after:
            saved = (s.prefetch or s.sampler).state()
    assert s.prefetch is None  # the last step starts no rollout
    s.executor.shutdown()
    return got, saved, workers


@pytest.mark.parametrize("staleness", [0, 1])
def test_each_batch_is_sampled_with_the_weights_staleness_says(staleness):
    got, _, workers = run_loop(staleness)
    # step k's batch: the weights after k-1 updates (staleness 0), after k-2 (staleness 1; step 1 has no earlier)
    expected_versions = [0, 1, 2, 3, 4] if staleness == 0 else [0, 0, 1, 2, 3]
    assert [version for _, _, version, _ in got] == expected_versions
    assert [stale for *_, stale in got] == ([0] * 5 if staleness == 0 else [0, 1, 1, 1, 1])
    assert workers.overlaps == 0


def test_staleness_changes_only_when_a_batch_is_sampled():
    sync, sync_saved, _ = run_loop(0)
    stale, stale_saved, _ = run_loop(1)
    # the same batches in the same order, with the same seeds (seed * 100003 + step)
    assert [(batch, seed) for batch, seed, *_ in sync] == [(batch, seed) for batch, seed, *_ in stale]
    assert [seed for _, seed, *_ in sync] == [100003 * 1 + k for k in range(1, 6)]
    # a checkpoint after step 2 records 2 batches of 2 drawn (index 4), not the third that a prefetch drew early
    assert sync_saved == stale_saved == {"epoch": 0, "index": 4}


def test_a_dropped_prefetch_is_waited_for_and_forgotten():
    cfg = SimpleNamespace(rollout=SimpleNamespace(staleness=1), run=SimpleNamespace(seed=0, steps=3))
    workers = FakeWorkers()
    sampler = Sampler([{"id": 0}], 1)
    s = SimpleNamespace(prefetch=None, executor=ThreadPoolExecutor(1), sampler=sampler, workers=workers)
    grpo._rollout(cfg, s, 1)
    future = s.prefetch.future
    grpo._drop_prefetch(s)
    assert s.prefetch is None and future.done() and not workers.busy.is_set()
    s.executor.shutdown()
