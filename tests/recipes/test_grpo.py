"""The GRPO loop's config and the pieces of its step that need no actors."""

from __future__ import annotations

import pytest

from recipes import grpo, hieroaction_grpo, videostar_grpo
from recipes.config import ConfigError
from rollout.trajectory import Trajectory


def _traj(sample_id: str) -> Trajectory:
    return Trajectory(sample_id, 0, [1], [2], [1], [0.0])


def test_fit_world_size_drops_whole_trailing_groups():
    trajs = [_traj("a")] * 3 + [_traj("b")] * 2  # 5 trajectories, groups of 3 and 2
    kept, dropped = grpo.fit_world_size(trajs, 2)
    # 5 -> drop group b (2) -> 3 is odd -> drop group a (3) -> 0
    assert (len(kept), dropped) == (0, 2)
    kept, dropped = grpo.fit_world_size([_traj("a")] * 4 + [_traj("b")] * 4, 2)
    assert (len(kept), dropped) == (8, 0)


@pytest.mark.parametrize(
    "argv, needle",
    [
        # a typo anywhere, nested too, names the key and the closest valid one
        (["rollout.tols={}"], "rollout.tols: unknown key; did you mean 'tools'?"),
        (["trainer.kl_cof=0.1"], "trainer.kl_cof: unknown key; did you mean 'kl_coef'?"),
        (["rollout.tool_pool.timout_s=3"], "rollout.tool_pool.timout_s: unknown key; did you mean 'timeout_s'?"),
        (
            ["rewards.components=[{name: format, wen: accuracy}]"],
            "rewards.components[].wen: unknown key; did you mean 'when'?",
        ),
        (["rewards.components=[{name: aqa_score, args: {lam_qq: 1}}]"], "did you mean 'lam_q'?"),
        (["rollout.tools.pose_estimation.devise=cuda"], "rollout.tools.pose_estimation.devise"),
        (["rollout.tools.video_description.describer.max_new_token=4"], "did you mean 'max_new_tokens'?"),
        (["run.trackers=[tensorbord]"], "did you mean 'tensorboard'?"),
        # values: the field, the value and what is allowed
        (["trainer.loss_agg_mode=mean"], "trainer.loss_agg_mode: 'mean' is not one of 'token-mean'"),
        (["rollout.engine=sglang"], "rollout.engine: 'sglang' is not one of 'hf', 'vllm'"),
        (["rollout.system_prompt=nope.txt"], "rollout.system_prompt: prompt file 'nope.txt' not found"),
        (["data.train=embedded:nope"], "data.train: 'embedded:nope': the sample data's splits are train, eval"),
        (["run.save_every=0"], "run.save_every: must be >= 1, got 0"),
        (["model.path=/no/model"], "cold_start.steps: the cold start trains on template chains"),
    ],
)
def test_every_mistake_fails_before_ray_with_the_key(argv, needle):
    import ray

    was_running = ray.is_initialized()
    with pytest.raises(ConfigError) as err:
        grpo.load(argv, videostar_grpo.DEFAULT_YAML)
    assert needle in str(err.value), str(err.value)
    assert ray.is_initialized() == was_running


def test_the_recipes_yaml_is_what_the_run_saves(tmp_path):
    """The system prompt file is read into the config (so config.yaml records the text the policy saw)."""
    from recipes.config import load_config, save_config

    cfg = grpo.load([f"run.run_dir={tmp_path}"], hieroaction_grpo.DEFAULT_YAML)
    text = (hieroaction_grpo.DEFAULT_YAML.parent.parent / "prompts" / "hieroaction_system.txt").read_text().strip()
    assert cfg.rollout.system_prompt == text
    save_config(cfg, tmp_path / "config.yaml")
    assert load_config(grpo.GrpoConfig, [], tmp_path / "config.yaml") == cfg


def test_help_prints_every_key_with_its_default_and_doc(capsys):
    with pytest.raises(SystemExit) as done:
        videostar_grpo.main(["--help"])
    assert done.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("Video-STAR GRPO")  # the recipe's docstring heads it
    assert "  rollout.num_frames = 8\n      Frames sampled uniformly from each clip" in out
    assert "  trainer.kl_coef = 0.01\n      Weight of the KL to the reference policy" in out
    assert "  cold_start.steps = 100\n" in out  # the YAML's value, not the dataclass default


@pytest.mark.parametrize("leaf", ["videostar_grpo", "hieroaction_grpo", "videostar_sft", "hieroaction_sft", "gps_sft"])
def test_help_works_on_every_recipe(leaf, capsys):
    import importlib

    recipe = importlib.import_module(f"recipes.{leaf}")
    with pytest.raises(SystemExit) as done:
        recipe.main(["--help"])
    out = capsys.readouterr().out
    assert done.value.code == 0 and out.startswith(recipe.__doc__.split("\n")[0])
    for section in ("model:", "data:", "rollout:", "rewards:", "trainer:", "eval:", "run:"):
        assert f"\n{section}  " in out, section


def test_actors_that_cannot_fit_a_local_ray_fail_before_it_starts():
    import ray

    was_running = ray.is_initialized()
    with pytest.raises(ConfigError) as err:  # this machine has no GPU (the test suite runs on CPU)
        grpo.load(["trainer.num_gpus=1", "run.ray_num_cpus=2"], videostar_grpo.DEFAULT_YAML)
    text = str(err.value)
    # 2 ranks x 1 GPU; CPUs: 2 x 0.5 (trainer) + 0.5 (rollout) + 4 x 0.25 (tools) + 0.25 (rewards) = 2.75 > 2
    assert "the actors ask for 2 GPU (trainer (2 ranks) 2) but the cluster has 0" in text
    assert "the actors ask for 2.75 CPU (trainer (2 ranks) 1, rollout (1 workers) 0.5, tools (4 actors per " in text
    assert ray.is_initialized() == was_running
