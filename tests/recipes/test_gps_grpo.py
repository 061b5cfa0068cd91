"""The GPS GRPO recipe: its help, its embedded default and paper configs as loaded, and (slow) one step on the
embedded default (the tiny model, the describe sample records, the lexical judge)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from recipes import gps_grpo, grpo

PAPER = Path(__file__).resolve().parents[2] / "recipes" / "configs" / "gps_paper.yaml"


def test_help_lists_the_config_with_the_recipes_values(capsys):
    with pytest.raises(SystemExit) as exc:
        gps_grpo.main(["--help"])
    out = capsys.readouterr().out
    assert exc.value.code == 0
    assert out.startswith("Gold Points Sniper GRPO") and "data.train = 'embedded:describe_train'" in out
    assert "semantic_entailment" in out and "eval.entailment_mode = 'all'" in out


def test_embedded_default_scores_descriptions_with_the_lexical_judge():
    cfg = grpo.load([], gps_grpo.DEFAULT_YAML)
    (spec,) = cfg.rewards.components
    assert (spec.name, spec.weight, spec.args, spec.when) == (
        "semantic_entailment",
        1.0,
        {"mode": "all", "judge": {"kind": "lexical"}},
        None,
    )
    assert cfg.rollout.tools == {} and cfg.rollout.max_turns == 1 and cfg.cold_start.steps == 0
    assert cfg.data.train == "embedded:describe_train" and cfg.eval.benchmark == "sample-describe"
    assert cfg.rollout.system_prompt.startswith("You are an expert in fine-grained human action understanding.")


def test_paper_config_keeps_the_papers_judge_and_score():
    for cfg in (grpo.load([], PAPER), grpo.load([f"config={PAPER}"], gps_grpo.DEFAULT_YAML)):
        (spec,) = cfg.rewards.components
        judge = spec.args["judge"]
        # the paper's evaluator, Llama-3.3-70B-Instruct, labels every point of a description in one pass
        assert spec.name == "semantic_entailment" and spec.args["mode"] == "all" and spec.weight == 1.0
        assert (judge["kind"], judge["model"]) == ("openai", "Llama-3.3-70B-Instruct")
        assert cfg.eval.judge["model"] == "Llama-3.3-70B-Instruct" and cfg.eval.entailment_mode == "all"
        # one pass over 14,281 tuning samples at 16 per step; no tools, one turn; the SFT stage is its own run
        assert cfg.run.steps == math.ceil(14281 / 16) and cfg.data.batch_size == 16
        assert cfg.rollout.tools == {} and cfg.rollout.max_turns == 1 and cfg.cold_start.steps == 0


@pytest.mark.slow
def test_one_step_on_the_embedded_default(ray_local, tiny_model_dir, tmp_path):
    run_dir = tmp_path / "run"
    quick = ["data.batch_size=2", "rollout.n=2", "rollout.max_new_tokens=16", "rollout.max_response_tokens=16"]
    gps_grpo.main([f"run.run_dir={run_dir}", "run.steps=1", "run.save_every=1", *quick])
    (row,) = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    # the lexical judge labels each point [2] or [1], never [0], and always answers in form: every description
    # scores in [0.5, 1] and nothing is malformed
    assert 0.5 <= row["reward/semantic_entailment_mean"] <= 1.0 and row["reward/semantic_entailment_errors"] == 0
    assert row["rollout/trajectories"] == 4 and math.isfinite(row["train/loss"])
    assert (run_dir / "checkpoint-1" / "config.json").is_file()
