"""Run plumbing that needs no actors: the sampler, init_from's prompt check."""

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
