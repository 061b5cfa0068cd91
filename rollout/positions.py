"""Qwen2.5-VL's 3D rope positions, computed once for every engine and the trainer.

vLLM (`Qwen2_5_VLForConditionalGeneration.get_mrope_input_positions`) and the original Qwen2.5-VL code place a
vision block's tokens at (t * second_per_grid_ts * tokens_per_second, row, column) after the text before it, with
the temporal index truncated to an integer after the product, and start the text after a block at the block's
largest position + 1. transformers 5.10's `get_rope_index` differs for videos: it truncates `second_per_grid_ts`
before the product (0.66 s becomes 0) and starts the text after a block at max(rows, columns), ignoring the
temporal extent. A trajectory scored under other positions than it was sampled with is trained on a different
sequence, so `install(model)` puts this computation in place of the model's own `get_rope_index`: the `hf` engine
samples with it, the trainer scores with it, and vLLM already computes the same (tests/rollout/test_vllm_*).
"""

from __future__ import annotations

import types
from typing import Any

import numpy as np

from rollout.trajectory import IMAGE_PAD_ID, VIDEO_PAD_ID


def mrope_positions(
    ids: Any,
    image_grid_thw: Any = None,
    video_grid_thw: Any = None,
    second_per_grid_ts: Any = None,
    spatial_merge_size: int = 2,
    tokens_per_second: float = 2.0,
) -> tuple[np.ndarray, int]:
    """(3, len(ids)) positions of expanded token ids and the rope delta (largest position + 1 - length).

    Each run of `<|image_pad|>` / `<|video_pad|>` tokens is one image / video, in the order of the grids; a video's
    temporal step is second_per_grid_ts * tokens_per_second (1 s per grid when not given).

    >>> pos, delta = mrope_positions([7, VIDEO_PAD_ID, VIDEO_PAD_ID, 8], video_grid_thw=[[2, 2, 2]],
    ...                              second_per_grid_ts=[1.5], spatial_merge_size=2, tokens_per_second=1)
    >>> pos.tolist(), delta
    ([[0, 1, 2, 3], [0, 1, 1, 3], [0, 1, 1, 3]], 0)
    """
    ids = np.asarray(ids).reshape(-1)
    grids = {IMAGE_PAD_ID: iter(_rows(image_grid_thw)), VIDEO_PAD_ID: iter(_rows(video_grid_thw))}
    seconds = iter(
        np.asarray(second_per_grid_ts, dtype=np.float64).reshape(-1).tolist() if second_per_grid_ts is not None else []
    )
    parts: list[np.ndarray] = []
    next_pos = start = 0
    for offset, kind in _blocks(ids):
        text = np.broadcast_to(np.arange(offset - start), (3, offset - start)) + next_pos
        parts.append(text)
        next_pos += offset - start
        try:
            t, h, w = next(grids[kind])
        except StopIteration:
            kind_name = "image" if kind == IMAGE_PAD_ID else "video"
            raise ValueError(f"more {kind_name} placeholders than grids") from None
        h, w = h // spatial_merge_size, w // spatial_merge_size
        grid = np.indices((t, h, w)).reshape(3, -1).astype(np.float64)
        if kind == VIDEO_PAD_ID:
            factor = next(seconds, 1.0) * tokens_per_second
            if factor != 1.0:
                grid[0] = grid[0] * factor
        block = grid.astype(np.int64) + next_pos
        parts.append(block)
        next_pos = int(block.max()) + 1
        start = offset + t * h * w
    parts.append(np.broadcast_to(np.arange(len(ids) - start), (3, len(ids) - start)) + next_pos)
    positions = np.concatenate(parts, axis=1).astype(np.int64)
    return positions, int(positions.max(initial=-1)) + 1 - len(ids)


def _rows(grid: Any) -> list[tuple[int, int, int]]:
    if grid is None:
        return []
    return [tuple(int(x) for x in row) for row in np.asarray(grid).reshape(-1, 3)]


def _blocks(ids: np.ndarray) -> list[tuple[int, int]]:
    """(offset, token) of the first token of each run of vision placeholders."""
    vision = np.isin(ids, (IMAGE_PAD_ID, VIDEO_PAD_ID))
    starts = np.flatnonzero(vision & np.concatenate([[True], (ids[1:] != ids[:-1]) | ~vision[:-1]]))
    return [(int(i), int(ids[i])) for i in starts]


def get_rope_index(
    self: Any,
    input_ids: Any,
    mm_token_type_ids: Any = None,
    image_grid_thw: Any = None,
    video_grid_thw: Any = None,
    second_per_grid_ts: Any = None,
    attention_mask: Any = None,
    **kwargs: Any,
) -> tuple[Any, Any]:
    """`mrope_positions` with the signature and batching of transformers' `get_rope_index`: (3, B, L) positions
    (0 on padding) and (B, 1) deltas. Grids are consumed row by row in batch order."""
    import torch

    vision = self.config.vision_config
    merge, tps = int(vision.spatial_merge_size), float(getattr(vision, "tokens_per_second", 1.0))
    images, videos = _rows(_cpu(image_grid_thw)), _rows(_cpu(video_grid_thw))
    seconds = [] if second_per_grid_ts is None else np.asarray(_cpu(second_per_grid_ts)).reshape(-1).tolist()
    out = torch.zeros(3, *input_ids.shape, dtype=torch.long, device=input_ids.device)
    deltas = []
    for b, row in enumerate(input_ids.cpu().numpy()):
        keep = np.ones(len(row), bool) if attention_mask is None else attention_mask[b].cpu().numpy().astype(bool)
        ids = row[keep]
        n_img, n_vid = _count_blocks(ids)
        pos, delta = mrope_positions(ids, images[:n_img], videos[:n_vid], seconds[:n_vid], merge, tps)
        images, videos, seconds = images[n_img:], videos[n_vid:], seconds[n_vid:]
        out[:, b, torch.from_numpy(keep).to(input_ids.device)] = torch.from_numpy(pos).to(input_ids.device)
        deltas.append(delta)
    return out, torch.tensor(deltas, device=input_ids.device).view(-1, 1)


def _count_blocks(ids: np.ndarray) -> tuple[int, int]:
    kinds = [k for _, k in _blocks(ids)]
    return kinds.count(IMAGE_PAD_ID), kinds.count(VIDEO_PAD_ID)


def _cpu(value: Any) -> Any:
    """A tensor as numpy (bf16, which numpy lacks, through float32); anything else as it is."""
    if not hasattr(value, "detach"):
        return value
    value = value.detach().cpu()
    return (value.float() if value.is_floating_point() else value).numpy()


def install(model: Any) -> Any:
    """Make `model` (a Qwen2.5-VL for-generation model or its inner model) compute rope positions with
    `get_rope_index` above; other architectures are left as they are. Returns the model."""
    inner = getattr(model, "model", model)
    if hasattr(inner, "get_rope_index") and type(inner).__name__.startswith("Qwen2_5_VL"):
        inner.get_rope_index = types.MethodType(get_rope_index, inner)
    return model
