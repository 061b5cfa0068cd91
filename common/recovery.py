"""Actors that are replaced when they die or hang: the calls they held run again on a fresh actor.

    pool = Replaceable("reward worker", make=lambda i: Remote.remote(...), size=2, timeout_s=600, retries=2)
    answers = pool.call("score", {0: (chunk_a,), 1: (chunk_b,)})    # one call per actor index, answers in order
    pool.counts                                                      # {"restarts": 1, "retries": 1}

A call fails *because of its actor* when the actor process died (SIGKILL, OOM killer, a lost node: Ray's
`RayActorError`) or did not answer within `timeout_s` (a hang, a stopped process; the actor is killed first).
Such a call is run again, with the same arguments, on a new actor made by `make(index)` (and set up by
`on_replace`, e.g. given the current policy weights), at most `retries` times; then `ActorFailedError` names the
actor, the attempts and the last failure. An exception raised by the method itself (a bug, a bad argument) is not
an actor failure: it raises at once, as `ray.get` would, and nothing is retried.

Because a retried call has the same arguments (seeds included) as the first attempt, and the first attempt's
answer never reached the caller, nothing is lost and nothing is counted twice.

Calls on different actor indices may run from different threads at once (`common.balance.least_loaded` drives one
thread per actor); calls on the same index must not. The counters are shared under a lock; `on_replace` is called
without one, so it may run for two indices at once: a callback that must not (one that drives the trainer) takes
its own lock.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from common.waits import actor_name, check_timeout, get_all, kill_actors


class ActorFailedError(RuntimeError):
    """A call whose actor died or hung on every attempt (each on a fresh actor)."""

    def __init__(self, phase: str, actor: str, attempts: int, last: str):
        self.phase, self.actor, self.attempts, self.last = phase, actor, attempts, last
        super().__init__(
            f"{phase}: {actor} failed {attempts} times in a row, each time on a fresh actor (last: {last}); "
            "giving up (run.actor_retries)"
        )

    def __reduce__(self):
        return type(self), (self.phase, self.actor, self.attempts, self.last)


class WeightSyncError(RuntimeError):
    """Rollout workers (by index in the handles given) that died or did not take the new weights in time."""

    def __init__(self, failed: list[int], seconds: float = 0.0):
        self.failed, self.seconds = list(failed), seconds
        super().__init__(f"rollout workers {failed} did not take the new weights (dead, or no answer in time)")

    def __reduce__(self):
        return type(self), (self.failed, self.seconds)


@dataclass
class Failure:
    """Why a call came back without an answer: its actor died (`died`) or hung and was killed."""

    error: BaseException
    died: bool

    def text(self) -> str:
        return f"{type(self.error).__name__}: {str(self.error).splitlines()[0][:300] if str(self.error) else ''}"


def wait_each(refs: Sequence[Any], names: Sequence[str], actors: Sequence[Any], phase: str, timeout_s: float) -> list:
    """`common.waits.get_all`, but a call whose actor died or did not answer in time gives a `Failure` in its place
    instead of raising (the late actors are killed). Any other exception raises at once."""
    return get_all(refs, names, actors, phase, timeout_s, on_failure=Failure)


class Replaceable:
    """`size` interchangeable actors, each replaced (and its calls retried) when it dies or hangs. See the module
    docstring. `on_replace(index, actor)` runs after a new actor is made (e.g. to sync weights into it)."""

    def __init__(
        self,
        kind: str,
        make: Callable[[int], Any],
        size: int,
        timeout_s: float,
        retries: int = 2,
        on_replace: Callable[[int, Any], None] | None = None,
    ):
        if retries < 0:
            raise ValueError(f"retries must be >= 0, got {retries}")
        self.kind, self.make, self.timeout_s, self.retries = kind, make, check_timeout(timeout_s), retries
        self.on_replace = on_replace
        self.actors: list[Any] = [make(i) for i in range(size)]
        self.counts: Counter = Counter()  # restarts (actors replaced), retries (calls run again)
        self._counts_lock = threading.Lock()  # callers of different actors may count at once

    def name(self, i: int) -> str:
        return actor_name(self.kind, i, self.actors)

    def replace(self, i: int, why: str = "") -> Any:
        """Kill actor i (if it still runs), start a new one in its place and set it up; returns it."""
        kill_actors([self.actors[i]])
        print(f"[recovery] replacing {self.name(i)}{': ' + why if why else ''}", flush=True)
        self.actors[i] = self.make(i)
        self._count("restarts")
        if self.on_replace is not None:
            self.on_replace(i, self.actors[i])
        return self.actors[i]

    def submit(self, method: str, calls: dict[int, tuple], phase: str) -> dict[int, Any]:
        """One round: `method(*args)` on each named actor; {index: answer or Failure}."""
        order = list(calls)
        refs = [getattr(self.actors[i], method).remote(*calls[i]) for i in order]
        names = [self.name(i) for i in order]
        got = wait_each(refs, names, [self.actors[i] for i in order], phase, self.timeout_s)
        return dict(zip(order, got))

    def call(
        self,
        method: str,
        calls: dict[int, tuple],
        phase: str = "",
        exhausted: Callable[[int, tuple, Failure], Any] | None = None,
        retries: int | None = None,
    ) -> list:
        """The answers of `method(*calls[i])` on actor i, in the order of `calls`, retrying the calls whose actor
        failed on a replacement. After `retries` (default: the pool's) retries of one call, `exhausted(i, args,
        failure)` gives its answer instead, or (without it) ActorFailedError is raised."""
        phase, retries = phase or method, self.retries if retries is None else retries
        answers: dict[int, Any] = {}
        attempts: Counter = Counter()
        pending = dict(calls)
        while pending:
            failed = {}
            for i, got in self.submit(method, pending, phase).items():
                if isinstance(got, Failure):
                    failed[i] = got
                else:
                    answers[i] = got
            pending = {}
            for i, failure in failed.items():
                attempts[i] += 1
                if attempts[i] > retries and exhausted is None:
                    raise ActorFailedError(phase, self.name(i), attempts[i], failure.text())
                self.replace(i, failure.text())
                if attempts[i] <= retries:
                    self._count("retries")
                    pending[i] = calls[i]
                else:
                    answers[i] = exhausted(i, calls[i], failure)
        return [answers[i] for i in calls]

    def _count(self, key: str) -> None:
        with self._counts_lock:
            self.counts[key] += 1

    def take_counts(self) -> dict[str, int]:
        """The counters since the last call (which resets them)."""
        with self._counts_lock:
            out = {key: int(self.counts[key]) for key in ("restarts", "retries")}
            self.counts.clear()
        return out

    def shutdown(self) -> None:
        kill_actors(self.actors)
        self.actors = []
