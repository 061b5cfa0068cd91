"""RewardsConfig.validate: unknown rewards, gates and plugin arguments fail before anything starts."""

from __future__ import annotations

from rewards.combine import RewardSpec
from rewards.config import RewardsConfig


def test_a_valid_mix_has_no_problems():
    cfg = RewardsConfig(components=[RewardSpec("accuracy"), RewardSpec("tool_usage", when="accuracy")])
    assert cfg.validate() == []


def test_each_problem_is_named():
    assert RewardsConfig().validate() == ["rewards.components: at least one reward is needed"]
    assert RewardsConfig().validate(required=False) == []
    (unknown,) = RewardsConfig(components=[RewardSpec("acuracy")]).validate()
    assert unknown.startswith("rewards.components: ") and "acuracy" in unknown
    (gate,) = RewardsConfig(components=[RewardSpec("format", when="accuracy")]).validate()
    assert "gated on 'accuracy'" in gate and "not in the rewards list" in gate
    (args,) = RewardsConfig(components=[RewardSpec("aqa_score", args={"lam_qq": 1.0})]).validate()
    assert "unexpected keyword argument 'lam_qq'; did you mean 'lam_q'?" in args
    assert RewardsConfig(components=[RewardSpec("format")], num_workers=0).validate() == [
        "rewards.num_workers: must be >= 1, got 0"
    ]
