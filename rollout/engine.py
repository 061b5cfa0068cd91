"""The engine contract: generate completions with token ids and log-probs, and take new weights.

Requests carry token ids with *unexpanded* vision placeholders plus the raw media (frames, images); each backend
prepares the media its own way (the `hf` backend with the model's processor, `vllm` with its multimodal input
processing). Backends are looked up by name and imported on use, so vllm loads only when chosen.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np


@dataclass
class SamplingParams:
    max_new_tokens: int = 256
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0  # 0 = off
    stop_token_ids: list[int] = field(default_factory=list)  # generation ends after one of these
    stop_strings: list[str] = field(default_factory=list)  # e.g. "</tool_call>", "</answer>"
    seed: int | None = None


@dataclass
class GenerationRequest:
    prompt_ids: list[int]  # the conversation so far, vision placeholders unexpanded
    videos: list[np.ndarray] = field(default_factory=list)  # each T x H x W x 3 uint8, in placeholder order
    images: list[np.ndarray] = field(default_factory=list)  # each H x W x 3 uint8, in placeholder order
    mm_key: str = ""  # identity of the media, so a backend can reuse processed pixels across requests
    # seconds between sampled frames, one per video (Qwen2.5-VL's temporal rope uses it); empty = 0.5 s default
    video_seconds_per_frame: list[float] = field(default_factory=list)


@dataclass
class Completion:
    token_ids: list[int]
    logprobs: list[float]  # log-prob of each generated token at the sampling temperature (1 when greedy)
    text: str
    finish_reason: str  # "stop" (a stop token or string) | "length"


class Engine(Protocol):
    """What the rollout worker drives. Weights arrive whole (`update_weights`) or streamed in buckets
    (`start_weight_update`, `load_weight_bucket` per bucket, `finish_weight_update`); an engine without the
    streaming methods gets the buckets gathered into one `update_weights` call (`rollout.worker`)."""

    def generate(self, requests: list[GenerationRequest], sampling: SamplingParams) -> list[Completion]: ...

    def update_weights(self, named_tensors: dict[str, Any]) -> None: ...


class StreamingEngine(Engine, Protocol):
    """An engine that also takes requests one by one while it runs others (continuous batching, vLLM): the
    asynchronous tool loop then submits a conversation's next turn as soon as its tool replies are in, into the
    batch already decoding, and gets each completion as soon as it is done, not when its batch is. The loop
    drains every submitted request before it returns (so weights never change under a running request)."""

    def submit(self, request: GenerationRequest, sampling: SamplingParams) -> str:
        """Queue one request (sampled with `sampling`, its seed included); returns its key."""
        ...

    def step(self) -> list[tuple[str, Completion]]:
        """Run the engine one scheduling step; (key, completion) of each request that finished in it."""
        ...

    def abort(self, keys: list[str]) -> None:
        """Drop submitted requests (the loop calls it when it fails with requests still running)."""
        ...


def weight_buckets(named_tensors: Iterable[tuple[str, Any]], bucket_bytes: int) -> Iterator[dict[str, Any]]:
    """Group (name, tensor) pairs, in order, into dicts of at most `bucket_bytes` (a larger tensor goes alone).

    >>> import torch
    >>> pairs = [("a", torch.zeros(4)), ("b", torch.zeros(4)), ("c", torch.zeros(8))]
    >>> [list(b) for b in weight_buckets(pairs, 32)]
    [['a', 'b'], ['c']]
    """
    bucket: dict[str, Any] = {}
    size = 0
    for name, tensor in named_tensors:
        nbytes = tensor.numel() * tensor.element_size()
        if bucket and size + nbytes > bucket_bytes:
            yield bucket
            bucket, size = {}, 0
        bucket[name] = tensor
        size += nbytes
    if bucket:
        yield bucket


ENGINES: dict[str, str] = {
    "hf": "rollout.hf_engine:HFEngine",
    "vllm": "rollout.vllm_engine:VLLMEngine",
}


def make_engine(name: str, model_path: str, **kwargs: Any) -> Engine:
    if name not in ENGINES:
        raise KeyError(f"unknown engine {name!r}; available: {', '.join(sorted(ENGINES))}")
    module, _, cls = ENGINES[name].partition(":")
    return getattr(importlib.import_module(module), cls)(model_path, **kwargs)
