"""The embedded default model: a tiny random Qwen2.5-VL directory that loads like a hub model and runs on CPU."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

VIDEO_PAD = 151656
# <|vision_start|> <|vision_end|> <|vision_pad|> <|image_pad|> <|video_pad|>
VISION_IDS = [151652, 151653, 151654, 151655, 151656]
POSE_TOOL = {
    "type": "function",
    "function": {
        "name": "pose_estimation",
        "description": "Estimate 17 body keypoints of each person in some frames.",
        "parameters": {
            "type": "object",
            "properties": {"frames": {"type": "array", "items": {"type": "integer"}}},
            "required": ["frames"],
        },
    },
}


@pytest.fixture(scope="module")
def loaded(tiny_model_dir):
    import torch
    from transformers import AutoModelForImageTextToText, AutoProcessor

    torch.set_num_threads(1)
    model = AutoModelForImageTextToText.from_pretrained(tiny_model_dir)
    processor = AutoProcessor.from_pretrained(tiny_model_dir)
    return model.eval(), processor


def _video_messages(question: str) -> list[dict]:
    return [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": question}]}]


def test_config_is_tiny_and_uses_the_real_vocabulary(loaded):
    model, processor = loaded
    assert type(model).__name__ == "Qwen2_5_VLForConditionalGeneration"
    text = model.config.text_config
    assert (text.num_hidden_layers, text.hidden_size, text.vocab_size) == (2, 64, 151936)
    assert processor.tokenizer.convert_tokens_to_ids("<|video_pad|>") == VIDEO_PAD
    assert model.config.video_token_id == VIDEO_PAD
    tokens = ["<|vision_start|>", "<|vision_end|>", "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>"]
    assert processor.tokenizer.convert_tokens_to_ids(tokens) == VISION_IDS


def test_chat_template_renders_tools_and_a_video_placeholder(loaded):
    _, processor = loaded
    text = processor.apply_chat_template(
        _video_messages("What is the person doing?"), tools=[POSE_TOOL], tokenize=False, add_generation_prompt=True
    )
    assert text.startswith("<|im_start|>system\n")
    # the instructions mention "<tools></tools>" first; the tool list is the block with content
    blocks = re.findall(r"<tools>\n(.*?)\n</tools>", text, flags=re.DOTALL)
    assert [[json.loads(line) for line in b.splitlines()] for b in blocks] == [[POSE_TOOL]]
    assert "<tool_call>" in text  # the calling convention is explained to the model
    assert "<|im_start|>user\n<|vision_start|><|video_pad|><|vision_end|>What is the person doing?<|im_end|>" in text
    assert text.endswith("<|im_start|>assistant\n")


def test_video_tokens_match_the_grid(loaded):
    _, processor = loaded
    frames = np.random.default_rng(0).integers(0, 256, (8, 112, 112, 3), dtype=np.uint8)
    text = processor.apply_chat_template(_video_messages("Describe."), tokenize=False, add_generation_prompt=True)
    inputs = processor(text=[text], videos=[frames], return_tensors="pt")
    # by hand: 8 frames / temporal patch 2 = 4; 112 px / patch 14 = 8 rows and 8 columns; a 2x2 merge -> 4*8*8/4
    assert inputs["video_grid_thw"].tolist() == [[4, 8, 8]]
    assert int((inputs["input_ids"] == VIDEO_PAD).sum()) == 64


def test_generate_with_suppressed_vision_tokens_never_emits_them(loaded):
    import torch

    model, processor = loaded
    frames = np.random.default_rng(1).integers(0, 256, (4, 112, 112, 3), dtype=np.uint8)
    text = processor.apply_chat_template(_video_messages("Which action?"), tokenize=False, add_generation_prompt=True)
    inputs = processor(text=[text], videos=[frames], return_tensors="pt")
    torch.manual_seed(0)
    with torch.no_grad():
        out = model.generate(
            **inputs,
            max_new_tokens=12,
            do_sample=True,
            top_k=0,
            suppress_tokens=VISION_IDS,
            output_scores=True,
            return_dict_in_generate=True,
        )
    new = out.sequences[0, inputs["input_ids"].shape[1] :].tolist()
    assert len(new) >= 1
    assert not set(new) & set(VISION_IDS)
    # random weights make a vision id unlikely anyway, so also check that every step masked exactly those ids
    # (top_k=0 leaves suppression as the only filter)
    for step in out.scores:
        assert torch.isneginf(step[0, VISION_IDS]).all()
        assert int(torch.isfinite(step[0]).sum()) == 151936 - len(VISION_IDS)
