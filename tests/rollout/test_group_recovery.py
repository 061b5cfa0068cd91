"""A rollout worker that dies or does not answer (a hung engine, a stopped process, SIGKILL) is replaced, the new
worker is set up (weights) and its share runs again with the same arguments, so the batch comes back whole and
equal to an undisturbed one; a record that hangs a worker twice is quarantined. Stand-in actors built by
RolloutGroup's own constructor play the workers (no model): their answers are a pure function of the records, the
seed and n, as a seeded engine's are, and name the worker process that ran them.

With 2 workers and 2 chunks per worker, a batch of up to 4 records is cut into one chunk per record; chunk c samples
with seed `seed + c * 1_000_003` (rollout.group.chunk_seed), the values written out below."""

from __future__ import annotations

import os
import signal
import sys
import threading
import time

import pytest

import rollout.worker
from common.recovery import ActorFailedError
from rollout.config import RolloutConfig
from rollout.group import RolloutGroup
from rollout.trajectory import Trajectory

TIMEOUT_S = 2.0


class StandInWorker:
    """Answers like a RolloutWorker; hangs on a record marked "hang", sleeps on one marked "slow" (seconds) and on
    every call once told to, and hangs in tool_stats once told to."""

    def __init__(self, cfg, model_path, seed=0, torch_threads=None):
        self.torch_threads = torch_threads
        self.hang_stats = False
        self.weights = "initial"
        self.delay = 0.0

    def pid(self) -> int:
        return os.getpid()

    def threads(self):
        return self.torch_threads

    def rollout(self, records, n, sampling):
        if any(r.get("hang") for r in records):
            time.sleep(600)
        time.sleep(max([r.get("slow", 0) for r in records], default=0) + self.delay)
        # a seeded engine's answer: the same records, n and seed give the same trajectories
        ran = {"weights": self.weights, "pid": os.getpid()}
        return [
            Trajectory(r["id"], g, [1], [sampling.seed, g], [1, 1], [0.0, 0.0], record=ran)
            for r in records
            for g in range(n)
        ]

    def set_delay(self, seconds) -> None:
        self.delay = seconds

    def replay(self, records, scripts, sampling):
        return self.rollout(records, 1, sampling)

    def tool_stats(self, reset=True):
        if self.hang_stats:
            time.sleep(600)
        return {"echo": {"calls": 1}}

    def set_hang_stats(self) -> None:
        self.hang_stats = True

    def update_weights(self, name) -> None:
        self.weights = name


def _group(ray, retries=2, quarantined=None, timeout_s=TIMEOUT_S, cpu_threads=1):
    def synced(worker):  # what the GRPO loop does: the new worker gets the current weights
        ray.get(worker.update_weights.remote("current"))

    def quarantine(record, why):
        quarantined.append((record["id"], why))

    cfg = RolloutConfig(n=2, num_workers=2, num_cpus=0, cpu_threads=cpu_threads)
    group = RolloutGroup(cfg, "no-model", timeout_s=timeout_s, retries=retries, on_replace=synced)
    group.on_quarantine = quarantine if quarantined is not None else None
    ray.get([w.pid.remote() for w in group.workers])  # started: the timeouts are the calls' alone
    for w in group.workers:
        ray.get(w.update_weights.remote("current"))
    return group


@pytest.fixture
def stand_ins(ray_local, monkeypatch):
    ray_local.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    monkeypatch.setattr(rollout.worker, "RolloutWorker", StandInWorker)
    groups = []
    yield lambda **kw: groups.append(_group(ray_local, **kw)) or groups[-1]
    for group in groups:
        t0 = time.monotonic()
        group.shutdown()
        assert time.monotonic() - t0 < 5  # the cleanup does not wait on a stuck worker


def _ids(out):
    return [(t.sample_id, t.group_index, t.response_ids[0], t.record["weights"]) for t in out.trajectories]


def _gone(pid: int) -> bool:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.2)
    return False


@pytest.mark.timeout(120)
def test_a_killed_worker_is_replaced_and_its_chunk_rerun(ray_local, stand_ins):
    group = stand_ins()
    records = [{"id": "a"}, {"id": "b", "slow": 1.5}, {"id": "c"}]  # chunks a, b, c: worker 2 starts with b
    seeds = {"a": 7, "b": 1_000_010, "c": 2_000_013}
    expected = [(r, g, seeds[r], "current") for r in "abc" for g in (0, 1)]  # record order, whoever ran them
    pid = ray_local.get(group.workers[1].pid.remote())
    ref_time = time.monotonic()

    threading.Timer(0.5, os.kill, (pid, signal.SIGKILL)).start()  # mid-call: b takes 1.5 s
    out = group.rollout(records, seed=7)
    assert time.monotonic() - ref_time < 60
    assert _ids(out) == expected  # whole, in order, each trajectory once, from a worker with the current weights
    assert out.recovery == {"restarts": 1, "retries": 1, "quarantined": 0}
    assert out.skipped == 0 and _gone(pid)
    assert group.rollout(records[:1], seed=8).recovery == {"restarts": 0, "retries": 0, "quarantined": 0}


@pytest.mark.timeout(120)
def test_a_stopped_worker_is_killed_replaced_and_its_chunk_rerun(ray_local, stand_ins):
    group = stand_ins()
    pid = ray_local.get(group.workers[0].pid.remote())
    os.kill(pid, signal.SIGSTOP)  # a stopped process: it never answers, nor reads a cancel
    try:
        out = group.rollout([{"id": "a"}, {"id": "b"}], seed=3)  # worker 1 starts with chunk a and stops
        assert _ids(out) == [
            ("a", 0, 3, "current"),
            ("a", 1, 3, "current"),
            ("b", 0, 1_000_006, "current"),
            ("b", 1, 1_000_006, "current"),
        ]
        assert out.recovery["restarts"] == 1 and out.recovery["retries"] == 1
        assert _gone(pid), f"the stopped worker process {pid} is still there"
    finally:
        try:
            os.kill(pid, signal.SIGCONT)
        except ProcessLookupError:
            pass


@pytest.mark.timeout(120)
def test_workers_that_fail_together_are_set_up_one_at_a_time(ray_local, stand_ins):
    group = stand_ins()
    synced, inside, most = group.on_replace, [0], [0]

    def slow_sync(worker):  # a weight sync: the trainer ranks take one call at a time
        inside[0] += 1
        most[0] = max(most[0], inside[0])
        time.sleep(0.5)
        synced(worker)
        inside[0] -= 1

    group.on_replace = slow_sync
    pids = ray_local.get([w.pid.remote() for w in group.workers])
    for pid in pids:
        os.kill(pid, signal.SIGSTOP)  # both chunks time out at the same moment, in two driver threads
    try:
        out = group.rollout([{"id": "a"}, {"id": "b"}], seed=6)
        assert [t[:3] for t in _ids(out)] == [("a", 0, 6), ("a", 1, 6), ("b", 0, 1_000_009), ("b", 1, 1_000_009)]
        assert out.recovery == {"restarts": 2, "retries": 2, "quarantined": 0}
        assert most[0] == 1  # never two set-ups at once
    finally:
        for pid in pids:
            try:
                os.kill(pid, signal.SIGCONT)
            except ProcessLookupError:
                pass


@pytest.mark.timeout(120)
def test_a_record_that_hangs_a_worker_twice_is_quarantined(ray_local, stand_ins):
    quarantined = []
    group = stand_ins(quarantined=quarantined)
    # 8 records, 4 chunks of 2: worker 2 starts with chunk (c, d), which hangs twice; then c alone answers and
    # d alone hangs. Meanwhile worker 1 runs chunk (a, b), then (e, f) and (g, h).
    records = [{"id": r} for r in "abcdefgh"]
    records[3]["hang"] = True
    out = group.rollout(records, seed=5)
    seeds = {"a": 5, "b": 5, "c": 1_000_008, "e": 2_000_011, "f": 2_000_011, "g": 3_000_014, "h": 3_000_014}
    assert [t[:3] for t in _ids(out)] == [(r, g, seeds[r]) for r in "abcefgh" for g in (0, 1)]
    assert out.skipped_by_kind == {"video_error": 0, "sample_error": 0, "quarantined": 1}
    # replaced after: the chunk's timeout, its retry's timeout, d's own timeout
    assert out.recovery == {"restarts": 3, "retries": 1, "quarantined": 1}
    assert [key for key, _ in quarantined] == ["d"] and "ActorTimeoutError" in quarantined[0][1]
    assert group.quarantined == ["d"]
    first = ray_local.get(group.workers[0].pid.remote())
    assert {t.sample_id for t in out.trajectories if t.record["pid"] == first} == set("abefgh")


def _ran_by(out, pids):
    """{worker index: the record ids whose trajectories it returned}."""
    by_pid = {pid: i for i, pid in enumerate(pids)}
    ran = {}
    for t in out.trajectories:
        if t.group_index == 0:
            ran.setdefault(by_pid[t.record["pid"]], []).append(t.sample_id)
    return ran


@pytest.mark.timeout(120)
def test_a_slow_chunk_does_not_hold_the_other_worker_idle(ray_local, stand_ins):
    group = stand_ins(timeout_s=60)
    pids = ray_local.get([w.pid.remote() for w in group.workers])
    records = [{"id": "a", "slow": 3.0}, {"id": "b"}, {"id": "c"}, {"id": "d"}]  # 4 chunks, a alone takes 3 s
    out = group.rollout(records, seed=2)
    assert _ran_by(out, pids) == {0: ["a"], 1: ["b", "c", "d"]}  # worker 2 took every chunk after its own
    assert [(t.sample_id, t.group_index) for t in out.trajectories] == [(r, g) for r in "abcd" for g in (0, 1)]
    assert out.recovery == {"restarts": 0, "retries": 0, "quarantined": 0}


@pytest.mark.timeout(120)
def test_the_trajectories_do_not_depend_on_which_worker_ran_which_chunk(ray_local, stand_ins):
    group = stand_ins(timeout_s=60)
    pids = ray_local.get([w.pid.remote() for w in group.workers])
    records = [{"id": r} for r in "abcde"]  # 4 chunks: (a, b), c, d, e
    runs = []
    for slow in (0, 1):  # first worker 1, then worker 2, is slow: the other one runs the later chunks
        ray_local.get([w.set_delay.remote(1.5 if i == slow else 0.0) for i, w in enumerate(group.workers)])
        runs.append(group.rollout(records, seed=4))
    assert _ran_by(runs[0], pids) == {0: ["a", "b"], 1: ["c", "d", "e"]}
    assert _ran_by(runs[1], pids) == {0: ["a", "b", "d", "e"], 1: ["c"]}
    same = [[(t.sample_id, t.group_index, t.response_ids) for t in out.trajectories] for out in runs]
    seeds = {"a": 4, "b": 4, "c": 1_000_007, "d": 2_000_010, "e": 3_000_013}
    assert same[0] == same[1] == [(r, g, [seeds[r], g]) for r in "abcde" for g in (0, 1)]


@pytest.mark.timeout(120)
def test_without_retries_a_hanging_worker_fails_the_rollout_naming_it(ray_local, stand_ins):
    group = stand_ins(retries=0)
    stuck_id = group.workers[1]._actor_id.hex()
    t0 = time.monotonic()
    with pytest.raises(ActorFailedError) as info:
        group.rollout([{"id": "a"}, {"id": "b", "hang": True}], seed=1)
    assert TIMEOUT_S <= time.monotonic() - t0 < TIMEOUT_S + 10
    err = info.value
    assert (err.phase, err.actor, err.attempts) == ("rollout", f"rollout worker 2/2 (actor {stuck_id})", 1)
    assert "no answer within 2 s" in err.last


@pytest.mark.timeout(120)
def test_a_worker_that_hangs_in_tool_stats_is_replaced(ray_local, stand_ins):
    group = stand_ins()
    ray_local.get(group.workers[0].set_hang_stats.remote())
    out = group.rollout([{"id": "a"}], seed=0)  # the rollout answers, its counters do not: asked again of a new one
    assert out.tool_stats == {"echo": {"calls": 2}} and out.recovery["restarts"] == 1


@pytest.mark.timeout(120)
def test_replay_recovers_like_rollout(ray_local, stand_ins):
    group = stand_ins()
    assert [t.sample_id for t in group.replay([{"id": "a"}, {"id": "b"}], [["x"], ["y"]], 8)] == ["a", "b"]
    trajs = group.replay([{"id": "a"}, {"id": "b", "hang": True}], [["x"], ["y"]], 8)
    assert [(t.sample_id, t.finish_reason) for t in trajs] == [("a", ""), ("b", "quarantined")]


def test_the_timeout_is_checked_before_any_actor_starts():
    with pytest.raises(ValueError, match="timeout_s must be a number of seconds > 0, got 0"):
        RolloutGroup(RolloutConfig(), "no-model", timeout_s=0)


def test_cpu_workers_get_the_configured_torch_threads(ray_local, stand_ins):
    # rollout.cpu_threads reaches every CPU worker's constructor (1 by default: the cores are shared)
    assert ray_local.get([w.threads.remote() for w in stand_ins().workers]) == [1, 1]
    assert ray_local.get([w.threads.remote() for w in stand_ins(cpu_threads=2).workers]) == [2, 2]
