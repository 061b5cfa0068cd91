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


def test_fit_world_size_per_group_counts_groups():
    trajs = [_traj("a")] * 2 + [_traj("b")] * 2 + [_traj("c")] * 2  # 6 trajectories in 3 groups
    kept, dropped = grpo.fit_world_size(trajs, 2)
    assert (len(kept), dropped) == (6, 0)  # 6 trajectories split in two
    kept, dropped = grpo.fit_world_size(trajs, 2, per_group=True)  # 3 groups do not: c goes
    assert ([t.sample_id for t in kept], dropped) == (["a", "a", "b", "b"], 1)
    kept, dropped = grpo.fit_world_size(trajs, 3, per_group=True)
    assert (len(kept), dropped) == (6, 0)


def _scored(sample_id: str, g: int) -> Trajectory:
    return Trajectory(sample_id, g, [1], [2], [1], [0.0])


def test_select_trained_keeps_each_groups_best_with_its_group_advantage():
    # arrival order a2, a0, a1, b0, b1; rewards a: g0 0.1, g1 0.9, g2 0.9 (tie: g1); b: 0.4, 0.4 (flat: g0)
    trajs = [_scored("a", 2), _scored("a", 0), _scored("a", 1), _scored("b", 0), _scored("b", 1)]
    totals = [0.9, 0.1, 0.9, 0.4, 0.4]
    advantages = [0.5, -1.0, 0.6, 0.0, 0.0]  # stand-ins: whatever each trajectory's group advantage was
    kept, kept_adv, metrics = grpo.select_trained(trajs, totals, advantages, best_of_g=True)
    assert [(t.sample_id, t.group_index) for t in kept] == [("a", 1), ("b", 0)]
    assert kept_adv == [0.6, 0.0]
    assert metrics == {
        "grpo/best_of_g_kept": 2,
        "grpo/best_of_g_reward_mean": pytest.approx((0.9 + 0.4) / 2),
        "grpo/best_of_g_flat_groups": 1,
    }
    assert grpo.select_trained(trajs, totals, advantages, best_of_g=False) == (trajs, advantages, {})
    assert grpo.select_trained([], [], [], best_of_g=True) == ([], [], {})


def test_best_of_g_needs_the_samples_to_split_across_ranks():
    base = ["data.batch_size=3", "rollout.n=4", "trainer.world_size=2"]  # 12 trajectories, but 3 kept
    assert grpo.load(base, hieroaction_grpo.DEFAULT_YAML).best_of_g is False  # plain GRPO: 12 split in two
    with pytest.raises(ConfigError) as err:
        grpo.load([*base, "best_of_g=true"], hieroaction_grpo.DEFAULT_YAML)
    assert "data.batch_size = 3 must be divisible by trainer.world_size with best_of_g" in str(err.value)
    assert grpo.load(["data.batch_size=4", "best_of_g=true"], hieroaction_grpo.DEFAULT_YAML).best_of_g is True


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


def test_actors_that_cannot_fit_a_local_ray_fail_before_it_starts(tiny_model_dir):
    import ray

    was_running = ray.is_initialized()
    with pytest.raises(ConfigError) as err:  # this machine has no GPU (the test suite runs on CPU)
        grpo.load(["trainer.num_gpus=1", "run.ray_num_cpus=2"], videostar_grpo.DEFAULT_YAML)
    text = str(err.value)
    assert (
        "the actors ask for 2 GPU (trainer ranks (bundles) 2 x 1) but a local Ray (run.ray_num_cpus=2) has 0" in text
    )
    # the embedded default's 2.75 CPUs are scaled to the 2 of the local Ray once it runs: no CPU problem
    assert "CPU (" not in text
    # a real model is never rescaled: 2 x 0.5 (trainer) + 0.5 (rollout) + 4 x 0.25 (tools) + 0.25 (rewards) = 2.75 > 2
    real = [f"model.path={tiny_model_dir}", "cold_start.steps=0", "run.ray_num_cpus=2"]
    with pytest.raises(ConfigError) as err:
        grpo.load(real, videostar_grpo.DEFAULT_YAML)
    text = str(err.value)
    assert (
        "the actors ask for 2.75 CPU (trainer ranks (bundles) 2 x 0.5, rollout workers 1 x 0.5, tool actors: " in text
    )
    assert "but a local Ray (run.ray_num_cpus=2) has 2: lower trainer.num_cpus, rollout.num_cpus, " in text
    assert ray.is_initialized() == was_running


def test_step_metrics_sum_the_dropped_tool_images():
    from rewards.combine import RewardOutput
    from rollout.group import RolloutOutput
    from rollout.trajectory import ToolCall, Turn

    def call(dropped: int) -> ToolCall:
        return ToolCall("render", {}, ok=True, response="", num_images=5, dropped_images=dropped)

    trajs = [_traj("a"), _traj("a")]
    trajs[0].turns = [Turn("t", [call(0), call(2)]), Turn("t", [call(5)])]
    trajs[1].turns = [Turn("t", [call(3)])]
    times = dict.fromkeys(("rollout", "rewards", "train", "sync", "step"), 1.0)
    out = RolloutOutput(trajs, 0, {})
    m = grpo.step_metrics(1, trajs, out, 0, RewardOutput([0.0, 1.0], {}, {}), [0.0, 0.0], {}, times)
    assert m["tools/dropped_images"] == 10 and m["tools/calls"] == 4
