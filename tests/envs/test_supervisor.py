"""ActorSupervisor with real Ray actors running a tiny tool: lazy start, round-robin, timeouts, dead actors, tools
that cannot start or start too slowly."""

from __future__ import annotations

import doctest
import os
import time

import numpy as np
import pytest

import envs.supervisor
from envs.base import ToolResult, Video
from envs.supervisor import ActorSupervisor

NAP = {"nap": "tests.envs.test_supervisor:NapTool"}  # the actors import this module by that path
VIDEO = Video(frames=np.zeros((2, 4, 4, 3), np.uint8), timestamps=[0.0, 1.0], key="tiny")


class NapTool:
    """Sleeps `seconds`, then answers with its process id; its constructor can be slow or fail."""

    name = "nap"
    schema = {
        "type": "function",
        "function": {
            "name": "nap",
            "description": "sleep",
            "parameters": {"type": "object", "properties": {"seconds": {"type": "number"}}},
        },
    }

    def __init__(self, start_s: float = 0.0, fail: str = ""):
        time.sleep(start_s)
        if fail:
            raise RuntimeError(fail)

    def call(self, args, video):
        time.sleep(args.get("seconds", 0))
        return ToolResult(text=str(os.getpid()), data={"frames": len(video.frames)})


def _pids(results) -> set[int]:
    assert all(r.ok for r in results), [r.text for r in results]
    return {int(r.text) for r in results}


@pytest.fixture
def supervise(ray_local):
    made = []

    def supervise(config=None, **kwargs):
        made.append(ActorSupervisor({"nap": config or {}}, targets=NAP, **kwargs))
        return made[-1]

    yield supervise
    for supervisor in made:
        supervisor.close()


def test_doctests():
    assert doctest.testmod(envs.supervisor).failed == 0


def test_actors_start_on_first_use_and_take_turns(supervise):
    supervisor = supervise(num_actors_per_tool=2)
    assert supervisor.pid("nap", 0) is None  # nothing started yet
    assert supervisor.schema("nap")["function"]["name"] == "nap"
    first = supervisor.run("nap", [({}, VIDEO), ({"seconds": 0.01}, VIDEO)], timeout_s=60)
    second = supervisor.run("nap", [({}, VIDEO)], timeout_s=60)
    assert len(_pids(first)) == 1 and first[0].data == {"frames": 2}  # one batch is one task on one actor
    assert _pids(first) == {supervisor.pid("nap", 0)} and _pids(second) == {supervisor.pid("nap", 1)}
    assert _pids(first) != _pids(second)
    assert _pids(supervisor.run("nap", [({}, VIDEO)], timeout_s=60)) == _pids(first)  # round-robin: slot 0 again


def test_timeout_restarts_the_actor(supervise):
    supervisor = supervise()
    before = _pids(supervisor.run("nap", [({}, VIDEO)], timeout_s=60))
    (slow,) = supervisor.run("nap", [({"seconds": 60}, VIDEO)], timeout_s=0.5)
    assert (slow.ok, slow.error, slow.text) == (False, "timeout", "error: nap did not answer within 0.5 s")
    after = _pids(supervisor.run("nap", [({}, VIDEO)], timeout_s=60))  # not stuck behind the 60 s nap
    assert after != before and after == {supervisor.pid("nap", 0)}


def _wait_gone(pid: int, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)  # signal 0: only checks that the process exists (the actors run on this machine)
        except ProcessLookupError:
            return
        time.sleep(0.05)
    raise AssertionError(f"actor process {pid} still alive {timeout_s} s after ray.kill")


def test_actor_killed_for_good_is_replaced(supervise, ray_local):
    supervisor = supervise()
    (old_pid,) = _pids(supervisor.run("nap", [({}, VIDEO)], timeout_s=60))
    (old,) = supervisor.actors("nap")
    ray_local.kill(old, no_restart=True)
    _wait_gone(old_pid)
    results = [supervisor.run("nap", [({}, VIDEO)], timeout_s=60)[0] for _ in range(2)]
    # the call that meets the dead actor gets its own error kind; the next one runs on a new actor
    assert all(r.ok or r.error == "actor_died" for r in results) and results[-1].ok, [r.text for r in results]
    assert supervisor.actors("nap")[0] != old and int(results[-1].text) != old_pid


@pytest.mark.parametrize(
    "config, kwargs, error, text",
    [
        (
            {"fail": "no weights at /nonexistent/nap.pt"},
            {},
            "tool_failed",
            "error: the nap worker cannot start: RuntimeError: no weights at /nonexistent/nap.pt",
        ),
        ({"start_s": 30}, {"startup_timeout_s": 0.5}, "timeout", "error: the nap worker did not start within 0.5 s"),
    ],
    ids=["constructor_raises", "slow_start"],
)
def test_tool_that_cannot_start_gets_an_error_reply(supervise, config, kwargs, error, text):
    supervisor = supervise(config, **kwargs)
    results = supervisor.run("nap", [({}, VIDEO), ({"seconds": 1}, VIDEO)], timeout_s=60)
    assert [(r.ok, r.error, r.text) for r in results] == [(False, error, text)] * 2


# ----- tools sharing processes (rollout.tool_pool.share_process) -----
TWO_NAPS = {"nap": "tests.envs.test_supervisor:NapTool", "doze": "tests.envs.test_supervisor:DozeTool"}


class DozeTool(NapTool):
    """A second tool, to share a process with `nap`."""

    name = "doze"
    schema = {**NapTool.schema, "function": {**NapTool.schema["function"], "name": "doze"}}


@pytest.fixture
def shared(ray_local):
    made = []

    def shared(configs=None, **kwargs):
        configs = configs or {"nap": {}, "doze": {}}
        made.append(ActorSupervisor(configs, targets=TWO_NAPS, share_process=True, **kwargs))
        return made[-1]

    yield shared
    for supervisor in made:
        supervisor.close()


def test_shared_process_runs_every_tool_in_one_actor_per_slot(shared):
    supervisor = shared(num_actors_per_tool=2)
    assert supervisor.actors("nap") == supervisor.actors("doze") and len(supervisor.actors("nap")) == 2
    assert supervisor.schema("doze")["function"]["name"] == "doze"
    # one round-robin over the slots for all tools: nap takes slot 0, doze slot 1, nap slot 0 again
    nap = _pids(supervisor.run("nap", [({}, VIDEO)], timeout_s=60))
    doze = _pids(supervisor.run("doze", [({}, VIDEO)], timeout_s=60))
    again = _pids(supervisor.run("nap", [({}, VIDEO)], timeout_s=60))
    assert nap == again == {supervisor.pid("doze", 0)} and doze == {supervisor.pid("nap", 1)} and nap != doze
    with pytest.raises(KeyError, match="unknown tool 'nod'"):
        supervisor.actors("nod")


def test_shared_process_tool_that_cannot_start_fails_alone(shared):
    supervisor = shared({"nap": {"fail": "no weights at /nonexistent/nap.pt"}, "doze": {}})
    failed = supervisor.run("nap", [({}, VIDEO), ({}, VIDEO)], timeout_s=60)
    text = "error: the nap worker cannot start: RuntimeError: no weights at /nonexistent/nap.pt"
    assert [(r.ok, r.error, r.text) for r in failed] == [(False, "tool_failed", text)] * 2
    (doze,) = _pids(supervisor.run("doze", [({}, VIDEO)], timeout_s=60))  # same process, its own tool works
    assert doze == supervisor.pid("nap", 0)
    with pytest.raises(RuntimeError, match="no weights"):
        supervisor.schema("nap")


def test_shared_process_timeout_restarts_it_for_every_tool(shared):
    supervisor = shared()
    before = _pids(supervisor.run("doze", [({}, VIDEO)], timeout_s=60))
    (slow,) = supervisor.run("nap", [({"seconds": 60}, VIDEO)], timeout_s=0.5)
    assert (slow.ok, slow.error) == (False, "timeout")
    after = _pids(supervisor.run("doze", [({}, VIDEO)], timeout_s=60))  # the other tool's process was restarted
    assert after != before and after == {supervisor.pid("nap", 0)}
