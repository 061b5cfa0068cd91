"""The multi-turn tool loop with the ScriptedEngine (a fake that replays texts) and a small in-test tool client."""

from __future__ import annotations

import time

import numpy as np
import pytest

from envs.base import ToolResult, Video
from rollout.engine import SamplingParams
from rollout.scripted_engine import ScriptedEngine
from rollout.tool_loop import Episode, run_episode, run_episodes

CALL = '<think>look</think>\n<tool_call>\n{"name": "count_frames", "arguments": {}}\n</tool_call>'
BAD = '<tool_call>\n{"name": "count_frames", "arguments": {oops}}\n</tool_call>'
CROP = '<tool_call>\n{"name": "crop", "arguments": {"frame": 1}}\n</tool_call>'
ANSWER = "<think>done</think><answer>riding a bike</answer>"


class CountingTools:
    """A tool client like envs' pool: `count_frames` answers with the frame count, `crop` with a 28x28 image."""

    def __init__(self):
        self.batches: list[int] = []

    def schemas(self):
        return [
            {"type": "function", "function": {"name": n, "parameters": {"type": "object"}}}
            for n in ("count_frames", "crop")
        ]

    def call(self, name, args, video):
        if name == "count_frames":
            return ToolResult(text=f"{video.frames.shape[0]} frames")
        if name == "crop":
            return ToolResult(text="cropped", images=[video.frames[args["frame"], :28, :28].copy()])
        return ToolResult(text=f"unknown tool {name}", ok=False, error="unknown_tool")

    def call_many(self, calls):
        self.batches.append(len(calls))
        return [self.call(*c) for c in calls]


@pytest.fixture(scope="module")
def processor(tiny_model_dir):
    from transformers import AutoProcessor

    return AutoProcessor.from_pretrained(tiny_model_dir)


@pytest.fixture
def video():
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 255, size=(4, 56, 56, 3), dtype=np.uint8)
    return Video(frames=frames, timestamps=[0.0, 0.5, 1.0, 1.5], path="synthetic", key="synthetic")


def _prompt(processor):
    messages = [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": "What happens?"}]}]
    text = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    return text, processor.tokenizer.encode(text, add_special_tokens=False)


def _runs(ids, mask, tokenizer):
    """Decode the maximal runs of equal mask value: [(mask, text), ...]."""
    runs, start = [], 0
    for i in range(1, len(ids) + 1):
        if i == len(ids) or mask[i] != mask[start]:
            runs.append((mask[start], tokenizer.decode(ids[start:i], skip_special_tokens=False)))
            start = i
    return runs


def test_tool_reply_masked_bad_call_answered_and_answer_stops(processor, video):
    tok = processor.tokenizer
    engine = ScriptedEngine(tok, [CALL, BAD, ANSWER, "never reached"])
    tools = CountingTools()
    prompt_text, prompt_ids = _prompt(processor)
    sampling = SamplingParams(max_new_tokens=64, temperature=1.0)
    [traj] = run_episodes(
        engine, tools, [Episode(prompt_ids, video)], sampling, tok, max_turns=5, max_response_tokens=400
    )

    assert traj.finish_reason == "answer" and traj.final_text == ANSWER
    assert [t.text for t in traj.turns] == [CALL, BAD, ANSWER]
    good, bad = traj.turns[0].tool_calls[0], traj.turns[1].tool_calls[0]
    assert (good.name, good.ok, good.response, good.error) == ("count_frames", True, "4 frames", None)
    assert (bad.ok, bad.error) == (False, "bad_json") and bad.response.startswith("Error: bad_json: ")
    assert traj.turns[2].tool_calls == []

    reply_1 = (
        "<|im_end|>\n<|im_start|>user\n<tool_response>\n4 frames\n</tool_response><|im_end|>\n<|im_start|>assistant\n"
    )
    runs = _runs(traj.response_ids, traj.response_mask, tok)
    assert [m for m, _ in runs] == [1, 0, 1, 0, 1]
    assert [t for m, t in runs if m == 1] == [CALL, BAD, ANSWER]
    assert runs[1][1] == reply_1
    assert runs[3][1].startswith("<|im_end|>\n<|im_start|>user\n<tool_response>\nError: bad_json: ")
    assert len(traj.response_ids) == len(traj.response_mask) == len(traj.rollout_logprobs)
    assert all(lp == 0.0 for lp in traj.rollout_logprobs)

    # The whole conversation equals what the chat template renders for the same messages (second method).
    messages = [
        {"role": "user", "content": [{"type": "video"}, {"type": "text", "text": "What happens?"}]},
        {
            "role": "assistant",
            "content": "<think>look</think>",
            "tool_calls": [{"name": "count_frames", "arguments": {}}],
        },
        {"role": "tool", "content": "4 frames"},
        {"role": "assistant", "content": BAD},
        {"role": "tool", "content": bad.response},
        {"role": "assistant", "content": ANSWER},
    ]
    rendered = processor.apply_chat_template(messages, tokenize=False)
    assert prompt_text + tok.decode(traj.response_ids, skip_special_tokens=False) + "<|im_end|>\n" == rendered
    assert engine.calls == 3 and tools.batches == [1]  # the bad call never reached the tool client


def test_turns_are_batched_across_conversations(processor, video):
    tok = processor.tokenizer
    _, prompt_ids = _prompt(processor)

    def script(req, turn):  # conversation k answers after k tool turns
        k = int(tok.decode(req.prompt_ids).split("conv")[1][0])
        return ANSWER if turn >= k else CALL

    engine = ScriptedEngine(tok, script)
    tools = CountingTools()
    episodes = [Episode(prompt_ids + tok.encode(f"conv{k}", add_special_tokens=False), video) for k in range(3)]
    trajs = run_episodes(engine, tools, episodes, SamplingParams(max_new_tokens=64), tok, max_turns=4)
    assert [t.finish_reason for t in trajs] == ["answer"] * 3
    assert [len(t.turns) for t in trajs] == [1, 2, 3]
    assert engine.calls == 3 and [len(r.prompt_ids) > 0 for r in engine.requests].count(True) == 3 + 2 + 1
    assert tools.batches == [2, 1]  # all calls of a turn in one call_many


def test_episodes_of_two_records_come_back_in_order_with_their_own_video_and_record(processor, video):
    tok = processor.tokenizer
    _, prompt_ids = _prompt(processor)
    short = Video(frames=video.frames[:2], timestamps=[0.0, 0.5], path="short", key="short")
    videos, records = {"a": video, "b": short}, {"a": {"id": "a"}, "b": {"id": "b"}}
    inputs = {"a": {"video_grid_thw": np.array([[2, 4, 4]])}, "b": {"video_grid_thw": np.array([[1, 4, 4]])}}
    order = [("a", 0), ("b", 0), ("a", 1), ("b", 1), ("b", 2)]  # interleaved on purpose
    episodes = [
        Episode(prompt_ids, videos[s], video_inputs=inputs[s], sample_id=s, group_index=g, record=records[s])
        for s, g in order
    ]
    # Record a answers at once; record b first counts frames, so only its three episodes run a second turn.
    engine = ScriptedEngine(tok, lambda req, turn: ANSWER if req.mm_key == "synthetic" or turn else CALL)
    trajs = run_episodes(engine, CountingTools(), episodes, SamplingParams(max_new_tokens=64), tok)

    assert [(t.sample_id, t.group_index) for t in trajs] == order
    assert [t.finish_reason for t in trajs] == ["answer"] * 5 and [len(t.turns) for t in trajs] == [1, 2, 1, 2, 2]
    assert [[c.response for c in t.tool_calls] for t in trajs] == [[], ["2 frames"], [], ["2 frames"], ["2 frames"]]
    assert [r.mm_key for r in engine.requests] == ["synthetic", "short", "synthetic", "short", "short"] + ["short"] * 3
    assert all(r.videos[0] is short.frames for r in engine.requests[5:])
    for traj, (s, _) in zip(trajs, order):
        assert traj.record is records[s]
        assert traj.mm_inputs["video_grid_thw"] is inputs[s]["video_grid_thw"]  # the group's arrays, not copies
    assert trajs[0].mm_inputs is not trajs[2].mm_inputs  # but each trajectory has its own dict (tool images go in)


def test_stop_max_turns_and_length(processor, video):
    tok = processor.tokenizer
    _, prompt_ids = _prompt(processor)
    sampling = SamplingParams(max_new_tokens=64)
    stop = run_episode(
        ScriptedEngine(tok, ["plain text<|im_end|>"]), CountingTools(), Episode(prompt_ids, video), sampling, tok
    )
    assert stop.finish_reason == "stop" and stop.final_text == "plain text"
    assert stop.response_ids[-1] == tok.convert_tokens_to_ids("<|im_end|>") and set(stop.response_mask) == {1}

    [turns] = run_episodes(
        ScriptedEngine(tok, [CALL] * 9), CountingTools(), [Episode(prompt_ids, video)], sampling, tok, max_turns=2
    )
    assert turns.finish_reason == "max_turns" and len(turns.turns) == 2 and turns.response_mask[-1] == 0

    reply = (
        "<|im_end|>\n<|im_start|>user\n<tool_response>\n4 frames\n</tool_response><|im_end|>\n<|im_start|>assistant\n"
    )
    call_len, reply_len = len(tok.encode(CALL)), len(tok.encode(reply))
    roomy, tight = call_len + reply_len + 10, call_len + 3
    for budget, expected_len, model_tokens in ((roomy, roomy, call_len + 10), (tight, call_len, call_len)):
        [cut] = run_episodes(
            ScriptedEngine(tok, [CALL, "word " * 100]),
            CountingTools(),
            [Episode(prompt_ids, video)],
            sampling,
            tok,
            max_turns=3,
            max_response_tokens=budget,
        )
        # The second turn is cut at the budget; a tool reply that does not fit is not appended.
        assert cut.finish_reason == "length" and len(cut.response_ids) == expected_len
        assert cut.turns[0].tool_calls[0].ok and sum(cut.response_mask) == model_tokens


def test_tool_images_become_placeholders_and_trainer_inputs(processor, video):
    tok = processor.tokenizer
    _, prompt_ids = _prompt(processor)
    engine = ScriptedEngine(tok, [CROP, ANSWER])
    [traj] = run_episodes(
        engine,
        CountingTools(),
        [Episode(prompt_ids, video, video_inputs={"video_grid_thw": np.array([[2, 4, 4]])})],
        SamplingParams(max_new_tokens=64),
        tok,
        processor=processor,
    )
    image_pad = tok.convert_tokens_to_ids("<|image_pad|>")
    positions = [i for i, t in enumerate(traj.response_ids) if t == image_pad]
    assert len(positions) == 1 and traj.response_mask[positions[0]] == 0
    second = engine.requests[1]
    assert len(second.images) == 1 and np.array_equal(second.images[0], video.frames[1, :28, :28])
    assert second.videos[0] is video.frames and second.video_seconds_per_frame == [0.5]
    # 28x28 px -> resized up to the image processor's 56x56 minimum = 4x4 patches of 14 px.
    assert traj.mm_inputs["image_grid_thw"].tolist() == [[1, 4, 4]]
    assert traj.mm_inputs["pixel_values"].shape == (16, 3 * 2 * 14 * 14)
    assert traj.mm_inputs["video_grid_thw"].tolist() == [[2, 4, 4]]
    assert traj.turns[0].tool_calls[0].num_images == 1


def test_many_conversations_loop_overhead_is_small(processor, video):
    tok = processor.tokenizer
    _, prompt_ids = _prompt(processor)
    start = time.perf_counter()
    trajs = run_episodes(
        ScriptedEngine(tok, [CALL, ANSWER]),
        CountingTools(),
        [Episode(prompt_ids, video) for _ in range(64)],
        SamplingParams(max_new_tokens=64),
        tok,
    )
    assert all(t.finish_reason == "answer" for t in trajs)
    assert time.perf_counter() - start < 10.0
