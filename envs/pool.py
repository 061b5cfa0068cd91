"""A pool of tool actors for the rollout workers: lazy Ray actors per tool, round-robin, a caller-side cache.

    pool = ToolPool({"pose_estimation": {"imgsz": 320}}, num_actors_per_tool=2)
    tools = pool.schemas()                       # for the system prompt
    result = pool.call("pose_estimation", {"frames": [0, 3]}, video)   # never raises
    results = pool.call_many([(name, args, video), ...])               # concurrent

The cache lives in the pool (the caller), keyed by (video key, tool, canonical JSON of the arguments): the G
rollouts of one sample that ask the same question pay for one call, and identical calls in flight share one task.
The other calls of one `call_many` are grouped per tool into batches, one actor task each, which tools with a
`call_batch` method (pose, detection, explanation) serve with one model forward.
`local=True` runs the tools in this process (tests, notebooks), one call at a time per tool and without
timeouts. In an asyncio actor use `await asyncio.wrap_future(pool.submit(...))`. A pool pickles as its
configuration, so it can be handed to a Ray actor, which rebuilds its own actors and cache there.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import os
import threading
import time
from collections import OrderedDict
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from envs.base import ToolResult, Video, make, register_tool, run_tool, run_tool_batch, tool_target

# Object refs of recent videos kept alive (each pins its frames in the object store): enough for a rollout batch.
VIDEO_REFS_KEPT = 32
STAT_KEYS = ("calls", "errors", "timeouts", "cache_hits", "batches")
_CONFIG_FIELDS = (
    "tools",
    "num_actors_per_tool",
    "actor_options",
    "timeout_s",
    "cache_size",
    "local",
    "startup_timeout_s",
    "max_batch_calls",
)


class ToolActor:
    """Holds one tool instance; made remote by the pool (`ray.remote(num_cpus=...)(ToolActor)`)."""

    def __init__(self, name: str, target: str, config: dict[str, Any], num_threads: int = 1):
        # Tool actors share the node's cores with the rollout and trainer: keep intra-op threads low.
        os.environ.setdefault("OMP_NUM_THREADS", str(num_threads))
        try:
            import torch

            torch.set_num_threads(num_threads)
        except ImportError:
            pass
        register_tool(name, target)  # the registry of this process may not know tools registered by the driver
        self.tool = make(name, **config)

    def schema(self) -> dict[str, Any]:
        return self.tool.schema

    def ping(self) -> int:
        return os.getpid()

    def call(self, args: Any, video: Video) -> ToolResult:
        return run_tool(self.tool, args, video)

    def call_batch(self, args_list: list[Any], *videos: Video) -> list[ToolResult]:
        """Several calls at once (one model forward where the tool allows it). The videos come as separate
        arguments so that Ray resolves their object refs here."""
        return run_tool_batch(self.tool, list(zip(args_list, videos)))


def _error(text: str, kind: str) -> ToolResult:
    return ToolResult(text=f"error: {text}", ok=False, error=kind)


class _LRU(OrderedDict):
    def __init__(self, size: int):
        super().__init__()
        self.size = size

    def get_touch(self, key):
        if key in self:
            self.move_to_end(key)
            return self[key]
        return None

    def put(self, key, value):
        self[key] = value
        self.move_to_end(key)
        while len(self) > self.size:
            self.popitem(last=False)


class ToolPool:
    """Tool name -> config; calls go to lazily created Ray actors (or in-process tools with `local=True`)."""

    def __init__(
        self,
        tools: dict[str, dict[str, Any]],
        num_actors_per_tool: int = 1,
        actor_options: dict[str, Any] | None = None,
        timeout_s: float = 30.0,
        cache_size: int = 256,
        local: bool = False,
        startup_timeout_s: float = 300.0,
        max_batch_calls: int = 16,
    ):
        self.tools = {name: dict(cfg or {}) for name, cfg in tools.items()}
        self.num_actors_per_tool = num_actors_per_tool
        self.actor_options = dict(actor_options or {})
        self.timeout_s = timeout_s
        self.cache_size = cache_size
        self.local = local
        self.startup_timeout_s = startup_timeout_s
        self.max_batch_calls = max(1, int(max_batch_calls))
        self._targets = {name: tool_target(name) for name in self.tools}  # KeyError for an unknown tool
        self._lock = threading.RLock()
        self._cache: _LRU = _LRU(cache_size)  # key -> ToolResult
        self._inflight: dict[tuple, Future] = {}
        self._video_refs: _LRU = _LRU(VIDEO_REFS_KEPT)  # video key -> ObjectRef, so frames are put once per video
        self._actors: dict[str, list[Any]] = {}
        self._ready: set[tuple[str, int]] = set()  # actor slots known to be up; others are pinged before use
        self._pids: dict[tuple[str, int], int] = {}  # process id of each ready actor slot
        self._killed: dict[tuple[str, int], int | None] = {}  # pid of a slot the pool killed, until it is replaced
        self._local_locks = {name: threading.Lock() for name in self.tools}
        self._next: dict[str, int] = {}
        self._local_tools: dict[str, Any] = {}
        self._schemas: dict[str, dict] = {}
        self._executor = ThreadPoolExecutor(max_workers=max(4, 2 * num_actors_per_tool * len(self.tools)))
        self.reset_stats()

    # A pool travels to a Ray actor as its configuration; handles, locks and threads are rebuilt there.
    def __getstate__(self):
        return {k: getattr(self, k) for k in _CONFIG_FIELDS + ("_targets",)}

    def __setstate__(self, state):
        for name, target in state.pop("_targets").items():
            register_tool(name, target)
        self.__init__(**state)

    def reset_stats(self) -> None:
        self._stats = {n: dict.fromkeys(STAT_KEYS, 0) for n in self.tools}

    def stats(self, reset: bool = False) -> dict[str, dict[str, int]]:
        """Per tool: calls, errors (any ok=False reply), timeouts, cache_hits, and batches (tool invocations that
        ran: calls / batches is the mean batch size). `reset=True` zeroes them after."""
        with self._lock:
            out = {n: dict(s) for n, s in self._stats.items()}
            if reset:
                self.reset_stats()
        return out

    # ----- tools and actors -----
    def _local_tool(self, name: str):
        with self._lock:
            if name not in self._local_tools:
                self._local_tools[name] = make(name, **self.tools[name])
            return self._local_tools[name]

    def _new_actor(self, name: str):
        import ray

        opts = {"num_cpus": 1, "max_restarts": -1, "max_task_retries": 0, **self.actor_options}
        threads = max(1, int(opts.get("num_cpus") or 1))
        return ray.remote(ToolActor).options(**opts).remote(name, self._targets[name], self.tools[name], threads)

    def actors(self, name: str) -> list[Any]:
        """The Ray actor handles of tool `name`, created on first use."""
        with self._lock:
            if name not in self._actors:
                self._actors[name] = [self._new_actor(name) for _ in range(self.num_actors_per_tool)]
            return list(self._actors[name])

    def _ready_actor(self, name: str) -> tuple[int, Any]:
        """The next actor (round-robin), checked alive and loaded if it is new or its last call went wrong.

        Startup (imports, model load) is waited for with `startup_timeout_s`, so a slow start is not mistaken for
        a slow call. A dead actor that Ray does not bring back (e.g. its constructor raised) is replaced once.
        """
        import ray

        with self._lock:
            actors = self.actors(name)
            slot = self._next.get(name, 0) % len(actors)
            self._next[name] = slot + 1
            actor, known_ready = actors[slot], (name, slot) in self._ready
        if known_ready:
            return slot, actor
        try:
            pid = self._ping(name, slot, actor)
        except ray.exceptions.RayActorError:
            try:  # Ray gave up on it (or it is mid-restart): end it for good so it cannot come back beside the new one
                ray.kill(actor, no_restart=True)
            except Exception:
                pass
            actor = self._new_actor(name)
            with self._lock:
                self._actors[name][slot] = actor
            pid = self._ping(name, slot, actor)  # a second failure goes to the caller
        with self._lock:
            self._ready.add((name, slot))
            self._pids[(name, slot)] = pid
        return slot, actor

    def _ping(self, name: str, slot: int, actor: Any) -> int:
        """Wait until the actor answers; after a kill, until its restarted process (a new pid) answers."""
        import ray

        deadline = time.monotonic() + self.startup_timeout_s
        killed_pid = self._killed.get((name, slot))
        while True:
            pid = ray.get(actor.ping.remote(), timeout=max(0.0, deadline - time.monotonic()))
            # ray.kill is asynchronous: the old process may still answer for a moment
            if pid != killed_pid or time.monotonic() > deadline:
                self._killed.pop((name, slot), None)
                return pid
            time.sleep(0.1)

    def schemas(self) -> list[dict[str, Any]]:
        """The function schemas of all tools (OpenAI/Qwen format), for the system prompt.

        With actors this waits for the first actor of each tool to start, and raises if a tool cannot be built.
        """
        for name in self.tools:
            if name not in self._schemas:
                if self.local:
                    self._schemas[name] = self._local_tool(name).schema
                else:
                    import ray

                    ref = self.actors(name)[0].schema.remote()
                    self._schemas[name] = ray.get(ref, timeout=self.startup_timeout_s)
        return [self._schemas[name] for name in self.tools]

    def _video_arg(self, video: Any) -> Any:
        """A Video becomes an object ref (put once per video key); refs pass through."""
        import ray

        if not isinstance(video, Video) or not video.key:
            return ray.put(video) if isinstance(video, Video) else video
        with self._lock:
            ref = self._video_refs.get_touch(video.key)
            if ref is None:
                ref = ray.put(video)
                self._video_refs.put(video.key, ref)
            return ref

    # ----- calls -----
    def _run_safe(self, name: str, calls: list[tuple[dict, Any]], timeout_s: float) -> list[ToolResult]:
        try:
            return self._run(name, calls, timeout_s)
        except Exception as exc:  # a failure outside the expected ones must still reach the callers as replies
            return [_error(f"{name} failed: {type(exc).__name__}: {_root_cause(exc)}", "tool_failed")] * len(calls)

    def _run(self, name: str, calls: list[tuple[dict, Any]], timeout_s: float) -> list[ToolResult]:
        """One batch of calls to one tool: in process, or as one task on one actor. A timeout or a dead actor
        answers every call of the batch with the same error."""
        if self.local:
            with self._local_locks[name]:  # one model instance is not safe to call from several threads
                return run_tool_batch(self._local_tool(name), calls)
        import ray

        n = len(calls)
        try:
            slot, actor = self._ready_actor(name)
        except ray.exceptions.GetTimeoutError:
            return [_error(f"the {name} worker did not start within {self.startup_timeout_s:g} s", "timeout")] * n
        except Exception as exc:  # the tool cannot be built (bad weights path, missing package, ...)
            return [_error(f"the {name} worker cannot start: {_root_cause(exc)}", "tool_failed")] * n
        ref = actor.call_batch.remote([a for a, _ in calls], *[self._video_arg(v) for _, v in calls])
        try:
            return ray.get(ref, timeout=timeout_s)
        except ray.exceptions.GetTimeoutError:
            # A sync actor cannot stop a running call: restart it so the next calls do not queue behind this one.
            with self._lock:
                self._ready.discard((name, slot))
                self._killed[(name, slot)] = self._pids.get((name, slot))
            try:
                ray.cancel(ref, force=False)
                ray.kill(actor, no_restart=False)
            except Exception:  # already dead or restarting: the readiness check of the next call handles it
                pass
            return [_error(f"{name} did not answer within {timeout_s:g} s", "timeout")] * n
        except ray.exceptions.RayActorError as exc:
            with self._lock:
                self._ready.discard((name, slot))
            return [_error(f"the {name} worker died during the call ({type(exc).__name__}); retry", "actor_died")] * n
        except Exception as exc:  # e.g. a video ref whose object was lost
            return [_error(f"{name} failed: {type(exc).__name__}: {str(exc)[:200]}", "tool_failed")] * n

    def _cache_key(self, name: str, args: dict, video: Any) -> tuple | None:
        if isinstance(video, Video):
            vkey = video.key
        else:  # an object ref: identical refs hold identical frames
            vkey = "ref:" + video.hex() if hasattr(video, "hex") else ""
        if not vkey or self.cache_size <= 0:
            return None
        return (vkey, name, json.dumps(args, sort_keys=True, separators=(",", ":")))

    def _precheck(self, name: str, args: Any) -> ToolResult | None:
        if name not in self.tools:
            return _error(f"unknown tool {name!r}; available tools: {', '.join(self.tools)}", "unknown_tool")
        if not isinstance(args, dict):
            return _error(f"arguments must be a JSON object, got {type(args).__name__}", "bad_arguments")
        try:
            json.dumps(args)
        except (TypeError, ValueError) as exc:
            return _error(f"arguments are not JSON: {exc}", "bad_arguments")
        return None

    def _record(self, name: str, result: ToolResult, cached: bool) -> ToolResult:
        with self._lock:
            s = self._stats.setdefault(name, dict.fromkeys(STAT_KEYS, 0))
            s["calls"] += 1
            s["cache_hits"] += int(cached)
            s["errors"] += int(not result.ok)
            s["timeouts"] += int(result.error == "timeout")
        return result

    def submit(self, name: str, args: Any, video: Any, timeout_s: float | None = None) -> Future:
        """Start a call; the future's result is a ToolResult (never an exception)."""
        return self.submit_many([(name, args, video)], timeout_s)[0]

    def submit_many(self, calls: list[tuple[str, Any, Any]], timeout_s: float | None = None) -> list[Future]:
        """Start several (name, args, video) calls; one future per call, each resolving to a ToolResult.

        Cache hits and calls identical to one in flight are answered without running; the rest are grouped by
        tool and sent as batches (up to `max_batch_calls` each, spread over the tool's actors), so one model
        forward serves the calls of many rollouts. A batch's `timeout_s` covers the whole batch.
        """
        timeout_s = self.timeout_s if timeout_s is None else timeout_s
        out: list[Future] = []
        misses: dict[str, list[tuple[dict, Any, Future]]] = {}
        with self._lock:
            for name, args, video in calls:
                done: Future = Future()
                out.append(done)
                early = self._precheck(name, args)
                if early is not None:
                    done.set_result(self._record(name, early, False) if name in self.tools else early)
                    continue
                key = self._cache_key(name, args, video)
                hit = self._cache.get_touch(key) if key else None
                source = self._inflight.get(key) if key and hit is None else None
                cached = hit is not None or source is not None
                if hit is not None:
                    source = Future()
                    source.set_result(hit)
                elif source is None:
                    source = Future()
                    misses.setdefault(name, []).append((args, video, source))
                    if key:
                        self._inflight[key] = source
                        source.add_done_callback(lambda f, k=key: self._finish(k, f))
                source.add_done_callback(lambda f, d=done, n=name, c=cached: self._deliver(f, d, n, c))
        for name, group in misses.items():
            for chunk in self._chunks(name, group):
                self._executor.submit(self._run_chunk, name, chunk, timeout_s)
        return out

    def _chunks(self, name: str, group: list) -> list[list]:
        """Split one tool's calls into batches: at least one per actor (when there are enough calls), at most
        `max_batch_calls` calls each."""
        actors = 1 if self.local else self.num_actors_per_tool
        count = max(-(-len(group) // self.max_batch_calls), min(actors, len(group)))
        return [group[i::count] for i in range(count)]

    def _run_chunk(self, name: str, chunk: list[tuple[dict, Any, Future]], timeout_s: float) -> None:
        with self._lock:
            self._stats[name]["batches"] += 1
        results = self._run_safe(name, [(a, v) for a, v, _ in chunk], timeout_s)
        for (_, _, future), result in zip(chunk, results):
            future.set_result(result)

    def _deliver(self, source: Future, done: Future, name: str, cached: bool) -> None:
        result = _as_cached(source.result()) if cached else source.result()
        done.set_result(self._record(name, result, cached))

    def _finish(self, key: tuple, future: Future) -> None:
        result = future.result()
        with self._lock:
            self._inflight.pop(key, None)
            # Timeouts and dead workers are transient: do not remember them.
            if result.error not in ("timeout", "actor_died", "tool_failed"):
                self._cache.put(key, copy.deepcopy(result))  # callers may edit what they got

    def call(self, name: str, args: Any, video: Video | Any, timeout_s: float | None = None) -> ToolResult:
        """Call tool `name` with `args` on `video` (a Video or an object ref to one). Never raises."""
        return self.submit(name, args, video, timeout_s).result()

    def call_many(self, calls: list[tuple[str, Any, Any]], timeout_s: float | None = None) -> list[ToolResult]:
        """Run several (name, args, video) calls concurrently, batched per tool; results in the same order. Never
        raises."""
        return [f.result() for f in self.submit_many(calls, timeout_s)]

    def close(self) -> None:
        """Kill the tool actors and stop the threads (the pool can be used again: actors are recreated)."""
        import ray

        with self._lock:
            for handles in self._actors.values():
                for actor in handles:
                    ray.kill(actor, no_restart=True)
            self._actors.clear()
            self._ready.clear()
            self._video_refs.clear()
        self._executor.shutdown(wait=False)
        self._executor = ThreadPoolExecutor(max_workers=max(4, 2 * self.num_actors_per_tool * len(self.tools)))


def _root_cause(exc: BaseException) -> str:
    """The last line of an error, which for a Ray actor error is the exception its constructor raised."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip().strip("^")]
    return (lines[-1] if lines else type(exc).__name__)[:300]


def _as_cached(result: ToolResult) -> ToolResult:
    return dataclasses.replace(copy.deepcopy(result), cached=True)
