"""Tool results remembered by the caller, and identical calls in flight shared.

The G rollouts of one sample ask many of the same questions about the same video, so a result is kept (LRU) under
(video key, tool, canonical JSON of the arguments) and a call identical to one still running waits for that one
instead of running again. Only answers are kept: timeouts, dead workers and tool failures are transient.

    cache = ResultCache(size=256)
    future, shared = cache.claim(cache.key("pose_estimation", args, video))
    if not shared:
        future.set_result(run_the_call())  # the owner runs it; the result is remembered as it is set
    result = future.result()                # shared: a copy marked cached=True
"""

from __future__ import annotations

import copy
import dataclasses
import json
import threading
from collections import OrderedDict
from concurrent.futures import CancelledError, Future
from typing import Any

from envs.base import ToolResult, Video

# Error kinds that say nothing about the call itself: the same call may well succeed next time.
TRANSIENT_ERRORS = ("timeout", "actor_died", "tool_failed")


class LRU(OrderedDict):
    """An ordered dict that keeps the `size` most recently used entries.

    >>> lru = LRU(2)
    >>> lru.put("a", 1); lru.put("b", 2); lru.get_touch("a"); lru.put("c", 3)
    1
    >>> list(lru), lru.get_touch("b")
    (['a', 'c'], None)
    """

    def __init__(self, size: int):
        super().__init__()
        self.size = size

    def get_touch(self, key: Any) -> Any:
        """The value under `key` (marked as just used), or None."""
        if key in self:
            self.move_to_end(key)
            return self[key]
        return None

    def put(self, key: Any, value: Any) -> None:
        self[key] = value
        self.move_to_end(key)
        while len(self) > self.size:
            self.popitem(last=False)


def cache_key(name: str, args: dict[str, Any], video: Any) -> tuple[str, str, str] | None:
    """(video key, tool, canonical JSON of `args`), or None when the video has no identity (never cached).

    `video` is a `Video` (its `key`) or a Ray object ref (its id: one ref always holds the same frames).

    >>> video = Video(frames=None, timestamps=[], key="clip.mp4|n8")
    >>> cache_key("pose_estimation", {"person": 0, "frames": [2]}, video)
    ('clip.mp4|n8', 'pose_estimation', '{"frames":[2],"person":0}')
    >>> cache_key("pose_estimation", {}, Video(frames=None, timestamps=[])) is None
    True
    """
    if isinstance(video, Video):
        vkey = video.key
    else:
        vkey = "ref:" + video.hex() if hasattr(video, "hex") else ""
    if not vkey:
        return None
    return (vkey, name, json.dumps(args, sort_keys=True, separators=(",", ":")))


def as_cached(result: ToolResult) -> ToolResult:
    """A copy of `result` marked as served from the cache (callers may edit what they got)."""
    return dataclasses.replace(copy.deepcopy(result), cached=True)


class ResultCache:
    """Up to `size` tool results by `cache_key`, plus the futures of the calls in flight. Thread-safe.

    >>> cache = ResultCache(size=8)
    >>> key = ("clip", "pose_estimation", "{}")
    >>> first, shared = cache.claim(key)
    >>> twin, twin_shared = cache.claim(key)  # asked again while the first is running
    >>> shared, twin_shared
    (False, True)
    >>> first.set_result(ToolResult("1 person"))
    >>> twin.result().text, twin.result().cached, cache.claim(key)[0].result().cached
    ('1 person', True, True)
    """

    def __init__(self, size: int):
        self.size = size
        self._lock = threading.RLock()
        self._results = LRU(size)  # key -> ToolResult
        self._inflight: dict[tuple, Future] = {}

    def key(self, name: str, args: dict[str, Any], video: Any) -> tuple | None:
        """The cache key of a call (`args` must be JSON), or None when it is not to be cached."""
        return cache_key(name, args, video) if self.size > 0 else None

    def claim(self, key: tuple | None) -> tuple[Future, bool]:
        """A future for the call under `key`, and whether it is shared.

        Shared (True): a cached result, or a call identical to one in flight; the future resolves to a copy marked
        `cached=True`. Not shared (False): the caller owns the call, runs it and sets the future's result, which is
        then remembered unless it is a transient error. A `key` of None is never shared nor remembered.
        """
        if key is None:
            return Future(), False
        with self._lock:
            hit = self._results.get_touch(key)
            if hit is not None:
                done: Future = Future()
                done.set_result(as_cached(hit))
                return done, True
            running = self._inflight.get(key)
            if running is not None:
                copied: Future = Future()
                running.add_done_callback(lambda f: _pass_on(f, copied))
                return copied, True
            owned: Future = Future()
            self._inflight[key] = owned
            # registered first, so the result is in the cache before any caller sees it
            owned.add_done_callback(lambda f: self._finish(key, f))
            return owned, False

    def _finish(self, key: tuple, future: Future) -> None:
        with self._lock:
            self._inflight.pop(key, None)
            if _failed(future) is None and future.result().error not in TRANSIENT_ERRORS:
                self._results.put(key, copy.deepcopy(future.result()))  # the owner may edit what it got

    def __len__(self) -> int:
        return len(self._results)

    def clear(self) -> None:
        """Forget the kept results (calls in flight still finish and are remembered)."""
        with self._lock:
            self._results.clear()


def _failed(future: Future) -> BaseException | None:
    """The exception a done future ended with (an owner that raised or cancelled instead of answering), or None."""
    return CancelledError() if future.cancelled() else future.exception()


def _pass_on(source: Future, target: Future) -> None:
    exc = _failed(source)
    if exc is None:
        target.set_result(as_cached(source.result()))
    else:
        target.set_exception(exc)
