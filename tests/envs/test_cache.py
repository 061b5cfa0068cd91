"""ResultCache on its own: keys, the LRU bound, sharing calls in flight, what is not remembered."""

from __future__ import annotations

import doctest
import threading

import numpy as np
import pytest

import envs.cache
from envs.base import ToolResult, Video
from envs.cache import LRU, ResultCache, cache_key

VIDEO = Video(frames=np.zeros((2, 4, 4, 3), np.uint8), timestamps=[0.0, 1.0], key="clip|n2")
FRAMES_1_PERSON_0 = '{"frames":[1],"person":0}'  # canonical: sorted keys, no spaces


class FakeRef:
    """Stands in for a Ray ObjectRef: all the cache uses is `hex()`."""

    def hex(self) -> str:
        return "00ff"


def test_doctests():
    assert doctest.testmod(envs.cache).failed == 0


@pytest.mark.parametrize(
    "name, args, video, expected",
    [
        ("pose_estimation", {"frames": [1], "person": 0}, VIDEO, ("clip|n2", "pose_estimation", FRAMES_1_PERSON_0)),
        ("pose_estimation", {"person": 0, "frames": [1]}, VIDEO, ("clip|n2", "pose_estimation", FRAMES_1_PERSON_0)),
        ("human_detection", {}, VIDEO, ("clip|n2", "human_detection", "{}")),
        ("human_detection", {"q": "é"}, VIDEO, ("clip|n2", "human_detection", '{"q":"\\u00e9"}')),
        ("human_detection", {}, FakeRef(), ("ref:00ff", "human_detection", "{}")),
        ("human_detection", {}, Video(frames=VIDEO.frames, timestamps=[0.0, 1.0]), None),  # no identity
        ("human_detection", {}, "not a video", None),
    ],
)
def test_cache_key(name, args, video, expected):
    assert cache_key(name, args, video) == expected


def test_size_zero_caches_nothing():
    cache = ResultCache(0)
    key = cache.key("pose_estimation", {}, VIDEO)
    assert key is None
    future, shared = cache.claim(key)
    future.set_result(ToolResult("ok"))
    assert not shared and not cache.claim(key)[1] and len(cache) == 0


def test_lru_keeps_the_most_recently_used():
    lru = LRU(2)
    lru.put("a", 1)
    lru.put("b", 2)
    assert lru.get_touch("a") == 1  # "b" is now the oldest
    lru.put("c", 3)
    assert list(lru) == ["a", "c"] and lru.get_touch("b") is None


def _answer(cache: ResultCache, key: tuple, result: ToolResult) -> None:
    future, shared = cache.claim(key)
    assert not shared
    future.set_result(result)


def test_bound_evicts_the_least_recently_used_result():
    cache = ResultCache(2)
    for k in ("a", "b"):
        _answer(cache, (k,), ToolResult(k))
    assert cache.claim(("a",))[1]  # a hit touches "a"; "b" is now the oldest
    _answer(cache, ("c",), ToolResult("c"))
    assert len(cache) == 2
    assert cache.claim(("a",))[1] and cache.claim(("c",))[1]
    assert not cache.claim(("b",))[1]  # evicted: the caller owns it again


def test_identical_call_in_flight_is_shared_and_copied():
    cache = ResultCache(4)
    owner, shared = cache.claim(("k",))
    twins = [cache.claim(("k",)) for _ in range(2)]
    assert not shared and all(s for _, s in twins) and not any(f.done() for f, _ in twins)
    original = ToolResult("2 people", data={"count": 2})
    owner.set_result(original)
    first, second = (f.result() for f, _ in twins)
    assert owner.result() is original and not original.cached
    assert first.cached and second.cached and first.text == "2 people"
    first.data["count"] = 99  # a caller edits its copy: neither the other copy nor the cache sees it
    later = cache.claim(("k",))[0].result()
    assert second.data["count"] == 2 and later.data["count"] == 2 and later.cached


@pytest.mark.parametrize(
    "error, remembered",
    [
        (None, True),
        ("bad_arguments", True),  # the same arguments get the same reply
        ("unknown_tool", True),
        ("timeout", False),
        ("actor_died", False),
        ("tool_failed", False),
    ],
)
def test_transient_errors_are_not_remembered(error, remembered):
    cache = ResultCache(4)
    _answer(cache, ("k",), ToolResult("reply", ok=error is None, error=error))
    assert cache.claim(("k",))[1] is remembered


def test_owner_that_fails_releases_the_key():
    cache = ResultCache(4)
    owner, _ = cache.claim(("k",))
    twin, _ = cache.claim(("k",))
    owner.set_exception(RuntimeError("the runner broke"))
    with pytest.raises(RuntimeError, match="the runner broke"):
        twin.result()
    assert not cache.claim(("k",))[1]  # not stuck in flight, not remembered


def test_concurrent_claims_have_one_owner():
    cache = ResultCache(4)
    barrier = threading.Barrier(8)
    claims = []

    def claim():
        barrier.wait()
        claims.append(cache.claim(("k",)))

    threads = [threading.Thread(target=claim) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    owners = [f for f, shared in claims if not shared]
    assert len(owners) == 1
    owners[0].set_result(ToolResult("once"))
    assert all(f.result(timeout=5).text == "once" for f, _ in claims)
