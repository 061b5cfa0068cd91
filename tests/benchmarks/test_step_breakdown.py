"""The benchmark's arithmetic, on numbers worked out by hand."""

import pytest

from benchmarks.step_breakdown import breakdown, report


def test_breakdown_means_and_other():
    rows = [
        {
            "time/rollout": 2.0,
            "time/tools": 1.0,
            "time/rewards": 0.0,
            "time/train": 3.0,
            "time/sync": 0.5,
            "time/step": 7.0,
        },
        {
            "time/rollout": 4.0,
            "time/tools": 1.0,
            "time/rewards": 0.2,
            "time/train": 3.0,
            "time/sync": 0.5,
            "time/step": 9.0,
        },
    ]
    mean = breakdown(rows)
    assert mean["rollout"] == pytest.approx(3.0) and mean["step"] == pytest.approx(8.0)
    # 8.0 - (3 + 1 + 0.1 + 3 + 0.5) = 0.4
    assert mean["other"] == pytest.approx(0.4)
    text = report(mean)
    # outside model compute = (8 - 3 - 3) / 8 = 25%
    assert "outside model compute (tools + rewards + sync + other): 25.0%" in text


def test_breakdown_refuses_no_rows():
    with pytest.raises(ValueError):
        breakdown([])


def test_an_overlapped_rollout_counts_as_far_as_the_step_waited():
    # staleness 1: a rollout of 6 s (4 generating, 2 in tools) of which the step waited 1.5 s
    row = {
        "time/rollout": 4.0,
        "time/tools": 2.0,
        "time/rollout_wait": 1.5,
        "time/rewards": 0.1,
        "time/train": 5.0,
        "time/sync": 0.4,
        "time/step": 7.2,
    }
    mean = breakdown([row])
    # the 1.5 s waited are shared 4:2 -> 1.0 s generating, 0.5 s tools; 4.5 s ran under training
    assert mean["rollout"] == pytest.approx(1.0) and mean["tools"] == pytest.approx(0.5)
    assert mean["hidden"] == pytest.approx(4.5)
    assert mean["other"] == pytest.approx(7.2 - (1.0 + 0.5 + 0.1 + 5.0 + 0.4))
    assert "hidden under training (rollout.staleness=1): 4.500" in report(mean)
    # synchronous: the step waited for all of it, nothing hidden
    sync = breakdown([{**row, "time/rollout_wait": 6.0, "time/step": 11.7}])
    assert sync["rollout"] == pytest.approx(4.0) and sync["hidden"] == 0.0
