"""How a batch is cut into chunks for the rollout workers, and each chunk's seed (rollout.group)."""

from __future__ import annotations

import doctest

import pytest

import rollout.group
from rollout.config import RolloutConfig
from rollout.group import chunk_bounds, chunk_seed


@pytest.mark.parametrize(
    ("records", "workers", "per_worker", "expected"),
    [
        (8, 1, 2, [(0, 8)]),  # one worker: the whole batch, one call, as before chunks existed
        (8, 2, 2, [(0, 2), (2, 4), (4, 6), (6, 8)]),
        (7, 2, 2, [(0, 2), (2, 4), (4, 6), (6, 7)]),  # 7 = 2 + 2 + 2 + 1: the larger chunks first
        (10, 3, 1, [(0, 4), (4, 7), (7, 10)]),
        (3, 4, 2, [(0, 1), (1, 2), (2, 3)]),  # fewer records than chunks: one record each
        (0, 2, 2, []),
    ],
)
def test_chunk_bounds(records, workers, per_worker, expected):
    assert chunk_bounds(records, workers, per_worker) == expected


def test_chunk_seeds_are_the_rollout_seed_then_a_stride_apart():
    assert [chunk_seed(100003, c) for c in range(3)] == [100003, 1100006, 2100009]
    assert chunk_seed(None, 3) is None  # no seed: each worker picks its own, as before


def test_chunks_per_worker_must_be_positive():
    assert "rollout.chunks_per_worker: must be >= 1, got 0" in RolloutConfig(chunks_per_worker=0).validate()


def test_doctests():
    assert doctest.testmod(rollout.group).failed == 0
