"""A reward plugin that hangs (a judge stuck on a socket) ends the wait after the pool's timeout: the worker is
killed and replaced and the chunk scored again; one that hangs on every attempt fails the batch naming the reward
worker. A killed reward worker is replaced and its chunk scored once, as if nothing had happened."""

from __future__ import annotations

import os
import pickle
import signal
import threading
import time

import pytest

from common.recovery import ActorFailedError
from common.waits import ActorTimeoutError
from rewards.worker import RewardPool
from rollout.trajectory import Trajectory

TIMEOUT_S = 2.0
SLACK_S = 6.0  # Ray's kill and the scheduling on a busy 2-core machine


def _traj(sample_id: str) -> Trajectory:
    return Trajectory(sample_id, 0, [1], [2], [1], [0.0], final_text="<answer>x</answer>", record={"id": sample_id})


def _dead(ray, actor) -> bool:
    try:
        ray.get(actor.ready.remote(), timeout=30)
    except ray.exceptions.RayActorError:
        return True
    return False


@pytest.mark.timeout(120)
def test_a_plugin_that_hangs_every_time_fails_the_batch_naming_its_worker(ray_local):
    ray = ray_local
    pool = RewardPool([{"name": "tests.rewards.sleepy_reward:sleepy"}], num_workers=2, timeout_s=60, retries=1)
    pool.pool.timeout_s = TIMEOUT_S  # started (a busy machine may take longer than 2 s for that): the batches' bound
    try:
        assert pool.score([_traj("a"), _traj("b")]).totals == [1.0, 1.0]  # answers in time: as before
        first = pool.workers[1]
        t0 = time.monotonic()
        with pytest.raises(ActorFailedError) as info:
            pool.score([_traj("a"), _traj("b"), _traj("slow"), _traj("c")])  # chunks [a, b] and [slow, c]
        elapsed = time.monotonic() - t0
        assert 2 * TIMEOUT_S <= elapsed < 2 * TIMEOUT_S + 3 * SLACK_S  # the first try and one retry
        err = info.value
        assert (err.phase, err.attempts) == ("reward scoring", 2)
        stuck_id = pool.workers[1]._actor_id.hex()  # the replacement, which hung too
        assert err.actor == f"reward worker 2/2 (actor {stuck_id})" and first is not pool.workers[1]
        assert err.last.startswith("ActorTimeoutError: reward scoring: no answer within 2 s (run.timeout_s)")
        assert _dead(ray, pool.workers[1]) and _dead(ray, first) and not _dead(ray, pool.workers[0])
        assert pool.take_counts() == {"restarts": 1, "retries": 1}
    finally:
        t0 = time.monotonic()
        pool.shutdown()
        assert time.monotonic() - t0 < 5  # the cleanup does not wait on the stuck worker


@pytest.mark.timeout(120)
def test_a_killed_reward_worker_is_replaced_and_its_chunk_scored_once(ray_local):
    ray = ray_local
    pool = RewardPool([{"name": "tests.rewards.sleepy_reward:sleepy"}], num_workers=2, timeout_s=60)
    try:
        assert pool.score([_traj("a")]).totals == [1.0]
        pid = ray.get(pool.workers[1].__ray_call__.remote(lambda self: os.getpid()))
        threading.Timer(0.5, os.kill, (pid, signal.SIGKILL)).start()  # while it scores pause-1.5
        out = pool.score([_traj("a"), _traj("b"), _traj("pause-1.5"), _traj("c")])
        assert out.totals == [1.0, 1.0, 1.0, 1.0] and out.errors == {"tests.rewards.sleepy_reward:sleepy": 0}
        assert out.scored == {"tests.rewards.sleepy_reward:sleepy": 4}  # each trajectory scored once
        assert pool.take_counts() == {"restarts": 1, "retries": 1}
    finally:
        pool.shutdown()


@pytest.mark.timeout(120)
def test_a_plugin_that_hangs_while_loading_fails_the_pool_start(ray_local):
    env = {"env_vars": {"SLEEPY_LOAD_S": "600"}}  # the driver checks the spec without loading the plugin
    t0 = time.monotonic()
    with pytest.raises(ActorTimeoutError) as info:
        RewardPool(
            [{"name": "tests.rewards.sleepy_reward:SlowToLoad"}],
            num_workers=2,
            actor_options={"runtime_env": env, "num_cpus": 0},
            timeout_s=TIMEOUT_S,
        )
    assert time.monotonic() - t0 < TIMEOUT_S + SLACK_S + 10  # + the workers' start with a runtime env
    err = info.value
    assert err.phase == "reward workers loading their plugins"
    assert [a.split(" (actor ")[0] for a in err.actors] == ["reward worker 1/2", "reward worker 2/2"]


def test_the_timeout_is_checked_and_the_error_pickles():
    for bad in (0, -1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="timeout_s must be a number of seconds > 0"):
            RewardPool([{"name": "accuracy"}], timeout_s=bad)
    err = pickle.loads(pickle.dumps(ActorTimeoutError("reward scoring", ["reward worker 1/1"], 3.0)))
    assert (err.phase, err.actors, err.timeout_s) == ("reward scoring", ["reward worker 1/1"], 3.0)
    assert str(err).startswith("reward scoring: no answer within 3 s (run.timeout_s) from reward worker 1/1;")
