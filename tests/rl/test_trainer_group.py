"""A trainer group the cluster cannot place fails within its timeout, naming what it asked for and what is free."""

from __future__ import annotations

import pytest


def test_unplaceable_group_fails_within_its_timeout(ray_local, tiny_model_dir):
    import ray

    from rl.config import TrainerConfig
    from rl.trainer import TrainerGroup

    with pytest.raises(RuntimeError, match=r"2 bundles of \{'CPU': 100.0\} could not be placed within 2 s"):
        TrainerGroup(TrainerConfig(world_size=2, num_cpus=100.0), tiny_model_dir, ready_timeout_s=2)
    assert not [pg for pg in ray.util.placement_group_table().values() if pg["state"] == "PENDING"]  # removed
