"""Tool calls in the background, for the asynchronous tool loop: one future per call, resolving to a reply.

A tool client with `submit_many(jobs) -> [Future]` (envs' ToolPool) starts the calls itself, batched per tool; a
client with only `call_many(jobs) -> [result]` gets that call run on a background thread, and its futures resolve
together when it returns. Either way a future never raises: a client that raises, or answers a different number
of results, costs the calls an error reply each (as in the per-turn loop), never the rollout.
"""

from __future__ import annotations

import logging
import time
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger(__name__)

__all__ = ["InFlight", "ToolRunner", "call_many_guarded", "failed_reply"]


@dataclass
class _Failed:
    text: str = "Error: tool_error: the tool could not be run"
    images: list = field(default_factory=list)
    ok: bool = False
    error: str | None = "tool_error"


def failed_reply() -> Any:
    """The reply of a call whose tool client failed."""
    return _Failed()


def call_many_guarded(tools: Any, jobs: list) -> list:
    """`tools.call_many(jobs)`, one result per job. A client should never raise (the tool contract), but one that
    does, or that answers a different number of results, costs these calls an error reply each, not the run."""
    if not jobs:
        return []
    try:
        results = list(tools.call_many(jobs))
    except Exception as err:
        log.warning("the tool client failed on %d calls: %s: %s", len(jobs), type(err).__name__, err)
        results = []
    return results[: len(jobs)] + [failed_reply() for _ in range(len(jobs) - len(results))]


@dataclass(eq=False)
class InFlight:
    """The tool calls of one conversation's turn: their futures, when they were submitted, when each came in."""

    owner: Any
    futures: list[Future]
    submitted: float = field(default_factory=time.perf_counter)
    finished: list[float] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.finished = [0.0] * len(self.futures)
        for k, future in enumerate(self.futures):
            future.add_done_callback(lambda _, k=k: self._mark(k))

    def _mark(self, k: int) -> None:
        self.finished[k] = time.perf_counter()

    def done(self) -> bool:
        return all(f.done() for f in self.futures)

    def results(self) -> list[tuple[Any, float]]:
        """(reply, seconds from submission to that reply) per call, in order; an error reply for a failed future."""
        out = []
        for future, end in zip(self.futures, self.finished):
            reply = failed_reply() if future.exception() is not None else future.result()
            out.append((reply, max(end - self.submitted, 0.0)))
        return out

    def seconds(self) -> float:
        """From submission to the last reply (0 without calls)."""
        return max((end - self.submitted for end in self.finished), default=0.0)


class ToolRunner:
    """Starts tool calls in the background and waits for the first conversation whose calls are all in.

    Use as a context manager: the thread that serves a `call_many`-only client is stopped on exit."""

    def __init__(self, tools: Any):
        self.tools = tools
        self._submit_many = getattr(tools, "submit_many", None)
        self._executor: ThreadPoolExecutor | None = None

    def __enter__(self) -> ToolRunner:
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=True)

    def submit(self, owners: list[Any], jobs: list[list[tuple]]) -> list[InFlight]:
        """Start the calls of several conversations (`jobs[i]`: the (name, args, video) calls of `owners[i]`) in one
        submission, so that a pool batches them per tool; one InFlight per conversation."""
        flat = [job for group in jobs for job in group]
        start = time.perf_counter()
        futures = iter(self._futures(flat))
        return [InFlight(owner, [next(futures) for _ in group], start) for owner, group in zip(owners, jobs)]

    def _futures(self, jobs: list[tuple]) -> list[Future]:
        if not jobs:
            return []
        if self._submit_many is not None:
            try:
                futures = list(self._submit_many(jobs))
                if len(futures) == len(jobs):
                    return futures
                log.warning("the tool client answered %d futures for %d calls", len(futures), len(jobs))
            except Exception as err:
                log.warning("the tool client failed on %d calls: %s: %s", len(jobs), type(err).__name__, err)
            return [_resolved(failed_reply()) for _ in jobs]
        if self._executor is None:
            self._executor = ThreadPoolExecutor(max_workers=4, thread_name_prefix="tool-calls")
        whole = self._executor.submit(call_many_guarded, self.tools, jobs)
        parts: list[Future] = [Future() for _ in jobs]
        whole.add_done_callback(lambda f: _split(f, parts))
        return parts

    @staticmethod
    def ready(inflight: list[InFlight]) -> tuple[list[InFlight], list[InFlight]]:
        """(done, still running), without waiting."""
        done = [entry for entry in inflight if entry.done()]
        return done, [entry for entry in inflight if entry not in done]

    @staticmethod
    def wait_any(inflight: list[InFlight]) -> tuple[list[InFlight], list[InFlight]]:
        """(done, still running): blocks until at least one conversation has all its replies."""
        while True:
            done = [entry for entry in inflight if entry.done()]
            if done or not inflight:
                return done, [entry for entry in inflight if entry not in done]
            waiting = [f for entry in inflight for f in entry.futures if not f.done()]
            wait(waiting, return_when=FIRST_COMPLETED)


def _resolved(value: Any) -> Future:
    future: Future = Future()
    future.set_result(value)
    return future


def _split(whole: Future, parts: list[Future]) -> None:
    """Resolve one future per job from the future of a whole `call_many`."""
    results = whole.result() if whole.exception() is None else []
    results = results + [failed_reply() for _ in range(len(parts) - len(results))]
    for part, result in zip(parts, results):
        part.set_result(result)
