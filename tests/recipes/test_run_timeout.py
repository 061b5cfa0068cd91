"""run.timeout_s: how long the driver waits for one answer of its actors; documented, overridable, checked before
Ray starts, and handed to the rollout workers, the reward workers and the eval actors."""

from __future__ import annotations

import types

import pytest

from common.waits import DEFAULT_TIMEOUT_S
from recipes import grpo, sft, videostar_grpo, videostar_sft
from recipes.config import ConfigError, RunConfig


def test_the_default_is_half_an_hour_and_documented(capsys):
    assert RunConfig().timeout_s == DEFAULT_TIMEOUT_S == 1800.0
    with pytest.raises(SystemExit):
        videostar_grpo.main(["--help"])
    out = capsys.readouterr().out
    assert "timeout_s" in out and "actor_retries" in out and "replaced" in out


@pytest.mark.parametrize("value", ["0", "-5", ".inf", ".nan"])
@pytest.mark.parametrize("recipe, yaml", [(grpo, videostar_grpo.DEFAULT_YAML), (sft, videostar_sft.DEFAULT_YAML)])
def test_a_timeout_that_is_not_a_positive_number_of_seconds_fails_before_ray(recipe, yaml, value):
    import ray

    was_running = ray.is_initialized()
    with pytest.raises(ConfigError, match=r"run\.timeout_s: must be a number of seconds > 0, got "):
        recipe.load([f"run.timeout_s={value}"], yaml)
    assert ray.is_initialized() == was_running


def test_an_override_sets_it():
    assert grpo.load(["run.timeout_s=60"], videostar_grpo.DEFAULT_YAML).run.timeout_s == 60.0
    assert sft.load(["run.timeout_s=0.5"], videostar_sft.DEFAULT_YAML).run.timeout_s == 0.5


class _Stop(Exception):
    pass


@pytest.fixture
def recorded(monkeypatch):
    """The recipes' actor groups replaced by recorders of their timeout; the reward pool (GRPO's last) stops the
    start, as does the rollout group with `stop_at_rollout`."""
    import eval.during_training
    import rewards.worker
    import rollout.group

    seen: dict[str, float] = {}
    stop_at_rollout = []

    def rollout_group(cfg, model_path, seed=0, timeout_s=None, retries=None):
        seen["rollout"] = timeout_s
        seen["rollout_retries"] = retries
        if stop_at_rollout:
            raise _Stop

        def shutdown():  # the GRPO start shuts started parts down when a later one fails
            seen["rollout_shut_down"] = True

        return types.SimpleNamespace(shutdown=shutdown)

    def reward_pool(specs, timeout_s=None, retries=None, **kwargs):
        seen["rewards"] = timeout_s
        seen["reward_retries"] = retries
        raise _Stop

    class Evals(eval.during_training.TrainingEval):
        def __init__(self, cfg, run_dir, rollout, timeout_s=None, retries=None):
            seen["eval"] = timeout_s
            seen["eval_retries"] = retries

    monkeypatch.setattr(rollout.group, "RolloutGroup", rollout_group)
    monkeypatch.setattr(rewards.worker, "RewardPool", reward_pool)
    monkeypatch.setattr(eval.during_training, "TrainingEval", Evals)
    return seen, stop_at_rollout


def test_the_recipes_hand_it_to_every_actor_group(ray_local, tiny_model_dir, recorded, tmp_path):
    """(The waits themselves are tested with real actors in tests/rollout, tests/rewards and tests/eval.)"""
    seen, stop_at_rollout = recorded
    cfg = grpo.load(
        [f"run.run_dir={tmp_path / 'grpo'}", "run.timeout_s=42", "run.actor_retries=5", "cold_start.steps=0"],
        videostar_grpo.DEFAULT_YAML,
    )
    with pytest.raises(_Stop):
        grpo._start(cfg, "grpo")
    # the reward pool failed to start: the rollout workers started before it were shut down
    assert seen == {
        "eval": 42.0,
        "rollout": 42.0,
        "rewards": 42.0,
        "rollout_shut_down": True,
        "eval_retries": 5,
        "rollout_retries": 5,
        "reward_retries": 5,
    }

    seen.clear()
    stop_at_rollout.append(True)
    cfg = sft.load([f"run.run_dir={tmp_path / 'sft'}", "run.timeout_s=7"], videostar_sft.DEFAULT_YAML)
    with pytest.raises(_Stop):
        sft.run(cfg)
    assert seen == {"eval": 7.0, "rollout": 7.0, "eval_retries": 2, "rollout_retries": 2}
