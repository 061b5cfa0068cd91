"""The start-up benchmark's figures from task events written by hand, its summary, and its memory sampler on a
real process that holds a known amount of memory."""

import doctest
import subprocess
import sys
import time

import pytest

from benchmarks import startup
from benchmarks.startup import ToolMemory, figures, summary


def event(cat: str, start_s: float, seconds: float) -> dict:
    return {"cat": cat, "tid": "worker:x", "ts": start_s * 1e6, "dur": seconds * 1e6, "ph": "X"}


def test_doctests():
    assert doctest.testmod(startup).failed == 0


def test_figures_from_the_first_actor_start_and_the_first_rollout():
    events = [
        event("task::RewardWorker.__init__", 1002.5, 0.1),  # the first constructor: 2.5 s after the launch
        event("task::RolloutWorker.__init__", 1003.0, 8.0),
        event("task::ToolActor.__init__", 1004.0, 9.0),
        event("task::RolloutWorker.rollout", 1013.5, 4.0),  # the first rollout waited for the tool schemas
        event("task::RolloutWorker.rollout", 1030.0, 3.0),
        event("task:execute", 1000.5, 1.0),  # not an actor method: left out
    ]
    rows = [{"time/end": 1025.0, "time/step": 12.0}, {"time/end": 1033.5, "time/step": 8.5}]
    assert figures(events, rows, 1000.0) == {
        "actors_start": 2.5,
        "first_rollout": 13.5,
        "step1_end": 25.0,
        "step2": 8.5,
    }
    with pytest.raises(ValueError, match="no actor start"):
        figures([e for e in events if "rollout" in e["cat"]], rows, 1000.0)


def test_summary_medians_and_ratios():
    results = {
        "": [{"step1_end": 30.0, "tool_rss_mb": 1200.0}, {"step1_end": 34.0, "tool_rss_mb": 1000.0}],
        "a=1": [{"step1_end": 24.0, "tool_rss_mb": 300.0}],
    }
    lines = summary(results).splitlines()
    # medians: 32 and 1100 for the default; ratios 24 / 32 = 0.75 and 300 / 1100 = 0.27
    assert lines[1].split() == ["step1_end", "32.00", "24.00"]
    assert lines[2].split() == ["tool_rss_mb", "1100.00", "300.00"]
    assert lines[4].split() == ["step1_end", "0.75"] and lines[5].split() == ["tool_rss_mb", "0.27"]


def test_memory_sampler_sees_a_tool_actor_process():
    # a process named as Ray names a tool actor (with a suffix of its own, so that no tool actor another test left
    # running is counted), holding 300 MB it has written to (so it is resident)
    code = "b = bytearray(300 * 2**20); b[::4096] = b'x' * len(b[::4096]); import time; time.sleep(30)"
    name = "ray::ToolActor-startup-test"
    proc = subprocess.Popen([name, "-c", code], executable=sys.executable)
    try:
        with ToolMemory(every_s=0.05, prefix=name) as memory:
            deadline = time.monotonic() + 20
            while memory.best[0] < 300 and time.monotonic() < deadline:
                time.sleep(0.1)
        peak = memory.peak()
    finally:
        proc.kill()
        proc.wait()
    assert peak["tool_processes"] == 1 and 300 <= peak["tool_rss_mb"] < 400, peak
