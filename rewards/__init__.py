"""Reward plugins and how recipes combine them (see docs/rewards.md).

Importing the package registers the built-in rewards; nothing heavy is imported here (models load on first use).
"""

from rewards import entailment, hieroaction, mcq, submotion, videostar  # noqa: F401  (register the built-ins)
from rewards.combine import RewardOutput, RewardSpec, parse_specs, score_batch, summarize
from rewards.helpers import (
    edit_similarity,
    entailment_score,
    parse_mcq_letter,
    score_reward,
    submotion_weights,
    temporal_iou,
)
from rewards.registry import available_rewards, get_reward, register

__all__ = [
    "RewardOutput",
    "RewardSpec",
    "available_rewards",
    "edit_similarity",
    "entailment_score",
    "get_reward",
    "parse_mcq_letter",
    "parse_specs",
    "register",
    "score_batch",
    "score_reward",
    "submotion_weights",
    "summarize",
    "temporal_iou",
]
