"""Which sequences of a batch each data-parallel rank trains on.

Every rank runs the same number of sequences (FSDP2 and DeepSpeed issue their collectives per forward, so the
ranks' forward counts must match), and a step lasts as long as its slowest rank. `contiguous_shards` gives rank r
the r-th slice of the batch: with G rollouts per sample and G ranks each rank then holds one group, and the rank
with the longest responses (or the most video frames) sets the pace. `balanced_shards` keeps the counts equal and
chooses which sequences go where so that the ranks' summed costs are as equal as it can make them.

The cost the trainer balances is a sequence's length in tokens after its vision placeholders are expanded
(`rl.batch.expanded_length`, the `len(input_ids)` of its forward): the linear layers, which dominate a step, cost
the same per token. Two smaller terms are left out. Causal attention adds, per token, about hidden * L / P_layer of
a decoder layer's linear FLOPs (P_layer: the layer's parameters; for Qwen2.5-VL-7B L / 65,000: 6% at 4k tokens,
12% at 8k), growing with the sequence's length L. Video tokens also cost the vision tower's pass; but a recipe
samples every video at the same frame count and size, so that cost is close to equal per sequence, and every rank
runs the same number of sequences.

Mini-batches: rank r's share is cut into `parts` consecutive chunks, chunk c being its part of mini-batch c. A
sequence's mini-batch is the one `contiguous_shards` puts it in; balancing only moves sequences between ranks
inside each mini-batch, so every optimizer step sees the same sequences whether balancing is on or off.
"""

from __future__ import annotations

import heapq
from collections.abc import Sequence


def _check(n: int, world: int, parts: int) -> int:
    """Sequences per rank per mini-batch, after checking that `n` splits `world` ways and then `parts` ways."""
    if world < 1 or parts < 1:
        raise ValueError(f"world ({world}) and parts ({parts}) must be positive")
    if n == 0 or n % world:
        raise ValueError(f"batch size {n} must be a positive multiple of world_size {world}")
    if (n // world) % parts:
        raise ValueError(f"per-rank batch {n // world} is not divisible by mini_batches {parts}")
    return n // world // parts


def contiguous_shards(n: int, world: int, parts: int = 1) -> list[list[int]]:
    """Rank r's sequences are the r-th contiguous slice of `n`.

    >>> contiguous_shards(6, 2)
    [[0, 1, 2], [3, 4, 5]]
    """
    local = _check(n, world, parts) * parts
    return [list(range(r * local, (r + 1) * local)) for r in range(world)]


def minibatch_members(n: int, world: int, parts: int) -> list[list[int]]:
    """The sequences of each mini-batch: chunk c of every rank's contiguous slice.

    >>> minibatch_members(8, 2, 2)
    [[0, 1, 4, 5], [2, 3, 6, 7]]
    """
    size = _check(n, world, parts)
    shards = contiguous_shards(n, world, parts)
    return [[i for shard in shards for i in shard[c * size : (c + 1) * size]] for c in range(parts)]


def equal_size_partition(costs: Sequence[float], members: Sequence[int], k: int) -> list[list[int]]:
    """Split `members` (indices into `costs`) into `k` groups of equal count with sums as equal as possible:
    Karmarkar-Karp's largest differencing method with a cardinality constraint.

    Sorted by cost, the members are cut into runs of `k`; each run is a partial partition of k one-member groups.
    The two partial partitions whose groups differ most are merged, pairing the heaviest group of one with the
    lightest of the other, until one partition is left; every group gains one member per run, so the counts stay
    equal. Ties break on the index, so the result depends on the costs alone.

    >>> equal_size_partition([10, 1, 9, 2], [0, 1, 2, 3], 2)
    [[0, 1], [2, 3]]
    """
    if len(members) % k:
        raise ValueError(f"{len(members)} sequences do not split into {k} groups of equal count")
    ranked = sorted(members, key=lambda i: (-costs[i], i))
    heap, tie = [], 0
    for start in range(0, len(ranked), k):
        groups = [(float(costs[i]), [i]) for i in ranked[start : start + k]]
        heapq.heappush(heap, (-(groups[0][0] - groups[-1][0]), tie, groups))
        tie += 1
    while len(heap) > 1:
        _, _, a = heapq.heappop(heap)
        _, _, b = heapq.heappop(heap)
        merged = [(sa + sb, ga + gb) for (sa, ga), (sb, gb) in zip(a, reversed(b))]
        merged.sort(key=lambda g: (-g[0], min(g[1])))
        heapq.heappush(heap, (-(merged[0][0] - merged[-1][0]), tie, merged))
        tie += 1
    return [sorted(group) for _, group in heap[0][2]]


def _max_load(costs: Sequence[float], groups: list[list[int]]) -> float:
    return max(sum(costs[i] for i in g) for g in groups)


def balanced_shards(costs: Sequence[float], world: int, parts: int = 1) -> list[list[int]]:
    """Each rank's sequences (indices into `costs`, one cost per sequence), `len(costs) // world` each, cut into
    `parts` mini-batches of the same members as `contiguous_shards`, with the ranks' summed costs balanced inside
    each mini-batch (`equal_size_partition`). A mini-batch whose contiguous split has a lower maximum is left
    contiguous, so no rank ever carries more than it would unbalanced. With several mini-batches the heaviest group
    of each goes to the rank with the least cost so far. A pure function of `costs`: every rank computes the same.

    >>> balanced_shards([10, 1, 9, 2], 2)
    [[0, 1], [2, 3]]
    >>> balanced_shards([10, 9, 2, 1], 2)
    [[0, 3], [1, 2]]
    """
    size = _check(len(costs), world, parts)
    shards: list[list[int]] = [[] for _ in range(world)]
    loads = [0.0] * world
    for members in minibatch_members(len(costs), world, parts):
        groups = equal_size_partition(costs, members, world)
        contiguous = [members[r * size : (r + 1) * size] for r in range(world)]
        if _max_load(costs, contiguous) < _max_load(costs, groups):
            groups = contiguous
        groups.sort(key=lambda g: (-sum(costs[i] for i in g), min(g)))
        free = list(range(world))  # one group per rank in each mini-batch
        for group in groups:
            rank = min(free, key=lambda r: (loads[r], r))
            free.remove(rank)
            shards[rank] += group
            loads[rank] += sum(costs[i] for i in group)
    return shards


def rank_loads(costs: Sequence[float], shards: list[list[int]]) -> list[float]:
    """Each rank's summed cost.

    >>> rank_loads([10, 9, 2, 1], [[0, 3], [1, 2]])
    [11.0, 11.0]
    """
    return [float(sum(costs[i] for i in shard)) for shard in shards]
