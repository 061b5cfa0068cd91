"""The Ray actors that run a pool's tools: created on first use, checked alive before use, restarted or replaced
when they fail.

    supervisor = ActorSupervisor({"pose_estimation": {"imgsz": 320}}, num_actors_per_tool=2)
    schema = supervisor.schema("pose_estimation")                       # waits for the first actor to start
    results = supervisor.run("pose_estimation", [(args, video), ...], timeout_s=30)   # one task, one actor

Each tool has `num_actors_per_tool` actor slots, used round-robin. With `share_process=True` all the tools share
their actors instead: slot k of every tool is one process holding every tool, so a node starts one process (one
torch and ultralytics import, one load of each YOLO file) instead of one per tool, and the tools' calls queue in
it one after the other; a restart restarts them all. A slot is pinged before its first call and
after any call that went wrong; the ping waits `startup_timeout_s` (imports, model load), so a slow start is not
mistaken for a slow call. A call past its timeout restarts its actor, since a sync actor cannot stop a running call
and the next calls would queue behind it; the next ping then waits for the new process (a new pid). An actor that
Ray does not bring back (its constructor raised, or it was killed for good) is replaced once. `run` answers every
expected failure with error replies rather than exceptions, so a rollout goes on.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from typing import Any

from envs.base import ToolResult, Video, make, register_tool, run_tool, run_tool_batch, tool_target
from envs.cache import LRU

SHARED = "*"  # the group of every tool when they share processes
# Object refs of recent videos kept alive (each pins its frames in the object store): enough for a rollout batch.
VIDEO_REFS_KEPT = 32


class ToolActor:
    """Holds the instances of one or more tools; made remote by the supervisor (`ray.remote(num_cpus=...)(ToolActor)`).

    `tools`: name -> (target "module:Class", config). Each tool is built on its own: with several tools in one
    process, one that cannot be built (a bad weights path) fails its own calls, not the others'."""

    def __init__(self, tools: dict[str, tuple[str, dict[str, Any]]], num_threads: int = 1):
        # Tool actors share the node's cores with the rollout and trainer: keep intra-op threads low.
        os.environ.setdefault("OMP_NUM_THREADS", str(num_threads))
        self.tools: dict[str, Any] = {}
        self.errors: dict[str, Exception] = {}
        for name, (target, config) in tools.items():
            register_tool(name, target)  # the registry of this process may not know tools registered by the driver
            try:
                self.tools[name] = make(name, **config)
            except Exception as exc:
                if len(tools) == 1:
                    raise  # Ray reports the actor dead; the supervisor replaces it once
                self.errors[name] = exc
        if "torch" in sys.modules:  # only when a tool uses torch: importing it costs seconds per actor
            sys.modules["torch"].set_num_threads(num_threads)

    def _start_error(self, name: str) -> ToolResult | None:
        exc = self.errors.get(name)
        if exc is None:
            return None
        return error_reply(f"the {name} worker cannot start: {type(exc).__name__}: {root_cause(exc)}", "tool_failed")

    def schema(self, name: str) -> dict[str, Any]:
        if name in self.errors:
            raise self.errors[name]
        return self.tools[name].schema

    def ping(self) -> int:
        return os.getpid()

    def call(self, name: str, args: Any, video: Video) -> ToolResult:
        return self._start_error(name) or run_tool(self.tools[name], args, video)

    def call_batch(self, name: str, args_list: list[Any], *videos: Video) -> list[ToolResult]:
        """Several calls of tool `name` at once (one model forward where the tool allows it). The videos come as
        separate arguments so that Ray resolves their object refs here. A tool of a shared process that could not
        be built answers each call with the error reply a tool actor that cannot start gets."""
        failed = self._start_error(name)
        if failed is not None:
            return [failed] * len(args_list)
        return run_tool_batch(self.tools[name], list(zip(args_list, videos)))


def error_reply(text: str, kind: str) -> ToolResult:
    """An error reply the model reads as `error: <text>`; `kind` is `ToolResult.error`.

    >>> error_reply("pose_estimation did not answer within 30 s", "timeout").text
    'error: pose_estimation did not answer within 30 s'
    """
    return ToolResult(text=f"error: {text}", ok=False, error=kind)


def root_cause(exc: BaseException) -> str:
    """The last line of an error, which for a Ray actor error is the exception its constructor raised.

    >>> root_cause(RuntimeError("ActorDiedError: ...\\n  File x.py\\nFileNotFoundError: /w.pt\\n   ^^^"))
    'FileNotFoundError: /w.pt'
    """
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip().strip("^")]
    return (lines[-1] if lines else type(exc).__name__)[:300]


class ActorSupervisor:
    """Tool name -> config; `num_actors_per_tool` Ray actors per tool, made with `actor_options` on first use
    (with `share_process`, `num_actors_per_tool` actors in all, each holding every tool).

    `targets` ("module:Class" per tool) default to the registry's; they are sent to each actor so that it can
    register tools the worker process does not know. Actors, their slots and their state are kept per group: a
    tool's own name, or SHARED for all tools when they share processes.
    """

    def __init__(
        self,
        tools: dict[str, dict[str, Any]],
        num_actors_per_tool: int = 1,
        actor_options: dict[str, Any] | None = None,
        startup_timeout_s: float = 300.0,
        targets: dict[str, str] | None = None,
        share_process: bool = False,
    ):
        self.tools = tools
        self.share_process = share_process
        self.num_actors_per_tool = num_actors_per_tool
        self.actor_options = dict(actor_options or {})
        self.startup_timeout_s = startup_timeout_s
        self.targets = dict(targets) if targets is not None else {name: tool_target(name) for name in tools}
        self._lock = threading.RLock()
        self._actors: dict[str, list[Any]] = {}  # group -> its actors, one per slot
        self._next: dict[str, int] = {}  # the slot each group's next call goes to
        self._ready: set[tuple[str, int]] = set()  # (group, slot)s known to be up; others are pinged before use
        self._pids: dict[tuple[str, int], int] = {}  # process id of each ready slot
        self._killed: dict[tuple[str, int], int | None] = {}  # pid of a slot restarted here, until the new one answers
        self._video_refs = LRU(VIDEO_REFS_KEPT)  # video key -> ObjectRef, so frames are put once per video

    # ----- actors -----
    def group(self, name: str) -> str:
        """The group whose actors run tool `name`: SHARED when the tools share processes, else the tool itself."""
        if name not in self.tools:
            raise KeyError(f"unknown tool {name!r}; this supervisor runs {', '.join(self.tools)}")
        return SHARED if self.share_process else name

    def _new_actor(self, group: str) -> Any:
        import ray

        opts = {"num_cpus": 1, "max_restarts": -1, "max_task_retries": 0, **self.actor_options}
        threads = max(1, int(opts.get("num_cpus") or 1))
        names = list(self.tools) if group == SHARED else [group]
        tools = {n: (self.targets[n], self.tools[n]) for n in names}
        return ray.remote(ToolActor).options(**opts).remote(tools, threads)

    def actors(self, name: str) -> list[Any]:
        """The Ray actor handles that run tool `name`, created on first use (the same for every tool when they
        share processes)."""
        group = self.group(name)
        with self._lock:
            if group not in self._actors:
                self._actors[group] = [self._new_actor(group) for _ in range(self.num_actors_per_tool)]
            return list(self._actors[group])

    def pid(self, name: str, slot: int) -> int | None:
        """The process id of actor `slot` of tool `name` when it last answered a ping (None before)."""
        with self._lock:
            return self._pids.get((self.group(name), slot))

    def ready_actor(self, name: str) -> tuple[int, Any]:
        """The next actor (round-robin) and its slot, checked alive and loaded if it is new or its last call went
        wrong. Raises what the ping raised: `GetTimeoutError` for a slow start, an actor error if it cannot start.
        """
        import ray

        group = self.group(name)
        with self._lock:
            actors = self.actors(name)
            slot = self._next.get(group, 0) % len(actors)
            self._next[group] = slot + 1
            actor, known_ready = actors[slot], (group, slot) in self._ready
        if known_ready:
            return slot, actor
        try:
            pid = self._ping(group, slot, actor)
        except ray.exceptions.RayActorError:
            try:  # Ray gave up on it (or it is mid-restart): end it for good so it cannot come back beside the new one
                ray.kill(actor, no_restart=True)
            except Exception:
                pass
            with self._lock:
                if self._actors[group][slot] is actor:  # another tool of a shared slot may have replaced it already
                    self._actors[group][slot] = self._new_actor(group)
                actor = self._actors[group][slot]
            pid = self._ping(group, slot, actor)  # a second failure goes to the caller
        with self._lock:
            self._ready.add((group, slot))
            self._pids[(group, slot)] = pid
        return slot, actor

    def _ping(self, group: str, slot: int, actor: Any) -> int:
        """Wait until the actor answers; after a restart, until its new process (a new pid) answers."""
        import ray

        deadline = time.monotonic() + self.startup_timeout_s
        killed_pid = self._killed.get((group, slot))
        while True:
            pid = ray.get(actor.ping.remote(), timeout=max(0.0, deadline - time.monotonic()))
            # ray.kill is asynchronous: the old process may still answer for a moment
            if pid != killed_pid or time.monotonic() > deadline:
                self._killed.pop((group, slot), None)
                return pid
            time.sleep(0.1)

    def _restart(self, name: str, slot: int, actor: Any, ref: Any) -> None:
        """Restart the actor of a call that timed out (Ray brings it back: `max_restarts=-1`)."""
        import ray

        key = (self.group(name), slot)
        with self._lock:
            self._ready.discard(key)
            self._killed[key] = self._pids.get(key)
        try:
            ray.cancel(ref, force=False)
            ray.kill(actor, no_restart=False)
        except Exception:  # already dead or restarting: the readiness check of the next call handles it
            pass

    def schema(self, name: str) -> dict[str, Any]:
        """Tool `name`'s function schema, from its first actor (waits up to `startup_timeout_s` for it to start)."""
        import ray

        return ray.get(self.actors(name)[0].schema.remote(name), timeout=self.startup_timeout_s)

    # ----- calls -----
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

    def run(self, name: str, calls: list[tuple[Any, Any]], timeout_s: float) -> list[ToolResult]:
        """Run (args, video) calls of tool `name` as one task on one actor, within `timeout_s`. A slow start, a
        timeout or a dead actor answers every call of the batch with the same error reply."""
        import ray

        n = len(calls)
        try:
            slot, actor = self.ready_actor(name)
        except ray.exceptions.GetTimeoutError:
            return [error_reply(f"the {name} worker did not start within {self.startup_timeout_s:g} s", "timeout")] * n
        except Exception as exc:  # the tool cannot be built (bad weights path, missing package, ...)
            return [error_reply(f"the {name} worker cannot start: {root_cause(exc)}", "tool_failed")] * n
        ref = actor.call_batch.remote(name, [a for a, _ in calls], *[self._video_arg(v) for _, v in calls])
        try:
            return ray.get(ref, timeout=timeout_s)
        except ray.exceptions.GetTimeoutError:
            self._restart(name, slot, actor, ref)
            return [error_reply(f"{name} did not answer within {timeout_s:g} s", "timeout")] * n
        except ray.exceptions.RayActorError as exc:
            with self._lock:
                self._ready.discard((self.group(name), slot))
            died = f"the {name} worker died during the call ({type(exc).__name__}); retry"
            return [error_reply(died, "actor_died")] * n
        except Exception as exc:  # e.g. a video ref whose object was lost
            return [error_reply(f"{name} failed: {type(exc).__name__}: {str(exc)[:200]}", "tool_failed")] * n

    def close(self) -> None:
        """Kill all actors for good and drop the video refs (actors are made again on the next use)."""
        with self._lock:
            handles = [actor for group in self._actors.values() for actor in group]
            self._actors.clear()
            self._ready.clear()
            self._pids.clear()
            self._killed.clear()
            self._video_refs.clear()
        if handles:
            import ray

            for actor in handles:
                ray.kill(actor, no_restart=True)
