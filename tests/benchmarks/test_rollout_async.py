"""The rollout-async benchmark's scripted policy and its pacing on an engine with continuous batching (the
StreamingScriptedEngine fake standing in for vLLM, which CI's main environment does not have)."""

import doctest

import pytest

from benchmarks import rollout_async
from benchmarks.rollout_async import PacedStreamingEngine, scripted_turns
from rollout.engine import GenerationRequest, SamplingParams
from rollout.scripted_engine import StreamingScriptedEngine

RECORD = {"id": "r1", "label": "ride a bike", "candidates": ["ride a bike", "walk"], "prompt": "What?"}


def test_doctests():
    assert doctest.testmod(rollout_async).failed == 0


@pytest.fixture(scope="module")
def tok(tiny_model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_dir)


def test_each_request_runs_as_many_engine_steps_as_its_scripted_turn_has_tokens(tok):
    inner = StreamingScriptedEngine(tok, lambda req, turn: "word " * 400)  # the real engine's tokens: thrown away
    paced = PacedStreamingEngine(inner, tok, {"r1": RECORD}, num_frames=8, group=3)
    prompt = "<|im_start|>user\n[r1] What?<|im_end|>\n<|im_start|>assistant\n"
    req = GenerationRequest(tok.encode(prompt, add_special_tokens=False))
    sampling = SamplingParams(max_new_tokens=400, stop_strings=["</answer>"], seed=1)
    keys = [paced.submit(req, sampling) for _ in range(3)]  # turn 0 of a group of 3: variants 0, 1, 2
    texts = [scripted_turns(RECORD, v, 8)[0] for v in range(3)]
    lengths = [len(tok.encode(t, add_special_tokens=False)) for t in texts]
    finished = {}
    while len(finished) < 3:
        for key, completion in paced.step():
            finished[key] = (completion, inner.steps)
    for key, text, length in zip(keys, texts, lengths):
        completion, step = finished[key]
        assert completion.text == text and step == length  # the scripted text, after its own number of steps
    # the next group of the same prompt starts at variant 0 again
    again = paced.submit(req, sampling)
    while not (done := dict(paced.step())):
        pass
    assert done[again].text == texts[0]
