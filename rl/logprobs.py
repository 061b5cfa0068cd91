"""One forward of the policy over a micro-batch: the log-probability (and on request the entropy) of each model
token, computed lean. `rl.batch.token_logprobs` runs it once per micro-batch or pack.

Two things keep the forward cheap:

- **Each distinct video is encoded once** (`share_video`). The G trajectories of a GRPO sample carry the same
  frames; within a micro-batch (padded rows or a packed row) the vision tower runs on the distinct videos (and
  images) only, and every placeholder takes the features of its own video. The language model then gets the token
  embeddings with those features filled in and the multimodal rope positions of the model's own forward (its
  `get_rope_index`). A feature used by several rows receives the gradient of every use. When nothing repeats, the
  model's own forward runs unchanged.
- **Logits only where a model token is scored.** The last hidden state is gathered at the positions that score a
  model token (per row, that row's own), and the lm_head runs over them in chunks of `chunk_tokens` positions with
  the normaliser (logsumexp) taken in fp32 per chunk. With gradients each chunk is recomputed in the backward
  (`torch.utils.checkpoint`), so no chunk's vocabulary-sized logits are kept for it.

All of it runs inside one call of the Hugging Face model (its `forward` swapped for the call): FSDP2 gathers the
root shard group (embeddings, vision tower, final norm, lm_head) around that call and reduces its gradients after
the backward, DeepSpeed's engine and ZeRO-3 hooks see an ordinary forward, and the decoder layers keep their own
shard groups and activation checkpointing.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import Any

from rl.batch import VISION_KINDS, Sample, _unwrap, add_dummy_image, model_inputs, packed_inputs, padded_positions

CHUNK_TOKENS = 512  # positions per lm_head chunk: 512 x a 152k vocabulary is ~311 MB of fp32 logits
# Architectures whose forward is exactly "embeddings with the placeholders filled, rope positions, language model"
# (Qwen3-VL also feeds deep-stack vision features to inner layers, which the shared path would leave out): others
# run their own forward, one encoding per trajectory.
SHARED_ENCODING_MODELS = ("qwen2_5_vl",)


def forward_logprobs(
    model,
    samples: Sequence[Sample],
    width: int,
    temperature: float = 1.0,
    with_entropy: bool = False,
    every_vision_kind: bool = False,
    packed: bool = False,
    share_video: bool = True,
    chunk_tokens: int = CHUNK_TOKENS,
):
    """(len(samples), width) log-probs of each sample's model tokens (0 on tool tokens and padding) and, with
    `with_entropy`, their entropies (without gradient; else None). The arguments are `token_logprobs`'."""
    import torch

    hf = _unwrap(model)
    device = next(model.parameters()).device
    share = share_video and getattr(hf.config, "model_type", "") in SHARED_ENCODING_MODELS
    if packed:  # one row: sample i starts at column starts[i]
        inputs, starts = packed_inputs(samples, model, device, share=share)
    else:  # one right-padded row per sample
        inputs, starts = model_inputs(samples, device, share=share), [0] * len(samples)
        if hasattr(hf.model, "get_rope_index"):  # 3D rope: from float32 timing, before any bf16 input cast
            inputs["position_ids"] = padded_positions(samples, model, inputs["input_ids"].shape[1]).to(device)
    if torch.is_grad_enabled() or every_vision_kind:
        inputs = add_dummy_image(inputs, hf.config, every_kind=every_vision_kind)
    which, where, rows, cols, targets = _scored_positions(samples, starts, packed, device)

    def forward(**kwargs):
        hidden = _last_hidden_state(hf.model, kwargs)[rows, cols]
        return chunked_logprobs(hf.lm_head, hidden, targets, temperature, with_entropy, chunk_tokens)

    with _as_forward(hf, forward):
        logp, entropy = model(**inputs)
    out = torch.zeros(len(samples), width, device=device).index_put((which, where), logp)
    if entropy is not None:
        entropy = torch.zeros(len(samples), width, device=device).index_put((which, where), entropy)
    return out, entropy


def scoring_temperature(sampling_temperature: float) -> float:
    """The temperature the trainer scores tokens at: the rollout's sampling temperature, or 1 for greedy decoding
    (temperature 0), whose engines report the model's own (temperature-1) log-probs.

    >>> scoring_temperature(0.7), scoring_temperature(0.0)
    (0.7, 1.0)
    """
    return float(sampling_temperature) if sampling_temperature > 0 else 1.0


def chunked_logprobs(
    head,
    hidden,
    targets,
    temperature: float = 1.0,
    with_entropy: bool = False,
    chunk_tokens: int = CHUNK_TOKENS,
):
    """log softmax(head(hidden) / temperature)[target] for (N, H) `hidden` and (N,) `targets`, `chunk_tokens`
    positions at a time, in fp32; with `with_entropy` also each position's entropy (no gradient), else None.
    With gradients on, each chunk's logits are recomputed in the backward instead of kept."""
    import torch
    from torch.utils.checkpoint import checkpoint

    if chunk_tokens <= 0:
        raise ValueError(f"chunked_logprobs: chunk_tokens must be positive, got {chunk_tokens}")
    if not temperature > 0:  # greedy decoding is scored at 1 by the caller (`scoring_temperature`)
        raise ValueError(f"chunked_logprobs: temperature must be positive, got {temperature}")
    if len(targets) == 0:
        empty = hidden.new_zeros(0, dtype=torch.float32)
        return empty, (empty if with_entropy else None)
    logps, entropies = [], []
    for start in range(0, len(targets), chunk_tokens):
        args = (head, hidden[start : start + chunk_tokens], targets[start : start + chunk_tokens])
        if torch.is_grad_enabled():
            logp, entropy = checkpoint(_chunk, *args, temperature, with_entropy, use_reentrant=False)
        else:
            logp, entropy = _chunk(*args, temperature, with_entropy)
        logps.append(logp)
        entropies.append(entropy)
    return torch.cat(logps), torch.cat(entropies) if with_entropy else None


def _chunk(head, hidden, targets, temperature: float, with_entropy: bool):
    import torch

    logits = head(hidden).float()  # one chunk in fp32 (a no-op in fp32 compute)
    if temperature != 1.0:
        logits = logits / temperature
    norm = torch.logsumexp(logits, dim=-1)
    logp = logits.gather(-1, targets.unsqueeze(-1)).squeeze(-1) - norm
    entropy = None
    if with_entropy:
        with torch.no_grad():  # -sum p log p over the centred log-probs (no cancellation against the normaliser)
            logp_all = logits - norm.unsqueeze(-1)
            entropy = -(logp_all.exp() * logp_all).sum(-1)
    return logp, entropy


def _scored_positions(samples: Sequence[Sample], starts: Sequence[int], packed: bool, device: Any):
    """For every model token (response mask 1), as long tensors: its sample, its response column, the row and
    column of the position that scores it (the one before it) and the token itself."""
    import torch

    which, where, rows, cols, targets = [], [], [], [], []
    for i, s in enumerate(samples):
        first = starts[i] + s.response_start - 1  # the column that scores the first response token
        for j, m in enumerate(s.response_mask):
            if m:
                which.append(i)
                where.append(j)
                rows.append(0 if packed else i)
                cols.append(first + j)
                targets.append(s.input_ids[s.response_start + j])
    return tuple(torch.tensor(v, dtype=torch.long, device=device) for v in (which, where, rows, cols, targets))


def _last_hidden_state(inner, inputs: dict[str, Any]):
    """The language model's last hidden state for `inputs`: the model's own forward, or, when a vision kind repeats
    (`<kind>_rows`, see `rl.batch._vision_inputs`), the same computed from the distinct inputs' features."""
    if not any(f"{kind}_rows" in inputs for kind in VISION_KINDS):
        return inner(**inputs, use_cache=False).last_hidden_state
    embeds = _shared_embeddings(inner, inputs)
    positions = inputs.get("position_ids")  # a packed row brings its own
    if positions is None:  # what the model's forward computes for padded rows
        positions, _ = inner.get_rope_index(
            inputs["input_ids"],
            mm_token_type_ids=inputs["mm_token_type_ids"],
            image_grid_thw=inputs.get("image_grid_thw"),
            video_grid_thw=inputs.get("video_grid_thw"),
            second_per_grid_ts=inputs.get("second_per_grid_ts"),
            attention_mask=inputs.get("attention_mask"),
        )
    out = inner.language_model(
        inputs_embeds=embeds, attention_mask=inputs.get("attention_mask"), position_ids=positions, use_cache=False
    )
    return out.last_hidden_state


def _shared_embeddings(inner, inputs: dict[str, Any]):
    """Token embeddings with every image and video placeholder filled by its features, the vision tower run once
    per kind on the distinct inputs (images first, as in the model's forward)."""
    import torch

    ids = inputs["input_ids"]
    embeds = inner.get_input_embeddings()(ids)
    for slot, (kind, encode) in enumerate((("image", inner.get_image_features), ("video", inner.get_video_features))):
        pixels, grid = VISION_KINDS[kind]
        if pixels not in inputs:
            continue
        grids, rows = inputs[grid], inputs.get(f"{kind}_rows")
        if rows is not None:
            rows = rows.tolist()
            first = {}  # distinct row -> the first video / image that uses it
            for k, r in enumerate(rows):
                first.setdefault(r, k)
            grids = grids[[first[r] for r in range(len(first))]]
        features = encode(inputs[pixels], grids).pooler_output  # one tensor per distinct video / image
        if rows is not None:
            features = [features[r] for r in rows]  # repeated uses share the tensor (and sum its gradient)
        features = torch.cat(features).to(embeds.device, embeds.dtype)
        mask = inner.get_placeholder_mask(ids, inputs_embeds=embeds, **{f"{kind}_features": features})[slot]
        embeds = embeds.masked_scatter(mask, features)
    return embeds


@contextlib.contextmanager
def _as_forward(module, forward):
    """Call `forward` in place of `module.forward` inside `module(...)`, so that the hooks around the module's call
    (FSDP2's gathering of the root shard group, DeepSpeed's) run around it."""
    module.forward = forward
    try:
        yield
    finally:
        del module.forward
