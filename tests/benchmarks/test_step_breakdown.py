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
