"""End to end: the HieroAction GRPO recipe on the embedded default (aqa sample records, no tools, no cold start)."""

from __future__ import annotations

import json
import math

import pytest

from recipes import grpo, hieroaction_grpo, sft

pytestmark = pytest.mark.slow

COMPONENTS = {"sar_format": 0.1, "temporal_iou": 0.3, "hier_action": 0.3, "aqa_score": 0.3}


def test_two_steps_log_every_component_and_save_a_checkpoint(ray_local, tiny_model_dir, tmp_path):
    run_dir = tmp_path / "run"
    quick = ["trainer.world_size=2", "data.batch_size=2", "rollout.n=2", "rollout.max_new_tokens=16"]
    trackers = "run.trackers=[jsonl,tensorboard]"
    hieroaction_grpo.main([f"run.run_dir={run_dir}", "run.steps=2", "run.save_every=2", trackers, *quick])

    for name in ("config.yaml", "metrics.jsonl", "rewards.png", "checkpoint-2/config.json"):
        assert (run_dir / name).exists(), name
    assert not (run_dir / "cold_start").exists()  # no cold start by default
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2]
    for row in rows:
        # every record has the ground truth all four rewards need, and each of them scores 0.0 (not None) on a
        # completion without a parsable answer, so every component is in every step's line
        for name in COMPONENTS:
            assert 0.0 <= row[f"reward/{name}_mean"] <= 1.0, name
            assert row[f"reward/{name}_errors"] == 0, name
        # the total is the 0.1 / 0.3 / 0.3 / 0.3 mix of the component means (all apply to every sample)
        mix = sum(w * row[f"reward/{name}_mean"] for name, w in COMPONENTS.items())
        assert row["reward/total_mean"] == pytest.approx(mix, abs=1e-9)
        assert math.isfinite(row["train/loss"]) and math.isfinite(row["train/grad_norm"])
        assert row["rollout/trajectories"] == 2 * 2  # batch 2 x group 2
        assert row["tools/calls"] == 0 and row["rollout/turns_mean"] == 1.0  # no tools, one SAR turn
    config = (run_dir / "config.yaml").read_text()
    assert "sar_format" in config and "tools: {}" in config

    # every metric of metrics.jsonl went to TensorBoard too, at its step
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run_dir / "tensorboard"))
    events.Reload()
    for tag in ("reward/total_mean", "train/loss", "reward/aqa_score_mean"):
        scalars = events.Scalars(tag)
        assert [e.step for e in scalars] == [1, 2]
        assert [e.value for e in scalars] == pytest.approx([r[tag] for r in rows], rel=1e-6)


def test_yaml_holds_the_papers_mix_and_no_tools():
    cfg = grpo.load([], hieroaction_grpo.DEFAULT_YAML)
    assert cfg.rollout.tools == {} and cfg.cold_start.steps == 0 and cfg.data.train == "embedded:aqa_train"
    assert {c.name: c.weight for c in cfg.rewards.components} == COMPONENTS
    assert cfg.rollout.system_prompt.startswith("You are an expert judge of human actions.")  # the prompt file's text


def test_a_cold_start_on_aqa_records_is_refused_before_ray(tmp_path):
    import ray

    was_running = ray.is_initialized()
    cfg = grpo.load(
        [f"run.run_dir={tmp_path}", "cold_start.steps=2", "cold_start.batch_size=2"], hieroaction_grpo.DEFAULT_YAML
    )
    # the cold start's template teacher writes Video-STAR chains, which only ovar records have
    with pytest.raises(ValueError, match="no ovar records"):
        sft.cold_start(cfg)
    assert ray.is_initialized() == was_running
