"""The `hf` engine: transformers `generate` on CPU (or one GPU), for tests, laptops and small evals.

Every `generate` call runs its requests as one batch (chunks of `max_batch_size` rows): prompts of different lengths
are left-padded, with attention mask 0 on the padding, and each row's processed video and image inputs are
concatenated in row order. Qwen2.5-VL's 3D rope positions are computed over each row's unpadded tokens
(`rollout.positions`), and decoding continues each row from its own last position, so a row gets the positions, and
up to float rounding the logits, it would get alone. Identical requests (the G rollouts of one sample at the first
turn) share one processing of their media. Each row stops at its own stop token or stop string and is trimmed after
it; the batch runs until every row has stopped or `max_new_tokens` is reached.

Log-probs are those of the distribution each token was sampled from, as vLLM's `processed_logprobs` are: the logits
after the sampling's processors (vision tokens suppressed, temperature T, top-k / top-p truncation), log-softmaxed.
Without top-k / top-p that is `log_softmax(logits / T)`, what the trainer recomputes at the same temperature; with
them the truncation shows in `train/rollout_logprob_diff` (docs/scale.md). Greedy decoding (T = 0) reports
temperature-1 log-probs (the trainer scores it at T = 1).
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
    """Sampling with `AutoModelForImageTextToText.generate`; implements `rollout.engine.Engine`.

    `model_path`: a model folder; `dtype`: torch dtype name of the weights; `device`: where the model runs; `seed`:
    the seed of the first generate call (later calls add their number); `cache_size`: processed videos and images
    kept for reuse (keyed by the request's `mm_key` or a digest of the pixels); `max_batch_size`: the most requests
    one `generate` of transformers runs as one left-padded batch (a call with more runs them in chunks of this
    size, in order): larger batches amortise each decoding step over more rows, at the cost of memory for the
    padded KV cache and of rows that finish early waiting for the longest.
    """

    def __init__(
        self,
        model_path: str,
        dtype: str = "float32",
        device: str = "cpu",
        seed: int = 0,
        cache_size: int = 32,
        max_batch_size: int = 32,
    ):
        import torch
        from transformers import AutoModelForImageTextToText, AutoProcessor

        if int(max_batch_size) < 1:
            raise ValueError(f"hf engine: max_batch_size (rollout.engine_kwargs) must be >= 1, got {max_batch_size}")
        self.processor = AutoProcessor.from_pretrained(model_path)
        self.tokenizer = self.processor.tokenizer
        from rollout import positions

        self.model = AutoModelForImageTextToText.from_pretrained(model_path, dtype=getattr(torch, dtype))
        positions.install(self.model)  # the rope positions vLLM and the trainer use (rollout.positions)
        self.model.to(device).eval()
        self.device = device
        self.seed = seed
        self.max_batch_size = int(max_batch_size)
        self.merge_size = int(getattr(self.processor.video_processor, "merge_size", 2))
        self._pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 151643
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
        # A fresh config, so a checkpoint's own defaults (repetition penalty, top_k=50, ...) do not leak in.
        return GenerationConfig(
            do_sample=sampling.temperature > 0,
            temperature=sampling.temperature if sampling.temperature > 0 else 1.0,
            top_p=sampling.top_p,
            top_k=sampling.top_k,
            max_new_tokens=max_new_tokens,
            eos_token_id=eos,
            pad_token_id=self._pad_id,
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

    def batch_inputs(self, requests: list[GenerationRequest]) -> tuple[Any, dict[str, Any]]:
        """The model inputs of `requests` as one left-padded batch: (B, L) input_ids, and the generate kwargs:
        attention_mask (0 on the padding), mm_token_type_ids (padded like input_ids) and each row's processed vision
        inputs concatenated in row order. Identical requests share one processing of their media and prompt."""
        import torch

        memo: dict[tuple, tuple[list[int], dict[str, np.ndarray]]] = {}
        rows = []
        for req in requests:
            key = (tuple(req.prompt_ids), *map(tuple, self._media_keys(req)))
            if key not in memo:
                memo[key] = self.model_inputs(req)
            rows.append(memo[key])
        width = max(len(ids) for ids, _ in rows)
        pads = [width - len(ids) for ids, _ in rows]
        ids = [[self._pad_id] * p + row for p, (row, _) in zip(pads, rows)]
        kwargs = {k: torch.from_numpy(v).to(self.device) for k, v in concat_inputs([m for _, m in rows]).items()}
        kwargs["attention_mask"] = torch.tensor([[0] * p + [1] * (width - p) for p in pads], device=self.device)
        types = [[0] * p + mm_token_type_ids(row) for p, (row, _) in zip(pads, rows)]
        kwargs["mm_token_type_ids"] = torch.tensor(types, device=self.device)
        return torch.tensor(ids, device=self.device), kwargs

    def _generate_batch(self, requests: list[GenerationRequest], sampling: SamplingParams) -> list[Completion]:
        import torch

        input_ids, kwargs = self.batch_inputs(requests)
        width = input_ids.shape[1]
        with torch.no_grad():
            out = self.model.generate(
                input_ids=input_ids,
                generation_config=self._generation_config(sampling, sampling.max_new_tokens),
                stopping_criteria=self._stop_strings(width, sampling.stop_strings),
                **kwargs,
            )
        new = out.sequences[:, width:]
        token_logp = processed_logprobs(torch.stack(out.scores, dim=1), new)
        completions = []
        for row in range(len(requests)):
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
        """Sample one completion per request: all requests as one left-padded batch (chunks of `max_batch_size`
        rows), each row stopped and trimmed on its own, so that a row gets what it would get alone."""
        import torch

        seed = sampling.seed if sampling.seed is not None else self.seed + self._calls
        self._calls += 1
        torch.manual_seed(seed)
        results: list[Completion] = []
        for start in range(0, len(requests), self.max_batch_size):
            results += self._generate_batch(requests[start : start + self.max_batch_size], sampling)
        return results

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
