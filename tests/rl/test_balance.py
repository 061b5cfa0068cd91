"""Length-balanced assignment of a batch's sequences to data-parallel ranks: the assignment function on hand-worked
examples and a property test, the cheap length count against the built batch, and two gloo ranks through the real
TrainerGroup whose update does not depend on which rank holds which trajectory."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rl.balance import balanced_shards, contiguous_shards, equal_size_partition, minibatch_members, rank_loads
from tests.rl.rl_test_data import make_trajectories


def test_two_ranks_by_hand():
    # [10, 1, 9, 2]: the contiguous split is 11 / 11 already, and so is the balanced one
    assert rank_loads([10, 1, 9, 2], balanced_shards([10, 1, 9, 2], 2)) == [11.0, 11.0]
    # [10, 9, 2, 1]: contiguous 19 / 3; pairing the longest with the shortest gives 11 / 11
    assert rank_loads([10, 9, 2, 1], contiguous_shards(4, 2)) == [19.0, 3.0]
    assert balanced_shards([10, 9, 2, 1], 2) == [[0, 3], [1, 2]]


def test_three_ranks_by_hand():
    # 8 + 3 = 7 + 4 = 6 + 5 = 11: the only split into pairs with equal sums
    shards = balanced_shards([8, 7, 6, 5, 4, 3], 3)
    assert sorted(sorted(s) for s in shards) == [[0, 5], [1, 4], [2, 3]]
    assert rank_loads([8, 7, 6, 5, 4, 3], shards) == [11.0, 11.0, 11.0]


def test_one_long_group_per_rank_is_spread_over_all_ranks():
    """G = 8 rollouts on 8 ranks, group g's responses all 100 * (g + 1) tokens long: contiguous, rank r holds group
    r and the last rank carries 8 * 800 = 6400 tokens; balanced, each rank gets one of each group,
    100 * (1 + ... + 8) = 3600 tokens, the mean."""
    costs = [100 * (g + 1) for g in range(8) for _ in range(8)]
    assert max(rank_loads(costs, contiguous_shards(64, 8))) == 6400
    shards = balanced_shards(costs, 8)
    assert rank_loads(costs, shards) == [3600.0] * 8
    assert all(sorted(costs[i] for i in s) == [100 * (g + 1) for g in range(8)] for s in shards)


def test_a_contiguous_split_that_is_better_is_kept():
    """[11, 4, 4, 8, 5, 5] on 2 ranks. Largest differencing: runs (11, 8), (5, 5), (4, 4); merging the widest first
    gives 11+5 / 8+5, then 16+4 / 13+4 = 20 / 17. The contiguous split is 19 / 18 (optimal: the sum is 37), so it
    stays."""
    costs = [11, 4, 4, 8, 5, 5]
    assert rank_loads(costs, equal_size_partition(costs, range(6), 2)) == [20.0, 17.0]
    assert balanced_shards(costs, 2) == contiguous_shards(6, 2)


def test_mini_batches_keep_their_members():
    """8 sequences, 2 ranks, 2 mini-batches: mini-batch 0 is [0, 1, 4, 5] (costs 1, 9, 10, 2), 1 is [2, 3, 6, 7]
    (2, 8, 3, 3). Contiguous: 10 / 12 then 10 / 6. Balanced: {1, 10} / {9, 2} = 11 / 11, then {2, 8} / {3, 3} =
    10 / 6 (the best there is); the heavier group of mini-batch 1 goes to rank 0 (loads tied, lower rank)."""
    costs = [1, 9, 2, 8, 10, 2, 3, 3]
    assert minibatch_members(8, 2, 2) == [[0, 1, 4, 5], [2, 3, 6, 7]]
    assert balanced_shards(costs, 2, 2) == [[0, 4, 2, 3], [1, 5, 6, 7]]


def test_bad_sizes_are_named():
    with pytest.raises(ValueError, match="batch size 3 must be a positive multiple of world_size 2"):
        balanced_shards([1, 2, 3], 2)
    with pytest.raises(ValueError, match="per-rank batch 3 is not divisible by mini_batches 2"):
        balanced_shards([1] * 6, 2, 2)


@st.composite
def batches(draw):
    world, parts, per = draw(st.integers(1, 8)), draw(st.integers(1, 3)), draw(st.integers(1, 4))
    costs = draw(st.lists(st.integers(1, 5000), min_size=world * parts * per, max_size=world * parts * per))
    return costs, world, parts


@settings(max_examples=300, deadline=None)
@given(batches())
def test_equal_counts_and_never_worse_than_contiguous(case):
    costs, world, parts = case
    n, size = len(costs), len(costs) // world // parts
    shards = balanced_shards(costs, world, parts)
    assert sorted(i for s in shards for i in s) == list(range(n))  # every sequence once
    assert all(len(s) == n // world for s in shards)  # equal forward counts
    for c, members in enumerate(minibatch_members(n, world, parts)):
        chunks = [s[c * size : (c + 1) * size] for s in shards]
        assert sorted(i for ch in chunks for i in ch) == sorted(members)  # the same mini-batch as unbalanced
        contiguous = [members[r * size : (r + 1) * size] for r in range(world)]
        assert max(rank_loads(costs, chunks)) <= max(rank_loads(costs, contiguous))
    if parts == 1:
        assert max(rank_loads(costs, shards)) <= max(rank_loads(costs, contiguous_shards(n, world)))
    assert balanced_shards(list(costs), world, parts) == shards  # a pure function of the costs


def test_expanded_length_is_the_built_sequence_length(tiny_model_dir):
    from rl.batch import build_batch, expanded_length

    trajs = make_trajectories(tiny_model_dir, seed=0)
    built = build_batch(trajs, merge_size=2)
    assert [expanded_length(t, 2) for t in trajs] == [len(s.input_ids) for s in built.samples]
    # 8 frames of 112 px: a (4, 8, 8) grid, 4 * 8 * 8 / 2**2 = 64 tokens for the one video placeholder
    assert expanded_length(trajs[1], 2) == len(trajs[1].prompt_ids) + len(trajs[1].response_ids) + 63


@pytest.fixture(scope="module")
def batch8(tiny_model_dir):
    from rl.grpo import compute_advantages

    a, b = make_trajectories(tiny_model_dir, seed=0), make_trajectories(tiny_model_dir, seed=1)
    # the four with vision inputs first: the contiguous split gives rank 0 every video
    trajs = [a[1], a[2], b[1], b[2], a[0], a[3], b[0], b[3]]
    scores = [1.0, 0.0, 0.0, 1.0, 0.0, 1.0, 0.5, 0.0]
    return trajs, compute_advantages(scores, ["g0", "g0", "g1", "g1", "g2", "g2", "g3", "g3"])


@pytest.mark.parametrize(
    "plan",
    [
        {"mini_batches": 2, "micro_batch_size": 1},
        {"mini_batches": 1, "pack_max_tokens": 160},  # packs within each rank; the ranks agree on their count
    ],
    ids=["two-mini-batches", "packed"],
)
def test_update_does_not_depend_on_which_rank_holds_which_trajectory(ray_local, tiny_model_dir, batch8, plan):
    """One fp32 GRPO step (lr 1e-3, KL to the reference) on two gloo ranks, balanced and contiguous: the ranks
    hold different trajectories, and the loss, metrics and updated weights are the same. Inside each rank the
    micro-batches or packs follow `rl.batch.plan_step` either way."""
    from rl.batch import expanded_length
    from rl.config import TrainerConfig
    from rl.trainer import TrainerGroup

    trajs, adv = batch8
    costs = [expanded_length(t, 2) for t in trajs]
    mini_batches = plan["mini_batches"]
    assert balanced_shards(costs, 2, mini_batches) != contiguous_shards(8, 2, mini_batches)  # a real reassignment
    assert max(rank_loads(costs, balanced_shards(costs, 2))) < max(rank_loads(costs, contiguous_shards(8, 2)))
    results = {}
    for balance in (True, False):
        cfg = TrainerConfig(world_size=2, lr=1e-3, kl_coef=0.01, balance_lengths=balance, **plan)
        group = TrainerGroup(cfg, tiny_model_dir)
        try:
            before = group.export_weights()
            metrics = group.train_step(trajs, adv)
            results[balance] = (metrics, before, group.export_weights())
        finally:
            group.shutdown()
    (on, before, w_on), (off, _, w_off) = results[True], results[False]
    assert max(float((w_on[k] - before[k]).abs().max()) for k in before) > 1e-4  # the step moved the weights
    assert on["train/num_tokens"] == off["train/num_tokens"] == sum(t.num_model_tokens for t in trajs)
    for key in ("train/loss", "train/pg_loss", "train/kl", "train/grad_norm", "train/entropy", "train/clipfrac"):
        assert on[key] == pytest.approx(off[key], rel=1e-5, abs=1e-6), key
    assert max(float((w_on[k] - w_off[k]).abs().max()) for k in w_off) < 1e-5
