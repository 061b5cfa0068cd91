"""A rollout worker that does not answer (a hung engine, a stopped process) ends RolloutGroup's wait after its timeout
with an error naming the worker, and the worker is killed so that the run's cleanup can go on. Stand-in actors built
by RolloutGroup's own constructor play the workers (no model)."""

from __future__ import annotations

import os
import signal
import sys
import time

import pytest

import rollout.worker
from common.waits import ActorTimeoutError
from rollout.config import RolloutConfig
from rollout.group import RolloutGroup
from rollout.trajectory import Trajectory

TIMEOUT_S = 2.0
SLACK_S = 6.0  # Ray's kill and the scheduling on a busy 2-core machine


class StandInWorker:
    """Answers like a RolloutWorker, but hangs on a record marked "hang" and on tool_stats once told to."""

    def __init__(self, cfg, model_path, seed=0, torch_threads=None):
        self.hang_stats = False

    def pid(self) -> int:
        return os.getpid()

    def rollout(self, records, n, sampling):
        if any(r.get("hang") for r in records):
            time.sleep(600)
        return [Trajectory(r["id"], g, [1], [2], [1], [0.0]) for r in records for g in range(n)]

    def replay(self, records, scripts, sampling):
        return self.rollout(records, 1, sampling)

    def tool_stats(self, reset=True):
        if self.hang_stats:
            time.sleep(600)
        return {"echo": {"calls": 1}}

    def set_hang_stats(self) -> None:
        self.hang_stats = True


@pytest.fixture
def group(ray_local, monkeypatch):
    ray_local.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    monkeypatch.setattr(rollout.worker, "RolloutWorker", StandInWorker)
    group = RolloutGroup(RolloutConfig(n=2, num_workers=2, num_cpus=0), "no-model", timeout_s=TIMEOUT_S)
    ray_local.get([w.pid.remote() for w in group.workers])  # started: the 2 s are the calls' alone
    yield group
    t0 = time.monotonic()
    group.shutdown()
    assert time.monotonic() - t0 < 5  # the cleanup does not wait on a stuck worker


def _raises_in_time(call) -> ActorTimeoutError:
    t0 = time.monotonic()
    with pytest.raises(ActorTimeoutError) as info:
        call()
    assert TIMEOUT_S <= time.monotonic() - t0 < TIMEOUT_S + SLACK_S
    return info.value


def _is_dead(ray, worker) -> bool:
    try:
        ray.get(worker.pid.remote(), timeout=30)
    except ray.exceptions.RayActorError:
        return True
    return False


@pytest.mark.timeout(120)
def test_a_hanging_worker_fails_the_rollout_naming_it(ray_local, group):
    out = group.rollout([{"id": "a"}, {"id": "b"}], seed=0)  # in time: as before
    assert [(t.sample_id, t.group_index) for t in out.trajectories] == [("a", 0), ("a", 1), ("b", 0), ("b", 1)]
    assert out.tool_stats == {"echo": {"calls": 2}}

    err = _raises_in_time(lambda: group.rollout([{"id": "a"}, {"id": "b", "hang": True}], seed=1))
    stuck_id = group.workers[1]._actor_id.hex()
    assert (err.phase, err.actors, err.timeout_s) == ("rollout", [f"rollout worker 2/2 (actor {stuck_id})"], 2.0)
    assert "rollout: no answer within 2 s (run.timeout_s) from rollout worker 2/2" in str(err)
    assert _is_dead(ray_local, group.workers[1]) and not _is_dead(ray_local, group.workers[0])


@pytest.mark.timeout(120)
def test_a_stopped_worker_process_fails_the_rollout_and_is_killed(ray_local, group):
    pid = ray_local.get(group.workers[0].pid.remote())
    os.kill(pid, signal.SIGSTOP)  # a stopped process: it never answers, nor reads a cancel
    try:
        err = _raises_in_time(lambda: group.rollout([{"id": "a"}, {"id": "b"}], seed=0))
        assert err.phase == "rollout" and err.actors[0].startswith("rollout worker 1/2 (actor ")
        assert len(err.actors) == 1
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:  # killed: the process goes away although it is stopped
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.2)
        else:
            pytest.fail(f"the stopped worker process {pid} is still there")
    finally:
        try:
            os.kill(pid, signal.SIGCONT)
        except ProcessLookupError:
            pass


@pytest.mark.timeout(120)
def test_a_worker_that_hangs_in_tool_stats_is_named(ray_local, group):
    ray_local.get(group.workers[0].set_hang_stats.remote())
    err = _raises_in_time(lambda: group.rollout([{"id": "a"}], seed=0))  # the rollout answers, its counters do not
    assert err.phase == "tool_stats" and [a.split(" (")[0] for a in err.actors] == ["rollout worker 1/2"]


@pytest.mark.timeout(120)
def test_a_worker_that_hangs_in_replay_is_named(ray_local, group):
    assert [t.sample_id for t in group.replay([{"id": "a"}, {"id": "b"}], [["x"], ["y"]], 8)] == ["a", "b"]
    err = _raises_in_time(lambda: group.replay([{"id": "a"}, {"id": "b", "hang": True}], [["x"], ["y"]], 8))
    assert err.phase == "replay" and [a.split(" (")[0] for a in err.actors] == ["rollout worker 2/2"]


def test_the_timeout_is_checked_before_any_actor_starts():
    with pytest.raises(ValueError, match="timeout_s must be a number of seconds > 0, got 0"):
        RolloutGroup(RolloutConfig(), "no-model", timeout_s=0)
