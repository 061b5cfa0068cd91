"""GRPO maths: group-normalised advantages, best-of-G selection, and the clipped policy loss with a KL penalty to
the reference policy, optionally weighted by truncated importance sampling (TIS) of the engine-trainer mismatch.

All formulas come from `verl.trainer.ppo.core_algos` (advantage estimator, vanilla PPO-clip loss, KL estimators,
loss aggregation) and `verl.trainer.ppo.rollout_corr_helper` (the TIS weights); this module only adapts our plain
inputs (a list of scores, (B, L) tensors) to verl's calling conventions, so the maths is verl's and is not
re-derived here.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any


@dataclass
class PolicyLossConfig:
    """The few fields of verl's `ActorConfig` that `compute_policy_loss_vanilla` reads.

    verl's `ActorConfig` drags in its whole trainer configuration; the loss only needs the clip ratios and
    `global_batch_info` (the keyword arguments it forwards to `agg_loss`), plus a dict-like `get`.
    """

    clip_ratio: float = 0.2
    clip_ratio_low: float | None = None
    clip_ratio_high: float | None = None
    clip_ratio_c: float = 3.0  # dual-clip lower bound for negative advantages; verl's default
    # Forwarded to agg_loss: dp_size, batch_num_tokens, global_batch_size (normalise over the global batch).
    global_batch_info: dict[str, Any] = field(default_factory=dict)

    def get(self, key: str, default: Any = None) -> Any:
        return getattr(self, key, default)


def compute_advantages(scores: list[float], group_ids: list[str], norm_by_std: bool = True) -> list[float]:
    """One advantage per trajectory: its score minus its group's mean, divided by the group's std (unbiased).

    Trajectories with the same `group_ids` entry are the G rollouts of one sample. A group of one gets its raw
    score (verl's convention: mean 0, std 1). Uses verl's `compute_grpo_outcome_advantage` (epsilon 1e-6), in
    float64, so that a group of equal scores gets advantages 0.

    >>> [round(a, 4) for a in compute_advantages([1.0, 0.0, 0.0, 1.0], ["a", "a", "a", "a"])]
    [0.866, -0.866, -0.866, 0.866]
    """
    import numpy as np
    import torch
    from verl.trainer.ppo.core_algos import compute_grpo_outcome_advantage

    if len(scores) != len(group_ids):
        raise ValueError(f"{len(scores)} scores but {len(group_ids)} group ids")
    if not scores:
        return []
    # float64: in float32 the mean of G equal rewards can miss them by an ulp, and that ulp over (std 0 + 1e-6)
    # gave such a group advantages up to ~0.1 of one sign instead of 0
    rewards = torch.tensor([[float(s)] for s in scores], dtype=torch.float64)
    mask = torch.ones_like(rewards)
    index = np.array([str(g) for g in group_ids], dtype=object)
    adv, _ = compute_grpo_outcome_advantage(rewards, mask, index, norm_adv_by_std_in_grpo=norm_by_std)
    return [float(a) for a in adv[:, 0]]


def best_of_group(
    scores: Sequence[float], group_ids: Sequence[str], group_indices: Sequence[int] | None = None
) -> list[int]:
    """Best-of-G selection: the position of the highest-scoring trajectory of each group, in batch order.

    HieroAction samples G responses per input and trains on the one with the highest reward ("For each input, G = 8
    responses are sampled, and the highest-reward response is used for training", Experiment > Implementation
    Details; Supplementary > Implementation Details). Trajectories with the same `group_ids` entry are one sample's
    G rollouts; `group_indices` says which rollout each one is (`Trajectory.group_index`; default: its position).
    A tie goes to the lowest group index, then to the earlier position, so the choice does not depend on how the
    rollout workers ordered the batch. A group of one keeps its trajectory; a NaN score is refused (ValueError).

    >>> best_of_group([0.2, 0.9, 0.9, 0.5, 0.1], ["a", "a", "a", "b", "b"])
    [1, 3]
    >>> best_of_group([1.0, 1.0], ["a", "a"], group_indices=[1, 0])
    [1]
    """
    indices = list(range(len(scores))) if group_indices is None else list(group_indices)
    if not len(scores) == len(group_ids) == len(indices):
        raise ValueError(f"{len(scores)} scores, {len(group_ids)} group ids and {len(indices)} group indices")
    best: dict[str, int] = {}
    for pos, (score, group) in enumerate(zip(scores, group_ids)):
        if math.isnan(score):
            raise ValueError(f"best_of_group: the score at position {pos} (group {group!r}) is NaN")
        held = best.get(group)
        if held is None or (-score, indices[pos]) < (-scores[held], indices[held]):
            best[group] = pos
    return sorted(best.values())


def tis_weights(old_log_prob, rollout_log_prob, response_mask, cap: float):
    """Truncated importance-sampling weights of the engine-trainer mismatch on (B, L) tensors: verl's token-level
    TIS (`compute_rollout_correction_weights`, the former `tis_imp_ratio_cap`), min(exp(old_log_prob -
    rollout_log_prob), cap) on the tokens of `response_mask` and 0 elsewhere, without gradient.

    Returns (weights, metrics) with metrics is_weight_mean (the mean weight over the mask) and is_clipped_share (the
    share of the mask's tokens whose ratio exceeds `cap`); both 0.0 on an empty mask.
    """
    import torch
    from verl.trainer.ppo.rollout_corr_helper import compute_rollout_correction_weights

    if not cap > 0:
        raise ValueError(f"tis_weights: the cap (rollout.is_correction) must be positive, got {cap}")
    mask = response_mask.to(old_log_prob.dtype)
    if not bool(mask.any()):  # verl's metrics refuse an empty mask; no token is weighted anyway
        return torch.zeros_like(old_log_prob), {"is_weight_mean": 0.0, "is_clipped_share": 0.0}
    log_ratio = (old_log_prob - rollout_log_prob).detach()
    weights, metrics = compute_rollout_correction_weights(log_ratio, mask, "token", float(cap))
    return weights, {
        "is_weight_mean": metrics["rollout_is_mean"],
        "is_clipped_share": metrics["rollout_is_ratio_fraction_high"],
    }


def grpo_loss(
    log_prob,
    old_log_prob,
    ref_log_prob,
    advantages,
    response_mask,
    clip_ratio: float = 0.2,
    kl_coef: float = 0.01,
    kl_type: str = "low_var_kl",
    loss_agg_mode: str = "token-mean",
    batch_num_tokens: int | None = None,
    global_batch_size: int | None = None,
    dp_size: int = 1,
    rollout_log_prob=None,
    is_cap: float = 0.0,
):
    """The GRPO objective on (B, L) tensors: PPO-clip policy loss + kl_coef * KL(policy || reference).

    `advantages` is (B,) (one per trajectory, broadcast over its tokens) or (B, L). `ref_log_prob` may be None
    when kl_coef == 0. For data-parallel or micro-batched training pass the *global* `batch_num_tokens` (or
    `global_batch_size` for the seq-mean modes) and `dp_size`, so that summing the gradients of every
    micro-batch and averaging over ranks gives the gradient of the whole-batch loss (verl's `agg_loss`).
    With `is_cap` > 0 each token's policy loss is multiplied by its `tis_weights` (from `old_log_prob` and the
    engine's `rollout_log_prob`); the KL term is not weighted.

    Returns (loss, metrics) with metrics pg_loss, kl, clipfrac, clipfrac_lower, ppo_kl (floats, this call's
    values), and with `is_cap` > 0 also `tis_weights`' is_weight_mean and is_clipped_share.
    """
    from verl.trainer.ppo.core_algos import agg_loss, get_policy_loss_fn, kl_penalty

    if advantages.dim() == 1:
        advantages = advantages.unsqueeze(-1).expand_as(log_prob)
    mask = response_mask.to(log_prob.dtype)
    info = {"dp_size": dp_size, "batch_num_tokens": batch_num_tokens, "global_batch_size": global_batch_size}
    config = PolicyLossConfig(clip_ratio=clip_ratio, global_batch_info=info)
    weights, is_metrics = None, {}
    if is_cap:
        if rollout_log_prob is None:
            raise ValueError("grpo_loss: is_cap > 0 needs rollout_log_prob")
        weights, is_metrics = tis_weights(old_log_prob, rollout_log_prob, mask, is_cap)
    pg_loss, pg_metrics = get_policy_loss_fn("vanilla")(
        old_log_prob=old_log_prob,
        log_prob=log_prob,
        advantages=advantages,
        response_mask=mask,
        loss_agg_mode=loss_agg_mode,
        config=config,
        rollout_is_weights=weights,
    )
    loss = pg_loss
    kl_value = 0.0
    kl_loss = None
    if kl_coef != 0.0:
        if ref_log_prob is None:
            raise ValueError("grpo_loss: kl_coef != 0 needs ref_log_prob")
        kld = kl_penalty(log_prob, ref_log_prob, kl_type)
        kl_loss = agg_loss(loss_mat=kld, loss_mask=mask, loss_agg_mode=loss_agg_mode, **info)
        loss = pg_loss + kl_coef * kl_loss
        kl_value = float(kl_loss.detach())
    metrics = {
        "pg_loss": float(pg_loss.detach()),
        "kl": kl_value,
        "clipfrac": pg_metrics["actor/pg_clipfrac"],
        "clipfrac_lower": pg_metrics["actor/pg_clipfrac_lower"],
        "ppo_kl": pg_metrics["actor/ppo_kl"],
        **is_metrics,
    }
    return loss, metrics
