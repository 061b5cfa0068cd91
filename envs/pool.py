"""A pool of tool actors for the rollout workers: lazy Ray actors per tool, round-robin, a caller-side cache.

    pool = ToolPool({"pose_estimation": {"imgsz": 320}}, num_actors_per_tool=2)
    tools = pool.schemas()                       # for the system prompt
    result = pool.call("pose_estimation", {"frames": [0, 3]}, video)   # never raises
    results = pool.call_many([(name, args, video), ...])               # concurrent

The cache lives in the pool (the caller, `envs.cache`), keyed by (video key, tool, canonical JSON of the arguments):
the G rollouts of one sample that ask the same question pay for one call, and identical calls in flight share one
task. The other calls of one `call_many` are grouped per tool into batches, one actor task each, which tools with a
`call_batch` method (pose, detection, explanation) serve with one model forward. The actors are started, checked
and restarted by `envs.supervisor`; this module only batches, counts and runs `local` tools.
`share_process=True` puts all the tools in the same actors (one process per slot instead of one per tool and
slot: `envs.supervisor`). `local=True` runs the tools in this process (tests, notebooks), one call at a time per
tool and without timeouts. In an asyncio actor use `await asyncio.wrap_future(pool.submit(...))`. A pool pickles as its
configuration, so it can be handed to a Ray actor, which rebuilds its own actors and cache there.
"""

from __future__ import annotations

import json
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from envs.base import ToolResult, Video, make, register_tool, run_tool_batch, tool_target
from envs.cache import ResultCache
from envs.supervisor import ActorSupervisor, ToolActor, error_reply, root_cause

__all__ = ["STAT_KEYS", "ToolActor", "ToolPool"]  # ToolActor lived here before the supervisor had its own module

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
    "share_process",
)


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
        share_process: bool = False,
    ):
        self.tools = {name: dict(cfg or {}) for name, cfg in tools.items()}
        self.num_actors_per_tool = num_actors_per_tool
        self.actor_options = dict(actor_options or {})
        self.timeout_s = timeout_s
        self.cache_size = cache_size
        self.local = local
        self.startup_timeout_s = startup_timeout_s
        self.max_batch_calls = max(1, int(max_batch_calls))
        self.share_process = share_process
        self._targets = {name: tool_target(name) for name in self.tools}  # KeyError for an unknown tool
        self._lock = threading.RLock()  # guards the stats and the in-process tools
        self._cache = ResultCache(cache_size)
        self._supervisor = ActorSupervisor(
            self.tools,
            num_actors_per_tool,
            self.actor_options,
            startup_timeout_s,
            targets=self._targets,
            share_process=share_process,
        )
        self._local_locks = {name: threading.Lock() for name in self.tools}
        self._local_tools: dict[str, Any] = {}
        self._schemas: dict[str, dict] = {}
        self._executor = self._new_executor()
        self.reset_stats()

    # A pool travels to a Ray actor as its configuration; handles, locks and threads are rebuilt there.
    def __getstate__(self):
        return {k: getattr(self, k) for k in _CONFIG_FIELDS + ("_targets",)}

    def __setstate__(self, state):
        for name, target in state.pop("_targets").items():
            register_tool(name, target)
        self.__init__(**state)

    def _new_executor(self) -> ThreadPoolExecutor:
        return ThreadPoolExecutor(max_workers=max(4, 2 * self.num_actors_per_tool * len(self.tools)))

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

    # ----- tools -----
    def actors(self, name: str) -> list[Any]:
        """The Ray actor handles of tool `name`, created on first use."""
        return self._supervisor.actors(name)

    def _local_tool(self, name: str):
        with self._lock:
            if name not in self._local_tools:
                self._local_tools[name] = make(name, **self.tools[name])
            return self._local_tools[name]

    def schemas(self) -> list[dict[str, Any]]:
        """The function schemas of all tools (OpenAI/Qwen format), for the system prompt.

        With actors this waits for the first actor of each tool to start, and raises if a tool cannot be built.
        """
        for name in self.tools:
            if name not in self._schemas:
                tool_schema = self._local_tool(name).schema if self.local else self._supervisor.schema(name)
                self._schemas[name] = tool_schema
        return [self._schemas[name] for name in self.tools]

    # ----- calls -----
    def _run(self, name: str, calls: list[tuple[dict, Any]], timeout_s: float) -> list[ToolResult]:
        """One batch of calls to one tool: in process, or as one task on one actor. Never raises."""
        try:
            if not self.local:
                return self._supervisor.run(name, calls, timeout_s)
            with self._local_locks[name]:  # one model instance is not safe to call from several threads
                return run_tool_batch(self._local_tool(name), calls)
        except Exception as exc:  # a failure outside the expected ones must still reach the callers as replies
            return [error_reply(f"{name} failed: {type(exc).__name__}: {root_cause(exc)}", "tool_failed")] * len(calls)

    def _precheck(self, name: str, args: Any) -> ToolResult | None:
        if name not in self.tools:
            return error_reply(f"unknown tool {name!r}; available tools: {', '.join(self.tools)}", "unknown_tool")
        if not isinstance(args, dict):
            return error_reply(f"arguments must be a JSON object, got {type(args).__name__}", "bad_arguments")
        try:
            json.dumps(args)
        except (TypeError, ValueError) as exc:
            return error_reply(f"arguments are not JSON: {exc}", "bad_arguments")
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
        for name, args, video in calls:
            done: Future = Future()
            out.append(done)
            early = self._precheck(name, args)
            if early is not None:
                done.set_result(self._record(name, early, False) if name in self.tools else early)
                continue
            source, shared = self._cache.claim(self._cache.key(name, args, video))
            if not shared:
                misses.setdefault(name, []).append((args, video, source))
            source.add_done_callback(lambda f, d=done, n=name, c=shared: d.set_result(self._record(n, f.result(), c)))
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
        results = self._run(name, [(a, v) for a, v, _ in chunk], timeout_s)
        for (_, _, future), result in zip(chunk, results):
            future.set_result(result)

    def call(self, name: str, args: Any, video: Video | Any, timeout_s: float | None = None) -> ToolResult:
        """Call tool `name` with `args` on `video` (a Video or an object ref to one). Never raises."""
        return self.submit(name, args, video, timeout_s).result()

    def call_many(self, calls: list[tuple[str, Any, Any]], timeout_s: float | None = None) -> list[ToolResult]:
        """Run several (name, args, video) calls concurrently, batched per tool; results in the same order. Never
        raises."""
        return [f.result() for f in self.submit_many(calls, timeout_s)]

    def clear_cache(self) -> None:
        """Forget the cached results (calls in flight are not affected), e.g. to time the same calls again."""
        self._cache.clear()

    def close(self) -> None:
        """Kill the tool actors and stop the threads (the pool can be used again: actors are recreated)."""
        self._supervisor.close()
        self._executor.shutdown(wait=False)
        self._executor = self._new_executor()
