"""least_loaded: a free worker takes the next task, answers come back in task order, the first error stops it."""

from __future__ import annotations

import doctest
import threading
import time

import pytest

from common import balance
from common.balance import least_loaded


def _recorder(slow: dict[int, float]):
    """A `run` that sleeps `slow[task]` seconds and notes which worker ran which task, from which thread."""
    ran: dict[int, list[int]] = {}
    threads: dict[int, set[int]] = {}
    lock = threading.Lock()

    def run(worker: int, task: int) -> str:
        time.sleep(slow.get(task, 0.0))
        with lock:
            ran.setdefault(worker, []).append(task)
            threads.setdefault(worker, set()).add(threading.get_ident())
        return f"task {task}"

    return run, ran, threads


def test_a_slow_task_does_not_hold_the_other_worker_idle():
    run, ran, threads = _recorder({0: 1.0})
    t0 = time.monotonic()
    assert least_loaded(2, 4, run) == ["task 0", "task 1", "task 2", "task 3"]
    assert ran == {0: [0], 1: [1, 2, 3]}  # worker 1 took every task after its own while task 0 ran
    assert time.monotonic() - t0 < 1.0 + 0.8  # the slow task alone set the time, not a second round after it
    assert len(threads[0] | threads[1]) == 2  # one thread per worker


def test_workers_start_with_their_own_task_and_take_the_lowest_free_one():
    # task 1 ends first, so worker 1 takes task 3 (the lowest nobody started); worker 2 takes 4, worker 0 takes 5
    run, ran, _ = _recorder({0: 0.9, 1: 0.1, 2: 0.5, 3: 1.0, 4: 1.0})
    assert least_loaded(3, 6, run) == [f"task {t}" for t in range(6)]
    assert ran == {0: [0, 5], 1: [1, 3], 2: [2, 4]}


def test_one_worker_runs_every_task_in_order_in_the_calling_thread():
    run, ran, threads = _recorder({})
    assert least_loaded(1, 3, run) == ["task 0", "task 1", "task 2"]
    assert ran == {0: [0, 1, 2]} and threads == {0: {threading.get_ident()}}
    assert least_loaded(3, 0, run) == []


def test_the_first_error_stops_new_tasks_and_is_raised_after_the_running_ones_end():
    started, ended = [], []

    def run(worker: int, task: int) -> int:
        started.append(task)
        if task == 1:
            raise KeyError("task 1 broke")
        time.sleep(0.5 if task == 0 else 0.0)
        ended.append(task)
        return task

    with pytest.raises(KeyError, match="task 1 broke"):
        least_loaded(2, 5, run)
    assert sorted(started) == [0, 1] and ended == [0]  # task 0 ran to its end; 2, 3, 4 never started


def test_a_worker_count_below_one_is_refused():
    with pytest.raises(ValueError, match="num_workers must be >= 1, got 0"):
        least_loaded(0, 2, lambda worker, task: task)


def test_doctests():
    assert doctest.testmod(balance).failed == 0
