"""Evaluation takes its rollout settings from the training run: the same system prompt, tools, frames and budgets
(from the recipe config during training, from the run's config.yaml on the command line), flags override."""

from __future__ import annotations

import shutil

import pytest

from eval.benchmarks import BenchmarkError
from recipes.config import ConfigError


def _grpo_cfg(argv):
    from recipes import grpo, videostar_grpo

    return grpo.load(argv, videostar_grpo.DEFAULT_YAML)


def test_training_eval_options_come_from_the_recipe_config(tmp_path):
    from eval.during_training import TrainingEval

    cfg = _grpo_cfg(["eval.every_k=3", "eval.benchmark=sample-aqa", "eval.actors=2", "rollout.num_frames=6"])
    evals = TrainingEval(cfg.eval, tmp_path, cfg.rollout)
    assert evals.benchmark.task == "aqa" and evals.due(3) and evals.due(6) and not evals.due(4)
    o = evals.options
    assert o.actors == 2 and o.rollout.system_prompt == cfg.rollout.system_prompt
    assert (o.rollout.temperature, o.rollout.n, o.rollout.num_frames) == (0.0, 1, 6)  # greedy, one episode each
    assert o.rollout.tools == {}  # an aqa benchmark does not use tools
    # on a task with tools, a tool set to null in the recipe is disabled for the eval actors too
    cfg = _grpo_cfg(["eval.every_k=3", "rollout.tools.video_description=null"])
    tools = TrainingEval(cfg.eval, tmp_path, cfg.rollout).options.rollout.enabled_tools()
    assert sorted(tools) == ["action_explanation", "human_detection", "pose_estimation"]
    # a benchmark that does not resolve fails when the config is loaded, before any stage starts
    with pytest.raises(ConfigError, match="eval.benchmark: unknown benchmark 'nope'"):
        _grpo_cfg(["eval.every_k=3", "eval.benchmark=nope"])
    cfg.eval.benchmark = "nope"
    with pytest.raises(BenchmarkError, match="unknown benchmark 'nope'"):
        TrainingEval(cfg.eval, tmp_path, cfg.rollout)


def test_aqa_metric_options_from_the_recipe_config_and_the_cli(tmp_path, tiny_model_dir):
    from eval.during_training import TrainingEval
    from eval.run import parse_args, prepare

    cfg = _grpo_cfg(["eval.every_k=3", "eval.benchmark=sample-aqa"])
    assert TrainingEval(cfg.eval, tmp_path, cfg.rollout).options.metric_options == {
        "rl2_range": "set",
        "tiou_mode": "max",
    }
    cfg = _grpo_cfg(["eval.every_k=3", "eval.benchmark=sample-aqa", "eval.rl2_range=action", "eval.tiou_mode=paper"])
    options = TrainingEval(cfg.eval, tmp_path, cfg.rollout).options
    assert options.metric_options == {"rl2_range": "action", "tiou_mode": "paper"}
    with pytest.raises(ConfigError, match="eval.rl2_range: 'dive' is not one of 'set', 'action'"):
        _grpo_cfg(["eval.rl2_range=dive"])
    with pytest.raises(ConfigError, match="eval.tiou_mode: 'matched' is not one of 'max', 'paper'"):
        _grpo_cfg(["eval.tiou_mode=matched"])
    argv = ["--checkpoint", tiny_model_dir, "--benchmark", "sample-aqa", "--out", str(tmp_path / "out")]
    assert prepare(parse_args(argv))[3].metric_options == {"rl2_range": "set", "tiou_mode": "max"}
    options = prepare(parse_args([*argv, "--rl2-range", "action", "--tiou-mode", "paper"]))[3]
    assert options.metric_options == {"rl2_range": "action", "tiou_mode": "paper"}


@pytest.fixture
def trained_run(tmp_path, tiny_model_dir):
    """A run directory as a recipe leaves it: config.yaml (its own prompt, two tools, 6 frames of 96 px) and a
    checkpoint."""
    from recipes.config import save_config

    cfg = _grpo_cfg(
        [
            "rollout.num_frames=6",
            "rollout.max_side=96",
            "rollout.system_prompt=Name the action.",
            "rollout.tools.action_explanation=null",
            "rollout.tools.video_description=null",
        ]
    )
    save_config(cfg, tmp_path / "config.yaml")
    shutil.copytree(tiny_model_dir, tmp_path / "checkpoint-4")
    return tmp_path, cfg


def test_cli_evaluates_a_checkpoint_under_its_runs_prompt_tools_and_frames(trained_run, tmp_path):
    from eval.run import parse_args, prepare

    run, cfg = trained_run
    _, _, _, options = prepare(parse_args(["--checkpoint", str(run / "checkpoint-4"), "--benchmark", "sample-ovar"]))
    r = options.rollout
    assert r.system_prompt == "Name the action." and sorted(r.enabled_tools()) == [
        "human_detection",
        "pose_estimation",
    ]
    assert (r.num_frames, r.max_side, r.max_turns, r.max_response_tokens) == (6, 96, 3, 1024)
    assert set(options.sources.values()) == {"run config"}
    # a flag overrides its setting and says so; the rest stays the run's
    args = parse_args(
        [
            "--checkpoint",
            str(run / "checkpoint-4"),
            "--benchmark",
            "sample-ovar",
            "--max-side",
            "64",
            "--system-prompt",
            "Other.",
        ]
    )
    _, _, _, options = prepare(args)
    assert (options.rollout.max_side, options.rollout.system_prompt, options.rollout.num_frames) == (64, "Other.", 6)
    assert options.sources["max_side"] == options.sources["system_prompt"] == "flag"
    assert options.sources["num_frames"] == "run config"


def test_eval_actor_builds_exactly_the_training_prompt(trained_run, ray_local):
    """The token ids the eval actor's policy sees equal those of a training rollout worker of the same run: the
    same system prompt and tool schemas in the chat template."""
    from eval.actor import EvalActor
    from eval.run import parse_args, prepare
    from rollout.worker import RolloutWorker

    run, cfg = trained_run
    _, _, _, options = prepare(parse_args(["--checkpoint", str(run / "checkpoint-4"), "--benchmark", "sample-ovar"]))
    actor = EvalActor(options.rollout)
    actor.load(str(run / "checkpoint-4"))
    training = RolloutWorker(cfg.rollout, str(run / "checkpoint-4"))
    record = {"id": "r", "prompt": "What is the person doing?"}
    ids = actor.worker.build_prompt(record)
    assert ids == training.build_prompt(record)
    text = training.tokenizer.decode(ids)
    assert "Name the action." in text and '"name": "pose_estimation"' in text and "video_description" not in text
