"""The `hf` engine: transformers `generate` on CPU (or one GPU), for tests, laptops and small evals.

Requests with the same prompt and media (the G rollouts of one sample at the first turn) are sampled as one batch;
other requests run one by one, which keeps the maths simple (no padding) at the cost of speed. Log-probs are
those of the distribution each token was sampled from, as vLLM's `processed_logprobs` are: the logits after the
sampling's processors (vision tokens suppressed, temperature T, top-k / top-p truncation), log-softmaxed. Without
top-k / top-p that is `log_softmax(logits / T)`, what the trainer recomputes at the same temperature; with them the
truncation shows in `train/rollout_logprob_diff` (docs/scale.md). Greedy decoding (T = 0) reports temperature-1
log-probs (the trainer scores it at T = 1).
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from typing import Any

import numpy as np

from rollout.engine import Completion, GenerationRequest, SamplingParams
from rollout.multimodal import (
    DEFAULT_SECONDS_PER_FRAME,
    VISION_TOKEN_IDS,
    concat_inputs,
    mm_token_type_ids,
    process_images,
    process_video,
)
from rollout.trajectory import expand_placeholders


def _digest(array: np.ndarray) -> str:
    return hashlib.sha1(np.ascontiguousarray(array).tobytes()).hexdigest() + str(array.shape)


def resolve_refs(named_tensors: Any) -> Any:
    """ray.get an object ref (a state dict put in the object store by the trainer); anything else as is."""
    if type(named_tensors).__name__ == "ObjectRef":
        import ray

        return ray.get(named_tensors)
    return named_tensors


def processed_logprobs(scores: Any, tokens: Any) -> Any:
    """log_softmax(scores)[token] in fp32 for (B, N, V) processed `scores` (generate's `output_scores`: the logits
    after temperature, top-k / top-p and token suppression) and (B, N) `tokens`.

    >>> import math, torch
    >>> scores = torch.tensor([[[0.0, 0.0, math.log(3.0), -math.inf]]])  # a suppressed token has -inf
    >>> round(processed_logprobs(scores, torch.tensor([[2]])).item(), 4) == round(math.log(3 / 5), 4)
    True
    """
    import torch

    return torch.log_softmax(scores.float(), dim=-1).gather(-1, tokens.unsqueeze(-1)).squeeze(-1)


class HFEngine:
    """Sampling with `AutoModelForImageTextToText.generate`; implements `rollout.engine.Engine`."""

    def __init__(
        self, model_path: str, dtype: str = "float32", device: str = "cpu", seed: int = 0, cache_size: int = 32
    ):
        import torch
        from transformers import AutoModelForImageTextToText, AutoProcessor

        self.processor = AutoProcessor.from_pretrained(model_path)
        self.tokenizer = self.processor.tokenizer
        from rollout import positions

        self.model = AutoModelForImageTextToText.from_pretrained(model_path, dtype=getattr(torch, dtype))
        positions.install(self.model)  # the rope positions vLLM and the trainer use (rollout.positions)
        self.model.to(device).eval()
        self.device = device
        self.seed = seed
        self.merge_size = int(getattr(self.processor.video_processor, "merge_size", 2))
        self._cache: OrderedDict[str, dict[str, np.ndarray]] = OrderedDict()
        self._cache_size = cache_size
        self._calls = 0

    # ----- media -----
    def _cached(self, key: str, make: Any) -> dict[str, np.ndarray]:
        if key in self._cache:
            self._cache.move_to_end(key)
            return self._cache[key]
        value = self._cache[key] = make()
        while len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        return value

    def _media_keys(self, req: GenerationRequest) -> tuple[list[str], list[str]]:
        vkeys = [f"{req.mm_key}:video:{i}" if req.mm_key else _digest(v) for i, v in enumerate(req.videos)]
        spf = req.video_seconds_per_frame or [DEFAULT_SECONDS_PER_FRAME] * len(req.videos)
        if len(spf) != len(req.videos):
            raise ValueError(f"{len(spf)} video_seconds_per_frame values for {len(req.videos)} videos")
        return [f"{k}@{s}" for k, s in zip(vkeys, spf)], [_digest(im) for im in req.images]

    def model_inputs(self, req: GenerationRequest) -> tuple[list[int], dict[str, np.ndarray]]:
        """The expanded prompt ids and the processed vision inputs (numpy) of one request."""
        vkeys, ikeys = self._media_keys(req)
        spf = req.video_seconds_per_frame or [DEFAULT_SECONDS_PER_FRAME] * len(req.videos)
        parts = [
            self._cached(k, lambda v=v, s=s: process_video(self.processor, v, s))
            for k, v, s in zip(vkeys, req.videos, spf)
        ]
        for k, im in zip(ikeys, req.images):
            parts.append(self._cached(k, lambda im=im: process_images(self.processor, [im])))
        media = concat_inputs(parts)
        ids, _ = expand_placeholders(
            req.prompt_ids,
            video_grid_thw=media.get("video_grid_thw"),
            image_grid_thw=media.get("image_grid_thw"),
            merge_size=self.merge_size,
        )
        return ids, media

    # ----- generation -----
    def _generation_config(self, sampling: SamplingParams, max_new_tokens: int):
        from transformers import GenerationConfig

        eos = list(sampling.stop_token_ids) or self.model.generation_config.eos_token_id
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 151643
        # A fresh config, so a checkpoint's own defaults (repetition penalty, top_k=50, ...) do not leak in.
        return GenerationConfig(
            do_sample=sampling.temperature > 0,
            temperature=sampling.temperature if sampling.temperature > 0 else 1.0,
            top_p=sampling.top_p,
            top_k=sampling.top_k,
            max_new_tokens=max_new_tokens,
            eos_token_id=eos,
            pad_token_id=pad,
            suppress_tokens=list(VISION_TOKEN_IDS),
            return_dict_in_generate=True,
            output_scores=True,
        )

    def _stop_strings(self, prompt_len: int, stop_strings: list[str]):
        """A stopping criterion for stop strings. transformers' own `stop_strings` precomputes tables over the whole
        vocabulary on every `generate` call (about 2 s for Qwen's 151k tokens); decoding each row's last few tokens
        per step is much cheaper here. A string of L characters spans at most L tokens."""
        import torch
        from transformers import StoppingCriteria, StoppingCriteriaList

        if not stop_strings:
            return StoppingCriteriaList()
        tokenizer, window = self.tokenizer, max(len(s) for s in stop_strings) + 1

        class StopOnStrings(StoppingCriteria):
            def __call__(self, input_ids, scores, **kwargs):
                tails = input_ids[:, prompt_len:][:, -window:].tolist()
                done = [any(s in tokenizer.decode(row) for s in stop_strings) for row in tails]
                return torch.tensor(done, dtype=torch.bool, device=input_ids.device)

        return StoppingCriteriaList([StopOnStrings()])

    def _trim(self, ids: list[int], sampling: SamplingParams) -> tuple[list[int], str]:
        """Cut a generated row after its first stop token or stop string; the finish reason."""
        stops = set(sampling.stop_token_ids) or set(np.atleast_1d(self.model.generation_config.eos_token_id))
        text = ""
        longest = max((len(s) for s in sampling.stop_strings), default=0)
        for i, tok in enumerate(ids):
            if tok in stops:
                return ids[: i + 1], "stop"
            if longest:
                text += self.tokenizer.decode([tok])
                tail = text[-(longest + 64) :]
                if any(s in tail for s in sampling.stop_strings):
                    return ids[: i + 1], "stop"
        return ids, "length"

    def _generate_group(self, req: GenerationRequest, count: int, sampling: SamplingParams) -> list[Completion]:
        import torch

        ids, media = self.model_inputs(req)
        input_ids = torch.tensor([ids] * count, device=self.device)
        kwargs = {k: torch.from_numpy(v).to(self.device) for k, v in media.items()}
        for key, grid in (("pixel_values_videos", "video_grid_thw"), ("pixel_values", "image_grid_thw")):
            if key in kwargs:  # one copy of the pixels and grids per row of the batch
                kwargs[key] = kwargs[key].repeat(count, 1)
                kwargs[grid] = kwargs[grid].repeat(count, 1)
        if "second_per_grid_ts" in kwargs:
            kwargs["second_per_grid_ts"] = kwargs["second_per_grid_ts"].repeat(count)
        kwargs["mm_token_type_ids"] = torch.tensor([mm_token_type_ids(ids)] * count, device=self.device)
        with torch.no_grad():
            out = self.model.generate(
                input_ids=input_ids,
                attention_mask=torch.ones_like(input_ids),
                generation_config=self._generation_config(sampling, sampling.max_new_tokens),
                stopping_criteria=self._stop_strings(len(ids), sampling.stop_strings),
                **kwargs,
            )
        new = out.sequences[:, len(ids) :]
        token_logp = processed_logprobs(torch.stack(out.scores, dim=1), new)
        completions = []
        for row in range(count):
            toks, reason = self._trim(new[row].tolist(), sampling)
            completions.append(
                Completion(
                    token_ids=toks,
                    logprobs=token_logp[row, : len(toks)].tolist(),
                    text=self.tokenizer.decode(toks, skip_special_tokens=False),
                    finish_reason=reason,
                )
            )
        return completions

    def generate(self, requests: list[GenerationRequest], sampling: SamplingParams) -> list[Completion]:
        """Sample one completion per request. Identical requests (prompt and media) are batched together."""
        import torch

        seed = sampling.seed if sampling.seed is not None else self.seed + self._calls
        self._calls += 1
        torch.manual_seed(seed)
        groups: dict[tuple, list[int]] = {}
        for i, req in enumerate(requests):
            vkeys, ikeys = self._media_keys(req)
            groups.setdefault((tuple(req.prompt_ids), tuple(vkeys), tuple(ikeys)), []).append(i)
        results: list[Completion | None] = [None] * len(requests)
        for members in groups.values():
            for i, completion in zip(members, self._generate_group(requests[members[0]], len(members), sampling)):
                results[i] = completion
        return results  # type: ignore[return-value]

    # ----- weights -----
    def _expected_keys(self) -> tuple[set[str], bool]:
        """The state dict's keys to load, and whether the output embedding is tied to the input one (then
        `lm_head.weight` may come or not: the embedding is what gets loaded)."""
        expected = set(self.model.state_dict())
        tied = self.model.get_output_embeddings().weight is self.model.get_input_embeddings().weight
        if tied:
            expected.discard("lm_head.weight")
        return expected, tied

    def start_weight_update(self) -> None:
        self._loaded: set[str] = set()
        self._expected, self._tied = self._expected_keys()  # once per update, not once per bucket

    def load_weight_bucket(self, named_tensors: Any) -> None:
        """Load some of the weights (names as in `model.state_dict()`); an unknown name raises KeyError."""
        import torch

        expected, tied = self._expected, self._tied
        state = {k: torch.as_tensor(v) for k, v in resolve_refs(named_tensors).items()}
        if tied:
            state.pop("lm_head.weight", None)
        unexpected = sorted(set(state) - expected)
        if unexpected:
            raise KeyError(f"update_weights: {len(unexpected)} unexpected keys {unexpected[:5]}")
        with torch.no_grad():
            self.model.load_state_dict(state, strict=False)
        self._loaded |= set(state)

    def finish_weight_update(self) -> None:
        """Check that every weight came (KeyError naming the missing ones)."""
        missing = sorted(self._expected - self._loaded)
        if missing:
            raise KeyError(f"update_weights: {len(missing)} missing keys {missing[:5]}")

    def load_checkpoint(self, path: str) -> None:
        """The weights of model folder `path` (same architecture) into the running model: from_pretrained maps the
        saved names to the in-memory ones."""
        from transformers import AutoModelForImageTextToText

        dtype = next(self.model.parameters()).dtype
        self.update_weights(AutoModelForImageTextToText.from_pretrained(path, dtype=dtype).state_dict())

    def update_weights(self, named_tensors: Any) -> None:
        """Load a full state dict (names as in `model.state_dict()`), with `load_state_dict(strict=True)` checks:
        a missing or unexpected key raises KeyError. With tied embeddings `lm_head.weight` may be present or absent."""
        state = resolve_refs(named_tensors)
        expected, tied = self._expected_keys()
        missing = sorted(expected - set(state))
        unexpected = sorted(set(state) - expected - ({"lm_head.weight"} if tied else set()))
        if missing or unexpected:
            raise KeyError(
                f"update_weights: {len(missing)} missing keys {missing[:5]}, {len(unexpected)} unexpected keys "
                f"{unexpected[:5]}"
            )
        self.start_weight_update()
        self.load_weight_bucket(state)
        self.finish_weight_update()
