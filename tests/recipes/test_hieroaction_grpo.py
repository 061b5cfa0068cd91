"""End to end: the HieroAction GRPO recipe on the embedded default (aqa sample records, no tools): a cold start on
SAR chains, then GRPO from it."""

from __future__ import annotations

import json
import math

import pytest
import yaml

from recipes import grpo, hieroaction_grpo, sft

pytestmark = pytest.mark.slow

COMPONENTS = {"sar_format": 0.1, "temporal_iou": 0.3, "hier_action": 0.3, "aqa_score": 0.3}


def _rows(run_dir) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]


def test_cold_start_on_sar_chains_then_grpo_from_its_checkpoint(ray_local, tiny_model_dir, tmp_path):
    """The embedded default's two stages, shortened (2 cold-start steps, 2 GRPO steps of 16 tokens): the cold start
    replays a brief SAR chain of every sample aqa record within the GRPO budget, GRPO starts from its checkpoint and
    logs every reward component. That the default learns (200 cold-start steps) is measured in
    docs/hieroaction_grpo.md: about 20 minutes on 2 cores, beyond the suite's budget."""
    run_dir = tmp_path / "run"
    steps = 2
    quick = ["cold_start.steps=2", "cold_start.batch_size=2", "rollout.n=2", "rollout.max_new_tokens=16"]
    trackers = "run.trackers=[jsonl,tensorboard]"
    hieroaction_grpo.main(
        [f"run.run_dir={run_dir}", f"run.steps={steps}", f"run.save_every={steps}", trackers, *quick]
    )
    cold = _rows(run_dir / "cold_start")
    # every sample record's chain fits the GRPO budget: none is dropped from the replay
    assert [r["step"] for r in cold] == [1, 2] and cold[-1]["data/replay_dropped"] == 0
    assert cold[0]["sft/loss"] > 10  # ~ln(151,936) = 11.9: the untrained model
    saved = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert saved["init_from"] == str(run_dir / "cold_start" / "checkpoint-2")
    replayed = [json.loads(line) for line in (run_dir / "cold_start" / "chains" / "replayed.jsonl").open()]
    assert len(replayed) == 11  # the sample data's aqa_train records, each one SAR turn
    assert all(r["turns"][0]["text"].startswith("<look>") for r in replayed)

    rows = _rows(run_dir)
    assert [r["step"] for r in rows] == list(range(1, steps + 1))
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

    # every metric of metrics.jsonl went to TensorBoard too, at its step
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run_dir / "tensorboard"))
    events.Reload()
    for tag in ("reward/total_mean", "train/loss", "reward/aqa_score_mean"):
        scalars = events.Scalars(tag)
        assert [e.step for e in scalars] == list(range(1, steps + 1))
        assert [e.value for e in scalars] == pytest.approx([r[tag] for r in rows], rel=1e-6)


def test_yaml_holds_the_papers_mix_no_tools_and_a_cold_start_whose_chains_fit_the_budget():
    from tokenizers import Tokenizer

    from common.sample_data import build_sample_data, default_sample_dir
    from common.schema import load_records
    from common.tiny_model import qwen_tokenizer_dir
    from data_builders.hieroaction_sar import brief_sar_target

    cfg = grpo.load([], hieroaction_grpo.DEFAULT_YAML)
    assert cfg.rollout.tools == {} and cfg.data.train == "embedded:aqa_train"
    assert {c.name: c.weight for c in cfg.rewards.components} == COMPONENTS
    assert cfg.rollout.system_prompt.startswith("You are an expert judge of human actions.")  # the prompt file's text
    assert cfg.cold_start.steps > 0 and cfg.cold_start.batch_size % cfg.trainer.world_size == 0
    # every cold-start chain (the brief SAR target of each sample aqa record, counted with the Qwen tokenizer) fits
    # the per-episode budget GRPO gives the policy, so the policy can write in GRPO what it was taught
    tok = Tokenizer.from_file(str(qwen_tokenizer_dir() / "tokenizer.json"))
    records = load_records(build_sample_data(default_sample_dir())["aqa_train"])
    lengths = [len(tok.encode(brief_sar_target(r)).ids) for r in records]
    assert len(lengths) == 11 and max(lengths) <= cfg.rollout.max_new_tokens <= cfg.rollout.max_response_tokens


def test_a_real_model_is_refused_the_cold_start_before_ray(tmp_path, tiny_model_dir):
    import ray

    from recipes.config import ConfigError

    was_running = ray.is_initialized()
    # the cold start's rate is tuned for the embedded tiny model: any other model.path must bring its own SFT
    with pytest.raises(ConfigError, match="cold_start.steps"):
        hieroaction_grpo.main([f"run.run_dir={tmp_path}", f"model.path={tiny_model_dir}"])
    # with its own SFT checkpoint (init_from) or cold_start.steps=0 it is accepted
    grpo.load(
        [f"run.run_dir={tmp_path}", f"model.path={tiny_model_dir}", "cold_start.steps=0"],
        hieroaction_grpo.DEFAULT_YAML,
    )
    grpo.load([f"model.path={tiny_model_dir}", f"init_from={tiny_model_dir}"], hieroaction_grpo.DEFAULT_YAML)
    assert ray.is_initialized() == was_running


def test_the_video_star_template_teacher_refuses_aqa_records(tmp_path):
    """The cold start's default builder writes Video-STAR chains, for ovar records only: the HieroAction recipe
    names its own (hieroaction_sar_brief)."""
    cfg = grpo.load(
        [f"run.run_dir={tmp_path}", "cold_start.steps=2", "cold_start.batch_size=2"], hieroaction_grpo.DEFAULT_YAML
    )
    assert sft.cold_start_config(cfg, "hieroaction_sar_brief").data.builder == "hieroaction_sar_brief"
    with pytest.raises(ValueError, match="no ovar records"):
        sft.cold_start(cfg)
