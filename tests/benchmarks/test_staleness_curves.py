"""The staleness benchmark's table, on numbers written by hand; its overrides make a valid config."""

import doctest

from benchmarks import staleness_curves
from benchmarks.staleness_curves import REWARD, overrides, table


def test_table_has_one_line_per_step_and_both_runs():
    curves = {
        0: [{"step": 1, REWARD: 0.5, "time/step": 10.0}, {"step": 2, REWARD: 0.75, "time/step": 9.0}],
        1: [{"step": 1, REWARD: 0.5, "time/step": 10.0}, {"step": 2, REWARD: 0.625, "time/step": 6.5}],
    }
    lines = table(curves).splitlines()
    assert len(lines) == 3
    assert lines[2].split() == ["2", "0.7500", "0.6250", "9.00", "6.50"]


def test_overrides_load_as_a_grpo_config(tmp_path):
    from recipes import grpo, videostar_grpo

    cfg = grpo.load(overrides(tmp_path / "run", 3, 1, str(tmp_path)), videostar_grpo.DEFAULT_YAML)
    assert cfg.rollout.staleness == 1 and cfg.cold_start.steps == 0 and cfg.run.steps == 3


def test_doctests():
    assert doctest.testmod(staleness_curves).failed == 0
