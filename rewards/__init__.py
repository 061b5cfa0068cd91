"""Reward plugins and how recipes combine them (see docs/rewards.md).

Importing the package registers the built-in rewards; nothing heavy is imported here.
"""

from rewards import videostar  # noqa: F401  (registers accuracy, format, tool_usage)
from rewards.combine import RewardOutput, RewardSpec, parse_specs, score_batch, summarize
from rewards.registry import available_rewards, get_reward, register

__all__ = [
    "RewardOutput",
    "RewardSpec",
    "available_rewards",
    "get_reward",
    "parse_specs",
    "register",
    "score_batch",
    "summarize",
]
