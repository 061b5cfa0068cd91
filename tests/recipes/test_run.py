"""Run plumbing that needs no actors: the sampler, init_from's prompt check, what resume accepts and refuses."""

from pathlib import Path

from recipes.run import Sampler


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


def test_init_from_warns_when_the_sft_run_enabled_other_tools_or_another_prompt(tmp_path, capsys):
    from recipes.config import save_config
    from recipes.run import resolve_init_from
    from recipes.sft import SftConfig
    from rollout.config import RolloutConfig

    sft = SftConfig()
    sft.rollout.tools = {"pose_estimation": {}, "human_detection": None}  # what the SFT run showed: pose only
    sft.rollout.system_prompt = "PROMPT A"
    save_config(sft, tmp_path / "config.yaml")
    checkpoint = tmp_path / "checkpoint-10"
    checkpoint.mkdir()
    (checkpoint / "config.json").write_text("{}")

    grpo = RolloutConfig(tools={"pose_estimation": {}, "action_explanation": {}}, system_prompt="PROMPT A")
    assert resolve_init_from(str(checkpoint), grpo) == str(checkpoint.resolve())
    err = capsys.readouterr().err
    assert "trained with tools ['pose_estimation']" in err
    assert "enables ['action_explanation', 'pose_estimation']" in err
    assert "rollout.tools.action_explanation=null" in err
    assert "system_prompt" not in err  # the same prompt

    grpo = RolloutConfig(tools={"pose_estimation": {}, "video_description": None}, system_prompt="PROMPT B")
    resolve_init_from(str(checkpoint), grpo)
    err = capsys.readouterr().err
    assert "tools" not in err and "another rollout.system_prompt" in err  # the same enabled set, another prompt
    (tmp_path / "config.yaml").unlink()
    resolve_init_from(str(checkpoint), grpo)  # a bare checkpoint: nothing to compare with
    assert "WARNING" not in capsys.readouterr().err


def _grpo(tmp_path, data, **run):
    from recipes.grpo import GrpoConfig
    from rewards.combine import RewardSpec

    cfg = GrpoConfig()
    cfg.run.run_dir = str(tmp_path / "run")
    cfg.data.train = str(data)
    cfg.rewards.components = [RewardSpec("accuracy")]
    for key, value in run.items():
        setattr(cfg.run, key, value)
    return cfg


def test_resume_refuses_a_config_that_changed_what_the_run_trained_on(tmp_path, capsys):
    import pytest
    import yaml

    from recipes.config import ConfigError
    from recipes.run import prepare_run_dir
    from rewards.combine import RewardSpec

    data, other, link = tmp_path / "a.jsonl", tmp_path / "b.jsonl", tmp_path / "link.jsonl"
    data.write_text(""), other.write_text("")
    link.symlink_to(data)
    run_dir = prepare_run_dir(_grpo(tmp_path, data))
    changed = _grpo(tmp_path, other, resume=True)
    changed.data.batch_size, changed.rollout.n = 4, 8
    changed.rewards.components.append(RewardSpec("format", weight=0.5))
    prepare_run_dir(changed)  # no checkpoint yet: nothing to resume, nothing to compare
    prepare_run_dir(_grpo(tmp_path, data))  # back to the first config
    (run_dir / "checkpoint-2").mkdir()

    accuracy = '{"name": "accuracy", "weight": 1.0, "args": {}, "when": null}'
    expected = [
        f"run.resume: {run_dir} was trained with another config; changed since its config.yaml:",
        f'  data.train: "{data}" -> "{other}"',
        "  data.batch_size: 2 -> 4",
        "  rollout.n: 4 -> 8",
        f'  rewards.components: [{accuracy}] -> [{accuracy}, {{"name": "format", "weight": 0.5, "args": {{}}, '
        '"when": null}]',
        "Resume with the old values, start a new run.run_dir, or pass run.resume_force=true",
    ]
    with pytest.raises(ConfigError) as err:
        prepare_run_dir(changed)
    assert str(err.value).splitlines() == expected
    assert yaml.safe_load((run_dir / "config.yaml").read_text())["data"]["batch_size"] == 2  # left as it was

    # the same file by another name, more steps, fewer FSDP2 ranks (its checkpoints resume on any number): fine
    same = _grpo(tmp_path, link, resume=True, steps=10)
    same.trainer.world_size = 1
    prepare_run_dir(same)
    assert capsys.readouterr().err == ""

    # run.resume_force: each change printed, the new config saved
    changed.run.resume_force = True
    prepare_run_dir(changed)
    err = capsys.readouterr().err
    assert f"changed since {run_dir / 'config.yaml'}:" in err and "  data.batch_size: 2 -> 4" in err
    assert f'  data.train: "{link}" -> "{other}"' in err  # against the config.yaml the last start wrote
    assert yaml.safe_load((run_dir / "config.yaml").read_text())["data"]["batch_size"] == 4


def test_with_deepspeed_the_world_size_is_part_of_the_batch_shape(tmp_path):
    import pytest

    from recipes.config import ConfigError
    from recipes.run import prepare_run_dir

    first = _grpo(tmp_path, "embedded")
    first.trainer.strategy, first.trainer.world_size = "deepspeed", 2
    run_dir = prepare_run_dir(first)
    (run_dir / "checkpoint-2").mkdir()
    again = _grpo(tmp_path, "embedded", resume=True)
    again.trainer.strategy, again.trainer.world_size = "deepspeed", 1
    with pytest.raises(ConfigError) as err:
        prepare_run_dir(again)
    assert str(err.value).splitlines()[1:-1] == ["  trainer.world_size: 2 -> 1"]


def test_retention_fields_are_checked_and_read_back_from_the_run_dir(tmp_path):
    from recipes.config import RunConfig, save_config
    from recipes.run import saved_run_config

    assert RunConfig(keep_last=-1, keep_every=-2).validate() == [
        "run.keep_last: must be >= 0 (0: off), got -1",
        "run.keep_every: must be >= 0 (0: off), got -2",
    ]
    assert (saved_run_config(tmp_path).keep_last, saved_run_config(tmp_path).keep_every) == (3, 0)  # defaults
    cfg = _grpo(tmp_path, "embedded", keep_last=1, keep_every=5)
    save_config(cfg, tmp_path / "config.yaml")
    assert (saved_run_config(tmp_path).keep_last, saved_run_config(tmp_path).keep_every) == (1, 5)


def test_resume_stops_at_a_checkpoint_this_trainer_may_not_resume(tmp_path):
    """A refusal (another reference policy, strategy) is a ConfigError: an older checkpoint of the run would be
    refused the same way, so none is tried."""
    import pytest

    from common.checkpoint_marker import write_marker
    from recipes.config import ConfigError, RunConfig
    from recipes.run import Sampler, resume
    from rl.checkpoint import CheckpointMismatch

    for step in (2, 4):
        (tmp_path / f"checkpoint-{step}" / "trainer_state").mkdir(parents=True)
        (tmp_path / f"checkpoint-{step}" / "trainer_state" / "trainer.json").write_text("{}")
        write_marker(tmp_path / f"checkpoint-{step}", step)

    class Refusing:
        tried = []

        def load_checkpoint(self, path):
            self.tried.append(Path(path).name)
            raise CheckpointMismatch(f"{path}: was trained against the reference policy /a, ...")

    with pytest.raises(ConfigError, match=r"^run.resume: .*checkpoint-4: was trained against the reference"):
        resume(RunConfig(resume=True), tmp_path, Refusing(), Sampler([{}], 1))
    assert Refusing.tried == ["checkpoint-4"]


def test_resume_refuses_switching_best_of_g():
    from recipes.grpo import GrpoConfig
    from recipes.run import resume_changes

    cfg = GrpoConfig(best_of_g=True)
    saved = {"data": {"train": "embedded", "batch_size": 2}, "rollout": {"n": 4}, "best_of_g": False}
    assert resume_changes(saved, cfg) == ["best_of_g: false -> true"]  # all G trained so far, one from now on
    del saved["best_of_g"]  # a run saved before the option existed: not compared
    assert resume_changes(saved, cfg) == []
