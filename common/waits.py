"""Bounded driver waits on actors: a hung vLLM, a reward plugin stuck on a socket or a stopped process must end the
run with a message naming it, not hang it silently.

    names = [actor_name("rollout worker", i, workers) for i in range(len(workers))]
    parts = get_all([w.rollout.remote(...) for w in workers], names, workers, "rollout", timeout_s)

On a timeout the actors that did not answer are killed (a running call of a plain actor cannot be cancelled, and a
stopped process never reads a cancel), so the caller's cleanup (shutting the other actors down) can go on, and
`ActorTimeoutError` names the phase, the actors and the timeout. Nothing is retried or replaced here:
`common.recovery` does that, through `get_all(..., on_failure=...)`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from typing import Any

DEFAULT_TIMEOUT_S = 1800.0
"""How long the driver waits for one call of its actors (a rollout batch, a reward batch, an eval chunk)."""


class ActorTimeoutError(TimeoutError):
    """Actors that did not answer one of the driver's calls within `timeout_s` (they have been killed)."""

    def __init__(self, phase: str, actors: Sequence[str], timeout_s: float):
        self.phase, self.actors, self.timeout_s = phase, list(actors), timeout_s
        super().__init__(
            f"{phase}: no answer within {timeout_s:g} s (run.timeout_s) from {', '.join(self.actors)}; "
            f"killed {'it' if len(self.actors) == 1 else 'them'} so that the run can shut down"
        )

    def __reduce__(self):  # picklable with its fields (Ray ships exceptions between processes)
        return type(self), (self.phase, self.actors, self.timeout_s)


def check_timeout(timeout_s: float) -> float:
    if not 0 < timeout_s < math.inf:
        raise ValueError(f"timeout_s must be a number of seconds > 0, got {timeout_s}")
    return float(timeout_s)


def actor_name(kind: str, index: int, actors: Sequence[Any]) -> str:
    """'rollout worker 2/4 (actor 1a2b3c4d...)': the id is the one `ray list actors` and the dashboard show."""
    actor_id = getattr(actors[index], "_actor_id", None)
    shown = f" (actor {actor_id.hex()})" if actor_id is not None else ""
    return f"{kind} {index + 1}/{len(actors)}{shown}"


def kill_actors(actors: Sequence[Any]) -> None:
    """Kill each actor (one that is already gone is skipped); its pending calls then fail with ActorDiedError."""
    import ray

    for actor in actors:
        try:
            ray.kill(actor, no_restart=True)
        except Exception:  # already dead, or not an actor handle: nothing left to stop
            pass


def actor_died(error: BaseException) -> bool:
    """Whether `error`, raised by `ray.get` of an actor call, means that actor died (or is unreachable), not that
    its method raised: Ray re-raises a method's exception as a RayTaskError subclass of the exception's own type, so
    a method that called a dead actor itself raises a RayTaskError that is also a RayActorError."""
    from ray.exceptions import RayActorError, RayTaskError

    return isinstance(error, RayActorError) and not isinstance(error, RayTaskError)


def get_all(
    refs: Sequence[Any],
    names: Sequence[str],
    actors: Sequence[Any],
    phase: str,
    timeout_s: float,
    on_failure: Callable[[BaseException, bool], Any] | None = None,
) -> list:
    """`ray.get(refs)`, where refs[i] is a call on actors[i] (called names[i]), waiting at most `timeout_s` for all
    of them together. A call that raised raises at once, as with ray.get. When the time is up, the actors whose calls
    have not answered are killed and ActorTimeoutError names them. With `on_failure(error, died)`, a call whose
    actor died (`actor_died`) or did not answer in time gets its result in place instead (each late call with an
    ActorTimeoutError naming its own actor), and the others are still collected (`common.recovery` replaces them)."""
    import ray

    refs = list(refs)
    index = {ref: i for i, ref in enumerate(refs)}
    results: list[Any] = [None] * len(refs)
    deadline = time.monotonic() + timeout_s
    remaining = refs
    while remaining:
        left = max(0.0, deadline - time.monotonic())
        ready, remaining = ray.wait(remaining, num_returns=1, timeout=left, fetch_local=False)
        if not ready:
            late = sorted(index[ref] for ref in remaining)
            kill_actors([actors[i] for i in late])
            if on_failure is None:
                raise ActorTimeoutError(phase, [names[i] for i in late], timeout_s)
            for i in late:
                results[i] = on_failure(ActorTimeoutError(phase, [names[i]], timeout_s), False)
            break
        for ref in ready:
            try:
                results[index[ref]] = ray.get(ref)
            except Exception as e:
                if on_failure is None or not actor_died(e):
                    raise
                results[index[ref]] = on_failure(e, True)
    return results
