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


def test_init_from_warns_when_the_sft_run_enabled_other_tools(tmp_path, capsys):
    from recipes.common import resolve_init_from
    from recipes.config import save_config
    from recipes.videostar_grpo import ToolsConfig
    from recipes.videostar_sft import VideoStarSftConfig

    sft = VideoStarSftConfig()
    sft.tools.enabled = {"pose_estimation": {}, "human_detection": None}  # what the SFT run showed: pose only
    save_config(sft, tmp_path / "config.yaml")
    checkpoint = tmp_path / "checkpoint-10"
    checkpoint.mkdir()
    (checkpoint / "config.json").write_text("{}")

    grpo_tools = ToolsConfig()
    grpo_tools.enabled = {"pose_estimation": {}, "action_explanation": {}}
    assert resolve_init_from(str(checkpoint), "unused", grpo_tools) == str(checkpoint.resolve())
    err = capsys.readouterr().err
    assert "trained with tools ['pose_estimation']" in err
    assert "enables ['action_explanation', 'pose_estimation']" in err
    assert "tools.enabled.action_explanation=null" in err

    grpo_tools.enabled = {"pose_estimation": {}, "video_description": None}
    resolve_init_from(str(checkpoint), "unused", grpo_tools)
    assert "WARNING" not in capsys.readouterr().err  # the same enabled set: nothing to say
    (tmp_path / "config.yaml").unlink()
    resolve_init_from(str(checkpoint), "unused", grpo_tools)  # a bare checkpoint: nothing to compare with
    assert "WARNING" not in capsys.readouterr().err
