"""Recipe plumbing that needs no actors: the sampler, batch trimming, the step-time breakdown."""

from recipes.common import Sampler, fit_world_size
from rollout.trajectory import Trajectory


def _traj(sample_id: str) -> Trajectory:
    return Trajectory(sample_id, 0, [1], [2], [1], [0.0])


def test_sampler_covers_each_epoch_once_and_resumes_exactly():
    records = [{"id": str(i)} for i in range(5)]
    a = Sampler(records, batch_size=2, seed=3)
    first = [r["id"] for _ in range(5) for r in a.next_batch()]  # 10 draws = 2 epochs
    assert sorted(first[:5]) == ["0", "1", "2", "3", "4"] and sorted(first[5:]) == ["0", "1", "2", "3", "4"]
    assert first[:5] != first[5:]  # a new shuffle each epoch

    b = Sampler(records, batch_size=2, seed=3)
    b.next_batch(), b.next_batch(), b.next_batch()
    c = Sampler(records, batch_size=2, seed=3)
    c.load_state(b.state())
    assert [r["id"] for r in c.next_batch()] == first[6:8]


def test_fit_world_size_drops_whole_trailing_groups():
    trajs = [_traj("a")] * 3 + [_traj("b")] * 2  # 5 trajectories, groups of 3 and 2
    kept, dropped = fit_world_size(trajs, 2)
    # 5 -> drop group b (2) -> 3 is odd -> drop group a (3) -> 0
    assert (len(kept), dropped) == (0, 2)
    kept, dropped = fit_world_size([_traj("a")] * 4 + [_traj("b")] * 4, 2)
    assert (len(kept), dropped) == (8, 0)
