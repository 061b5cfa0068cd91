"""End to end: the Video-STAR SFT recipe on the embedded default (template-teacher chains through the real pose
tool, FSDP2 ranks) lowers the loss and makes the tiny model write the trained format and call the tool; GRPO then
starts from its checkpoint with init_from. The HieroAction and GPS SFT recipes run two steps each."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from recipes import gps_sft, hieroaction_sft, videostar_grpo, videostar_sft

pytestmark = pytest.mark.slow


def _rows(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]


def _two_chains(tmp_path: Path) -> Path:
    """Template-teacher chains (real pose replies) of two sample records: few enough to learn in a short test."""
    from common.sample_data import build_sample_data, default_sample_dir
    from data_builders.videostar_cot import ChainBuilder, TemplateTeacher, build, template_judge

    out = tmp_path / "chains.jsonl"
    builder = ChainBuilder(TemplateTeacher(), template_judge, {"pose_estimation": {}})
    build(build_sample_data(default_sample_dir())["train"], out, builder, progress=False)
    two = tmp_path / "two_chains.jsonl"
    two.write_text("".join(out.read_text().splitlines(keepends=True)[:2]))
    return two


def test_videostar_sft_learns_the_format_and_grpo_starts_from_it(ray_local, tiny_model_dir, tmp_path):
    sft_dir = tmp_path / "sft"
    steps = 100  # seen: the loss falls from ~12 to ~0.2-0.4 by step 60 and below 0.01 by step 100
    videostar_sft.main(
        [
            f"run.run_dir={sft_dir}",
            f"data.train={_two_chains(tmp_path)}",
            f"run.steps={steps}",
            f"run.save_every={steps}",
            "data.batch_size=2",
            "trainer.lr=1e-2",
            "trainer.lr_schedule=constant",
            "trainer.warmup_steps=2",
            "eval.samples=2",
            "rollout.n=4",
            "eval.before=true",
        ]
    )
    rows = _rows(sft_dir)
    before, train_rows, after = rows[0], rows[1:], rows[-1]
    assert before["step"] == 0 and [r["step"] for r in train_rows] == list(range(1, steps + 1))
    # sampled at temperature 0.7: the untrained model writes no think-then-answer reply and calls no tool
    assert before["eval/samples"] == after["eval/samples"] == 8
    assert before["eval/format_mean"] == 0.0 and before["eval/tool_call_rate"] == 0.0
    losses = [r["sft/loss"] for r in train_rows]
    assert losses[0] > 10 and losses[-1] < 1.0, losses  # ~ln(151,936) = 11.9 at the start
    assert after["eval/format_mean"] >= 0.75 and after["eval/tool_call_rate"] >= 0.75, after
    assert [r["sft/lr"] for r in train_rows[:3]] == pytest.approx([5e-3, 1e-2, 1e-2])  # linear warm-up of 2
    checkpoint = sft_dir / f"checkpoint-{steps}"
    assert (checkpoint / "trainer_state").is_dir() and (sft_dir / "loss.png").is_file()

    grpo_dir = tmp_path / "grpo"
    videostar_grpo.main(
        [
            f"run.run_dir={grpo_dir}",
            "run.steps=1",
            f"init_from={checkpoint}",
            "data.batch_size=1",
            "rollout.n=2",
            # the tools the SFT run showed (pose only): the system prompt lists the enabled tools' schemas
            "rollout.tools.human_detection=null",
            "rollout.tools.action_explanation=null",
            "rollout.tools.video_description=null",
        ]
    )
    (row,) = _rows(grpo_dir)
    assert not (grpo_dir / "cold_start").exists()  # no cold-start stage: the SFT checkpoint is the start
    assert row["rollout/trajectories"] == 2 and row["tools/call_rate"] > 0  # the SFT policy calls the tool


def test_gps_sft_runs_and_resumes_and_hieroaction_sft_runs(ray_local, tiny_model_dir, tmp_path):
    run_dir = tmp_path / "gps"
    quick = [f"run.run_dir={run_dir}", "run.save_every=1", "data.batch_size=2"]
    gps_sft.main([*quick, "run.steps=1"])
    gps_sft.main([*quick, "run.steps=2", "run.resume=true", "trainer.pack_max_tokens=4096"])  # packed rows
    rows = _rows(run_dir)
    assert [r["step"] for r in rows] == [1, 2] and rows[1]["sft/loss"] < rows[0]["sft/loss"]
    assert (run_dir / "checkpoint-2" / "model.safetensors").is_file()
    roles = [json.loads(line)["meta"]["role"] for line in (run_dir / "chains" / "gps_roles.jsonl").open()]
    assert sorted(set(roles)) == ["description", "gold_points", "socratic", "validation"]

    hiero_dir = tmp_path / "hiero"  # SAR targets (~500 tokens each): one step
    hieroaction_sft.main([f"run.run_dir={hiero_dir}", "run.steps=1", "data.batch_size=2", "eval.samples=0"])
    (row,) = _rows(hiero_dir)
    assert row["sft/num_tokens"] > 400 and (hiero_dir / "checkpoint-1").is_dir()


def test_sft_bad_trainer_config_fails_before_ray(tmp_path):
    import ray

    from recipes.config import ConfigError

    was_running = ray.is_initialized()
    with pytest.raises(ConfigError) as err:
        videostar_sft.main(
            [
                f"run.run_dir={tmp_path}",
                "trainer.strategy=megatron",
                "trainer.pack_max_tokens=-1",
                "data.batch_size=3",
            ]
        )
    text = str(err.value)
    for needle in ("trainer.strategy", "'megatron'", "trainer.pack_max_tokens", "data.batch_size 3"):
        assert needle in text, text
    assert ray.is_initialized() == was_running
