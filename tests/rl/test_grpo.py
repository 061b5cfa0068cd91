"""GRPO advantages and loss against values worked out by hand (plain `math`, not verl)."""

from __future__ import annotations

import math

import pytest


def test_advantages_single_group_by_hand():
    from rl.grpo import compute_advantages

    # mean 0.5; unbiased std = sqrt(4 * 0.25 / 3) = sqrt(1/3)
    std = math.sqrt(1 / 3)
    adv = compute_advantages([1.0, 0.0, 0.0, 1.0], ["s", "s", "s", "s"])
    expected = [0.5 / (std + 1e-6), -0.5 / (std + 1e-6), -0.5 / (std + 1e-6), 0.5 / (std + 1e-6)]
    assert adv == pytest.approx(expected, abs=1e-6)


def test_advantages_two_groups_interleaved_and_no_std():
    from rl.grpo import compute_advantages

    # group a: [2, 4] -> mean 3, std sqrt(2); group b: [1, 1, 4] -> mean 2, std sqrt((1+1+4)/2) = sqrt(3)
    scores = [2.0, 1.0, 4.0, 1.0, 4.0]
    groups = ["a", "b", "a", "b", "b"]
    adv = compute_advantages(scores, groups)
    s2, s3 = math.sqrt(2) + 1e-6, math.sqrt(3) + 1e-6
    assert adv == pytest.approx([-1 / s2, -1 / s3, 1 / s2, -1 / s3, 2 / s3], abs=1e-6)
    assert compute_advantages(scores, groups, norm_by_std=False) == pytest.approx([-1, -1, 1, -1, 2])


def test_advantages_equal_scores_and_singletons():
    from rl.grpo import compute_advantages

    assert compute_advantages([1.0, 1.0], ["x", "x"]) == pytest.approx([0.0, 0.0])
    # equal scores that float32 does not average back exactly (its mean is off by an ulp, divided by std 0 + 1e-6
    # that gave +-0.06 here): every advantage of an equal group is 0
    for score, g in ((0.714406368727256, 3), (0.19804028235278703, 3), (0.1, 8), (0.3, 7)):
        assert max(abs(a) for a in compute_advantages([score] * g, ["x"] * g)) < 1e-9
    assert compute_advantages([0.7], ["only"]) == pytest.approx([0.7])  # verl: a group of one keeps its score
    with pytest.raises(ValueError, match="2 scores but 1 group"):
        compute_advantages([1.0, 2.0], ["a"])


def _hand_loss(lp, old, ref, adv, mask, eps=0.2, c=3.0, kl_coef=0.1, weights=None):
    """verl's vanilla PPO-clip loss (dual clip c) + low_var_kl, token-mean; `weights` multiply each token's policy
    loss (the KL term is not weighted)."""
    pg_sum, kl_sum, clipped, n = 0.0, 0.0, 0, 0
    for i in range(len(lp)):
        a = adv[i]
        for j in range(len(lp[i])):
            if not mask[i][j]:
                continue
            r = math.exp(lp[i][j] - old[i][j])
            unclipped, clip = -a * r, -a * min(max(r, 1 - eps), 1 + eps)
            loss = max(unclipped, clip)
            clipped += clip > unclipped
            if a < 0:
                loss = min(loss, -a * c)
            k = ref[i][j] - lp[i][j]
            pg_sum += loss * (1.0 if weights is None else weights[i][j])
            kl_sum += math.exp(k) - k - 1
            n += 1
    return pg_sum / n + kl_coef * kl_sum / n, pg_sum / n, kl_sum / n, clipped / n


def test_grpo_loss_matches_hand_computation():
    import torch

    from rl.grpo import grpo_loss

    lp = [[-1.0, -0.5, -2.0], [-0.3, -1.2, -0.1]]
    old = [[-1.1, -0.9, -0.4], [-0.3, -0.7, -2.0]]  # ratios exp(.1), exp(.4) (clipped at A>0), ...
    ref = [[-1.0, -0.4, -0.2], [-0.5, -1.0, -0.1]]
    mask = [[1, 1, 0], [1, 1, 1]]
    adv = [1.0, -0.5]
    t = lambda x: torch.tensor(x, dtype=torch.float64)  # noqa: E731
    loss, metrics = grpo_loss(t(lp), t(old), t(ref), t(adv), t(mask), clip_ratio=0.2, kl_coef=0.1)
    want, pg, kl, clipfrac = _hand_loss(lp, old, ref, adv, mask)
    assert float(loss) == pytest.approx(want, abs=1e-9)
    assert metrics["pg_loss"] == pytest.approx(pg, abs=1e-9)
    assert metrics["kl"] == pytest.approx(kl, abs=1e-9)
    assert metrics["clipfrac"] == pytest.approx(clipfrac, abs=1e-9)
    assert 0 < clipfrac < 1  # the example exercises both branches


def test_grpo_loss_with_truncated_importance_sampling_matches_hand_computation():
    import torch

    from rl.grpo import grpo_loss

    lp = [[-1.0, -0.5, -2.0], [-0.3, -1.2, -0.1]]
    old = [[-1.1, -0.9, -0.4], [-0.3, -0.7, -2.0]]  # the trainer's old log-probs
    rollout = [[-0.4, -1.9, -9.0], [-0.3, -0.2, -3.5]]  # the engine's: old - rollout = -0.7, 1.0, (8.6), 0, -0.5, 1.5
    ref = [[-1.0, -0.4, -0.2], [-0.5, -1.0, -0.1]]
    mask = [[1, 1, 0], [1, 1, 1]]
    adv = [1.0, -0.5]
    # w = min(exp(old - rollout), 2) on the 5 model tokens; 1.0 and 1.5 exceed log 2 (the masked 8.6 does not count)
    w = [[math.exp(-0.7), 2.0, 0.0], [1.0, math.exp(-0.5), 2.0]]
    t = lambda x: torch.tensor(x, dtype=torch.float64)  # noqa: E731
    engine = t(rollout).requires_grad_()
    loss, metrics = grpo_loss(t(lp), t(old), t(ref), t(adv), t(mask), kl_coef=0.1, rollout_log_prob=engine, is_cap=2.0)
    want, pg, kl, clipfrac = _hand_loss(lp, old, ref, adv, mask, weights=w)
    assert float(loss) == pytest.approx(want, abs=1e-9)
    assert metrics["pg_loss"] == pytest.approx(pg, abs=1e-9)
    assert metrics["kl"] == pytest.approx(kl, abs=1e-9)  # not weighted
    assert metrics["clipfrac"] == pytest.approx(clipfrac, abs=1e-9)
    assert metrics["is_weight_mean"] == pytest.approx((math.exp(-0.7) + 2 + 1 + math.exp(-0.5) + 2) / 5, abs=1e-7)
    assert metrics["is_clipped_share"] == pytest.approx(2 / 5, abs=1e-7)
    unweighted, plain = grpo_loss(t(lp), t(old), t(ref), t(adv), t(mask), kl_coef=0.1, rollout_log_prob=engine)
    assert float(unweighted) == pytest.approx(_hand_loss(lp, old, ref, adv, mask)[0], abs=1e-9)  # is_cap 0: off
    assert "is_weight_mean" not in plain and float(unweighted) != pytest.approx(float(loss), abs=1e-3)

    # the weight is a constant: no gradient reaches the engine's log-probs, and on-policy (ratio 1) each token's
    # gradient is -A * w / (number of tokens)
    policy = t([[-1.0, -0.5, -2.0]]).requires_grad_()
    rollout_lp = t([[-1.0 - math.log(0.5), -0.5 - math.log(3.0), -2.0]]).requires_grad_()  # ratios 0.5, 3, 1
    loss, _ = grpo_loss(
        policy, policy.detach(), None, t([2.0]), t([[1, 1, 1]]), kl_coef=0.0, rollout_log_prob=rollout_lp, is_cap=2.0
    )
    loss.backward()
    assert policy.grad[0].tolist() == pytest.approx([-2.0 * 0.5 / 3, -2.0 * 2.0 / 3, -2.0 * 1.0 / 3], abs=1e-9)
    assert rollout_lp.grad is None


def test_tis_weights_refuse_a_bad_cap_and_handle_an_empty_mask():
    import torch

    from rl.grpo import grpo_loss, tis_weights

    x = torch.zeros(1, 2)
    with pytest.raises(ValueError, match="rollout.is_correction"):
        tis_weights(x, x, torch.ones(1, 2), 0.0)
    with pytest.raises(ValueError, match="needs rollout_log_prob"):
        grpo_loss(x, x, None, torch.tensor([1.0]), torch.ones(1, 2), kl_coef=0.0, is_cap=2.0)
    weights, metrics = tis_weights(x, x - 5.0, torch.zeros(1, 2), 2.0)  # a micro-batch with no model token
    assert weights.tolist() == [[0.0, 0.0]] and metrics == {"is_weight_mean": 0.0, "is_clipped_share": 0.0}


def test_grpo_loss_global_token_normalisation_sums_over_micro_batches():
    import torch

    from rl.grpo import grpo_loss

    torch.manual_seed(0)
    lp, old, ref = (torch.randn(4, 5, dtype=torch.float64) for _ in range(3))
    mask = (torch.rand(4, 5) > 0.3).double()
    adv = torch.randn(4, dtype=torch.float64)
    whole, _ = grpo_loss(lp, old, ref, adv, mask)
    n = int(mask.sum())
    part = lambda s, **kw: grpo_loss(lp[s], old[s], ref[s], adv[s], mask[s], batch_num_tokens=n, **kw)[0]  # noqa: E731
    parts = [part(slice(0, 1)), part(slice(1, 4))]
    assert float(sum(parts)) == pytest.approx(float(whole), abs=1e-12)
    # dp_size=2: each rank's loss is scaled by 2 because data-parallel gradients are averaged over ranks
    halves = [part(slice(0, 2), dp_size=2), part(slice(2, 4), dp_size=2)]
    assert float(sum(halves)) / 2 == pytest.approx(float(whole), abs=1e-12)


def test_grpo_loss_without_kl_ignores_reference():
    import torch

    from rl.grpo import grpo_loss

    lp = torch.zeros(1, 2)
    loss, metrics = grpo_loss(lp, lp, None, torch.tensor([2.0]), torch.ones(1, 2), kl_coef=0.0)
    assert float(loss) == pytest.approx(-2.0)  # ratio 1: loss = -A
    assert metrics["kl"] == 0.0


@pytest.mark.parametrize(
    "scores, groups, indices, want",
    [
        # one group of four: 0.9 is the highest
        ([0.1, 0.9, 0.4, 0.3], ["a"] * 4, None, [1]),
        # a tie at the top: the lowest group index wins, wherever it sits in the batch
        ([0.2, 0.8, 0.8], ["a"] * 3, [0, 2, 1], [2]),
        ([0.8, 0.8, 0.2], ["a"] * 3, [0, 1, 2], [0]),
        # all rewards equal: group index 0, even when it arrives last
        ([0.5, 0.5, 0.5], ["a"] * 3, [2, 1, 0], [2]),
        # a group of one keeps its trajectory
        ([0.3], ["only"], None, [0]),
        # interleaved groups and negative scores: a's best is -0.1 (position 2), b's 3.0 (position 1)
        ([-2.0, 3.0, -0.1, 1.0, -0.5], ["a", "b", "a", "b", "a"], [0, 0, 1, 1, 2], [1, 2]),
        # three groups, one each of: a clear best, a tie, a single trajectory; returned in batch order
        ([0.0, 1.0, 0.6, 0.6, 0.2, 0.7], ["x", "x", "y", "y", "y", "z"], [0, 1, 0, 1, 2, 0], [1, 2, 5]),
        ([], [], None, []),
    ],
)
def test_best_of_group_by_hand(scores, groups, indices, want):
    from rl.grpo import best_of_group

    assert best_of_group(scores, groups, indices) == want


def test_best_of_group_refuses_mismatched_lengths_and_nan():
    from rl.grpo import best_of_group

    with pytest.raises(ValueError, match="2 scores, 1 group ids and 2 group indices"):
        best_of_group([1.0, 2.0], ["a"])
    with pytest.raises(ValueError, match="2 scores, 2 group ids and 3 group indices"):
        best_of_group([1.0, 2.0], ["a", "a"], [0, 1, 2])
    with pytest.raises(ValueError, match=r"position 1 \(group 'a'\) is NaN"):
        best_of_group([1.0, float("nan")], ["a", "a"])


def test_best_of_g_advantages_and_loss_inputs_by_hand():
    """Best-of-G keeps each group's best trajectory with the advantage it has in its whole group. Worked by hand:
    group a [0.2, 0.8, 0.5]: mean 0.5, unbiased std sqrt((0.09 + 0.09 + 0) / 2) = 0.3, the best (0.8) gets
    0.3 / 0.3 = 1; group b [0.25, 0.25]: a tie, group index 0 kept, advantage 0; group c [0.7], a group of one:
    verl's convention keeps the raw score, 0.7. On policy (ratio 1) and without KL, seq-mean-token-mean gives
    -(1 + 0 + 0.7) / 3 and token-mean, with 2, 3 and 1 response tokens, -(1 * 2 + 0 * 3 + 0.7 * 1) / 6 = -0.45."""
    import torch

    from rl.grpo import best_of_group, compute_advantages, grpo_loss

    scores = [0.2, 0.8, 0.5, 0.25, 0.25, 0.7]
    groups = ["a", "a", "a", "b", "b", "c"]
    keep = best_of_group(scores, groups, [0, 1, 2, 0, 1, 0])
    assert keep == [1, 3, 5]
    advantages = compute_advantages(scores, groups)
    kept = [advantages[i] for i in keep]
    assert kept == pytest.approx([0.3 / (0.3 + 1e-6), 0.0, 0.7], abs=1e-6)

    lp = torch.tensor([[-1.0, -0.5, 0.0], [-0.2, -0.3, -0.4], [-2.0, 0.0, 0.0]], dtype=torch.float64)
    mask = torch.tensor([[1, 1, 0], [1, 1, 1], [1, 0, 0]], dtype=torch.float64)
    adv = torch.tensor(kept, dtype=torch.float64)
    seq, _ = grpo_loss(lp, lp.detach(), None, adv, mask, kl_coef=0.0, loss_agg_mode="seq-mean-token-mean")
    tok, _ = grpo_loss(lp, lp.detach(), None, adv, mask, kl_coef=0.0, loss_agg_mode="token-mean")
    assert float(seq) == pytest.approx(-(1 + 0 + 0.7) / 3, abs=1e-5)
    assert float(tok) == pytest.approx(-0.45, abs=1e-5)
