"""A dead reward component stops the run, with its name, error share and last error; a flaky one does not."""

from __future__ import annotations

import pytest

from rewards.combine import RewardSpec, score_batch
from rewards.health import DeadRewardError, RewardHealth
from rewards.registry import register, unregister
from rollout.trajectory import Trajectory


@pytest.fixture
def flaky():
    """A reward that raises on samples whose id starts with "bad" (a stand-in for a judge that is down)."""

    @register("test_health_judge")
    def judge(traj, record):
        if traj.sample_id.startswith("bad"):
            raise ConnectionError("judge endpoint refused the connection")
        return 1.0

    yield "test_health_judge"
    unregister("test_health_judge")


def _batch(ids):
    return [Trajectory(i, 0, [1], [2], [1], [0.0], final_text="<answer>x</answer>", record={}) for i in ids]


def test_scoring_reports_the_samples_scored_and_the_last_error(flaky):
    out = score_batch(_batch(["bad1", "ok", "bad2"]), [RewardSpec(flaky)])
    assert out.errors[flaky] == 2 and out.scored[flaky] == 3
    assert out.last_error[flaky] == "ConnectionError: judge endpoint refused the connection"


def test_dead_after_three_failing_steps_in_a_row(flaky):
    health = RewardHealth(max_error_share=0.5, patience=3)
    specs = [RewardSpec(flaky)]
    dead, alive = _batch(["bad1", "bad2", "ok"]), _batch(["bad1", "ok", "ok"])  # 2/3 and 1/3 fail
    health.check(score_batch(dead, specs))
    health.check(score_batch(dead, specs))
    health.check(score_batch(alive, specs))  # 1/3 <= 0.5: the streak starts over
    health.check(score_batch(dead, specs))
    health.check(score_batch(dead, specs))
    with pytest.raises(DeadRewardError, match=r"'test_health_judge' failed on 67% of its samples \(2/3\) for 3 "):
        health.check(score_batch(dead, specs))


def test_off_and_gated_samples():
    RewardHealth(patience=0).check(score_batch(_batch(["x"]), [RewardSpec("format")]))  # off: never raises
    # a gated reward is judged on the samples it was computed on, not the whole batch
    out = score_batch(_batch(["a", "b"]), [RewardSpec("accuracy"), RewardSpec("tool_usage", when="accuracy")])
    assert out.scored == {"accuracy": 2, "tool_usage": 0}
