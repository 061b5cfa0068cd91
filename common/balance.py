"""Tasks run by whichever worker is free: least-loaded scheduling over a fixed set of workers.

    answers = least_loaded(num_workers=2, num_tasks=4, run=lambda worker, task: ...)   # answers in task order

Worker i starts with task i; a worker that finishes takes the lowest-numbered task nobody has started, so a slow
task holds up only its own worker while the others work through the rest. Each worker is driven by a thread of its
own (one worker: the calling thread), so `run` must be safe to call from several threads at once for different
workers; it is never called twice at once for the same worker.
"""

from __future__ import annotations

import concurrent.futures
import threading
from collections.abc import Callable
from typing import Any


def least_loaded(num_workers: int, num_tasks: int, run: Callable[[int, int], Any]) -> list:
    """The answers of `run(worker, task)` for every task in `range(num_tasks)`, in task order, each task run once by
    the first worker free for it (see the module docstring). The first exception raised by `run` stops the workers
    from taking new tasks; it is raised once the tasks already running have ended.

    >>> least_loaded(2, 3, lambda worker, task: task * 10)
    [0, 10, 20]
    """
    if num_workers < 1:
        raise ValueError(f"least_loaded: num_workers must be >= 1, got {num_workers}")
    if num_workers == 1 or num_tasks <= 1:
        return [run(0, task) for task in range(num_tasks)]
    answers: list[Any] = [None] * num_tasks
    lock = threading.Lock()
    taken = [min(num_workers, num_tasks)]  # the next task nobody has started
    errors: list[BaseException] = []  # in the order they were raised

    def drive(worker: int) -> None:
        task = worker
        while task < num_tasks and not errors:
            try:
                answers[task] = run(worker, task)
            except BaseException as error:
                with lock:
                    errors.append(error)
                return
            with lock:
                task, taken[0] = taken[0], taken[0] + 1

    drivers = min(num_workers, num_tasks)
    with concurrent.futures.ThreadPoolExecutor(drivers, thread_name_prefix="least-loaded") as pool:
        for future in [pool.submit(drive, worker) for worker in range(drivers)]:
            future.result()
    if errors:
        raise errors[0]
    return answers
