"""An eval actor that does not answer (a hung engine) is killed after the timeout and replaced, and a killed one
(SIGKILL) too: their chunks run again and the evaluation comes back whole; without retries the evaluation fails
naming the actor. An evaluation queued behind another one on the same actors is not late while that one's answers
come back. Stand-in actors built by Evaluator's own constructor play the EvalActors (no model)."""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

import eval.actor
from common.recovery import ActorFailedError
from common.waits import ActorTimeoutError
from eval.checkpoints import Checkpoint
from eval.runner import EvalOptions, Evaluator

TIMEOUT_S = 2.0
SLACK_S = 6.0  # Ray's kill and the scheduling on a busy 2-core machine


class StandInEvalActor:
    """Sleeps `sleep` seconds per record (forever on a checkpoint named "hang"), one row per record."""

    def __init__(self, rollout, seed=0, torch_threads=None, **options):
        pass

    def ping(self) -> bool:
        return True

    def pid(self) -> int:
        return os.getpid()

    def evaluate(self, records, task, checkpoint, indices, modules=None):
        time.sleep(600 if "hang" in checkpoint else sum(r.get("sleep", 0.0) for r in records))
        return [{"index": i, "id": r["id"], "failed": False, "metrics": {}} for r, i in zip(records, indices)]


@pytest.fixture
def stand_ins(ray_local, monkeypatch):
    ray_local.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    monkeypatch.setattr(eval.actor, "EvalActor", StandInEvalActor)
    monkeypatch.setattr(Evaluator, "finish", lambda self, pending, rows: rows)  # rows only: no metrics of stand-ins


def _evaluator(ray, n_records: int, actors: int, sleep: float = 0.0, retries: int = 2) -> Evaluator:
    records = [{"id": f"r{i}", "sleep": sleep} for i in range(n_records)]
    bench = SimpleNamespace(records=records, task="ovar", name="bench", spec=SimpleNamespace(uses_tools=False))
    evaluator = Evaluator(bench, EvalOptions(actors=actors, num_cpus=0, timeout_s=TIMEOUT_S, retries=retries))
    ray.get([a.ping.remote() for a in evaluator.actors])  # started: the timeout covers the calls alone
    return evaluator


@pytest.mark.timeout(120)
def test_evaluations_queued_on_busy_actors_are_not_late(ray_local, stand_ins):
    evaluator = _evaluator(ray_local, 6, actors=1, sleep=0.4)  # 3 chunks of 0.8 s per evaluation
    try:
        first = evaluator.submit(Checkpoint(Path("/ckpt/checkpoint-1"), 1))
        second = evaluator.submit(Checkpoint(Path("/ckpt/checkpoint-2"), 2))  # its first answer after ~3 s > 2 s
        assert not second.done()
        assert [r["id"] for r in evaluator.collect(first, progress=False)] == [f"r{i}" for i in range(6)]
        assert [r["index"] for r in evaluator.collect(second, progress=False)] == list(range(6))
    finally:
        evaluator.shutdown()


@pytest.mark.timeout(120)
def test_without_retries_a_hanging_eval_actor_fails_the_evaluation_naming_it(ray_local, stand_ins):
    evaluator = _evaluator(ray_local, 4, actors=2, retries=0)
    try:
        pending = evaluator.submit(Checkpoint(Path("/ckpt/hang-3"), 3))
        t0 = time.monotonic()
        while not pending.done():  # a poller sees it as done once an actor is late, and collects the error
            assert time.monotonic() - t0 < TIMEOUT_S + SLACK_S
            time.sleep(0.1)
        assert time.monotonic() - t0 >= TIMEOUT_S
        with pytest.raises(ActorTimeoutError) as info:
            evaluator.collect(pending, progress=False)
        assert time.monotonic() - t0 < TIMEOUT_S + SLACK_S
        err = info.value
        assert err.phase == "eval of hang-3 on bench" and err.timeout_s == TIMEOUT_S
        ids = [a._actor_id.hex() for a in evaluator.actors]
        assert err.actors == [f"eval actor 1/2 (actor {ids[0]})", f"eval actor 2/2 (actor {ids[1]})"]
        with pytest.raises(ray_local.exceptions.RayActorError):  # killed
            ray_local.get(evaluator.actors[0].ping.remote(), timeout=30)
    finally:
        evaluator.shutdown()


@pytest.mark.timeout(120)
def test_a_killed_eval_actor_is_replaced_and_its_chunks_rerun(ray_local, stand_ins):
    evaluator = _evaluator(ray_local, 6, actors=2, sleep=0.5)  # chunks of 2 records: 1 s each
    try:
        pid = ray_local.get(evaluator.actors[1].pid.remote())
        killed = evaluator.actors[1]
        pending = evaluator.submit(Checkpoint(Path("/ckpt/checkpoint-4"), 4))
        threading.Timer(0.5, os.kill, (pid, signal.SIGKILL)).start()
        rows = evaluator.collect(pending, progress=False)
        assert [r["index"] for r in rows] == list(range(6))  # whole, each record once
        # one restart for the kill; on a loaded machine the new actor's start may outlast the 2 s clock once more
        assert evaluator.restarts >= 1 and evaluator.actors[1] is not killed
    finally:
        evaluator.shutdown()


@pytest.mark.timeout(120)
def test_a_chunk_that_hangs_every_time_fails_after_the_retries(ray_local, stand_ins):
    evaluator = _evaluator(ray_local, 2, actors=1, retries=1)
    try:
        pending = evaluator.submit(Checkpoint(Path("/ckpt/hang-5"), 5))
        with pytest.raises(ActorFailedError) as info:
            evaluator.collect(pending, progress=False)
        err = info.value
        assert (err.phase, err.attempts) == ("eval of hang-5", 2) and "ActorTimeoutError" in err.last
        assert evaluator.restarts == 1
    finally:
        evaluator.shutdown()


@pytest.mark.timeout(120)
def test_training_goes_on_and_logs_an_evaluation_that_timed_out(ray_local, stand_ins, tmp_path):
    from eval.config import EvalConfig
    from eval.during_training import TrainingEval
    from rollout.config import RolloutConfig

    cfg = EvalConfig(every_k=1, benchmark="sample-aqa", limit=2)
    evals = TrainingEval(cfg, tmp_path, RolloutConfig(), TIMEOUT_S, retries=0)
    assert evals.options.timeout_s == TIMEOUT_S
    assert evals.launch(1, tmp_path / "hang-1")
    t0 = time.monotonic()
    logged = []
    while not logged:  # the loop polls once per step
        assert time.monotonic() - t0 < TIMEOUT_S + SLACK_S + 10  # + the actor's start
        logged = evals.poll()
        time.sleep(0.2)
    assert evals.close() == []  # nothing left to wait for
    [line] = [json.loads(x) for x in (tmp_path / "eval_metrics.jsonl").read_text().splitlines()]
    assert line["step"] == 1 and line == logged[0]
    assert line["eval/error"].startswith("ActorTimeoutError: eval of hang-1 on ")
    assert "no answer within 2 s (run.timeout_s) from eval actor 1/1 (actor " in line["eval/error"]
