"""The reward throughput benchmark: its table's arithmetic on hand-worked numbers, and a small real run."""

import pytest

from benchmarks.rewards_throughput import RULE_REWARDS, main, measure, report, synthetic


def test_report_arithmetic():
    text = report({"accuracy": 1e-5, "temporal_iou": 1e-4}, step_seconds=10.0, samples_per_step=50)
    lines = text.splitlines()
    # accuracy: 1e-5 s -> 100,000 samples/s, 10 us; x 50 = 0.0005 s per step = 0.005% of 10 s
    assert lines[1].split() == ["accuracy", "100,000", "10.0", "0.0005", "0.005%"]
    # temporal_iou: 1e-4 s -> 10,000/s, 100 us; x 50 = 0.005 s = 0.050%
    assert lines[2].split() == ["temporal_iou", "10,000", "100.0", "0.0050", "0.050%"]
    # sum: 1.1e-4 s -> 9,091/s, 110 us; x 50 = 0.0055 s = 0.055%
    assert lines[3].split() == ["all", "(sum)", "9,091", "110.0", "0.0055", "0.055%"]
    assert lines[4] == "(step: 10 s, 50 samples per step)"


def test_small_run_covers_every_rule_reward(capsys):
    per_sample = measure(n=50)
    assert set(per_sample) == set(RULE_REWARDS)
    assert all(0 < sec < 0.01 for sec in per_sample.values())
    main(["--n", "20", "--step-seconds", "30"])
    out = capsys.readouterr().out
    assert all(name in out for name in RULE_REWARDS) and "(step: 30 s, 32 samples per step)" in out


@pytest.mark.parametrize("task", ["ovar", "aqa", "mcq"])
def test_synthetic_is_seeded(task):
    a, b = synthetic(task, 5, seed=3), synthetic(task, 5, seed=3)
    assert [t.final_text for t in a] == [t.final_text for t in b]
    assert [t.final_text for t in a] != [t.final_text for t in synthetic(task, 5, seed=4)]
