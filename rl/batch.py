"""Trajectories -> model inputs, and the log-probabilities the model gives to their response tokens.

A trajectory keeps one placeholder token per video / image; the model needs one per vision feature, so each
sequence (prompt + response) is expanded with the grids in its `mm_inputs`. Sequences are right-padded to the
longest one in a micro-batch; the response part of each is gathered back into a (B, Lresp) layout whose mask is
1 on model tokens and 0 on tool-response tokens and padding.

Packing (`pack_plan`, `packed_inputs`) is the alternative to padding: several sequences share one row, each with
its own positions starting at 0 (Qwen2.5-VL's 3-D rope positions worked out per sequence). transformers reads the
restarts of the text positions (the first of four position rows) as sequence boundaries: with sdpa or eager
attention it builds a block-diagonal causal mask, with flash-attention it runs the variable-length kernel. Each
token then sees exactly what it would see alone, and no position is spent on padding.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from rollout.trajectory import IMAGE_PAD_ID, VIDEO_PAD_ID, Trajectory, expand_placeholders

# Concatenated across samples in this order; each is optional.
MM_KEYS = ("pixel_values_videos", "video_grid_thw", "second_per_grid_ts", "pixel_values", "image_grid_thw")
# Each kind of vision input: its pixels and its grids, all that the vision tower reads.
VISION_KINDS = {"video": ("pixel_values_videos", "video_grid_thw"), "image": ("pixel_values", "image_grid_thw")}
PAD_ID = 0  # any non-vision token: padded positions are masked out of attention and of the loss


@dataclass
class Sample:
    """One expanded sequence: ids, where its response starts, its response mask and rollout log-probs."""

    input_ids: list[int]
    response_start: int
    response_mask: list[int]
    rollout_logprobs: list[float]
    mm: dict[str, Any]  # torch tensors
    positions: Any = None  # (4, 1, L) position ids (text row, then rope rows), worked out on the first forward
    # per vision kind ("video", "image") present: a digest of its pixels and grids; equal digests, equal features
    vision_keys: dict[str, str] = field(default_factory=dict)


@dataclass
class Batch:
    """Expanded samples plus (B, Lresp) tensors of the response mask and the rollout log-probs."""

    samples: list[Sample]
    response_mask: Any  # (B, Lresp) float tensor
    rollout_logprobs: Any  # (B, Lresp) float tensor

    def __len__(self) -> int:
        return len(self.samples)

    @property
    def response_length(self) -> int:
        return int(self.response_mask.shape[1])

    def select(self, start: int, stop: int) -> Batch:
        """The samples [start, stop) as a batch (for mini- and micro-batches)."""
        return Batch(self.samples[start:stop], self.response_mask[start:stop], self.rollout_logprobs[start:stop])

    def reorder(self, order: Sequence[int]) -> Batch:
        """The samples in `order` (a permutation of range(len(self)))."""
        idx = list(order)
        return Batch([self.samples[i] for i in idx], self.response_mask[idx], self.rollout_logprobs[idx])


def length_order(lengths: Sequence[int]) -> list[int]:
    """Indices that sort sequences longest first (ties keep their order): consecutive micro-batches then hold
    sequences of similar length, so right-padding wastes little compute. A token-mean loss over the whole batch
    does not depend on the order.

    >>> length_order([5, 90, 7, 88])
    [1, 3, 2, 0]
    """
    return sorted(range(len(lengths)), key=lambda i: -lengths[i])


def pack_plan(lengths: Sequence[int], max_tokens: int) -> list[list[int]]:
    """Group sequence indices into packs of at most `max_tokens` tokens (first-fit decreasing: longest first, each
    into the first pack with room). A sequence longer than `max_tokens` gets a pack of its own; nothing is cut.

    >>> pack_plan([5, 90, 7, 88, 10], 100)
    [[1, 4], [3, 2, 0]]
    >>> pack_plan([120, 30], 100)
    [[0], [1]]
    """
    if max_tokens <= 0:
        raise ValueError(f"pack_plan: max_tokens must be positive, got {max_tokens}")
    packs: list[list[int]] = []
    room: list[int] = []
    for i in length_order(lengths):
        for k, free in enumerate(room):
            if lengths[i] <= free:
                packs[k].append(i)
                room[k] -= lengths[i]
                break
        else:
            packs.append([i])
            room.append(max_tokens - lengths[i])
    return packs


def split_packs(packs: list[list[int]], count: int) -> list[list[int]]:
    """Split packs until there are `count` of them: the pack with the most sequences is halved each time (data-
    parallel ranks must run the same number of forwards, so every rank pads its plan to the largest rank's count).

    >>> split_packs([[1, 2, 5], [3, 4], [0]], 5)
    [[1], [2], [5], [3, 4], [0]]
    """
    packs = [list(p) for p in packs]
    while len(packs) < count:
        k = max(range(len(packs)), key=lambda j: len(packs[j]))
        if len(packs[k]) < 2:
            raise ValueError(f"split_packs: {sum(map(len, packs))} sequences cannot make {count} packs")
        half = len(packs[k]) // 2
        packs[k : k + 1] = [packs[k][:half], packs[k][half:]]
    return packs


@dataclass
class StepPlan:
    """How a rank runs its share of one step: `order` is the order its sequences run in, and `chunks` holds, for
    each chunk (a GRPO mini-batch, one optimizer step each; SFT has one), the [start, stop) range in that order of
    each forward (a padded micro-batch or a pack). `positions`: the sequence positions those forwards compute,
    padding included."""

    order: list[int]
    chunks: list[list[tuple[int, int]]]
    positions: int

    @property
    def ranges(self) -> list[tuple[int, int]]:
        """Every forward's range, chunk after chunk (the passes that only score, e.g. old and reference)."""
        return [r for chunk in self.chunks for r in chunk]

    @property
    def bounds(self) -> list[tuple[int, int]]:
        """Each chunk's [start, stop) in `order`."""
        return [(chunk[0][0], chunk[-1][1]) for chunk in self.chunks]


def plan_step(
    lengths: Sequence[int],
    chunk: int,
    *,
    micro_batch_size: int = 0,
    group_by_length: bool = False,
    pack_max_tokens: int = 0,
    agree_count: Callable[[int], int] | None = None,
) -> StepPlan:
    """Plan a rank's forwards over sequences of `lengths`, cut into consecutive chunks of `chunk` sequences. Every
    sequence stays in its chunk, so each mini-batch trains on the sequences it was given.

    Padding: micro-batches of `micro_batch_size` (0: the whole chunk), longest first within a chunk with
    `group_by_length`. Packing (`pack_max_tokens` > 0): each chunk's packs (`pack_plan`); `agree_count(n)` turns
    this rank's pack count into the count every rank runs (the maximum over ranks; None: a rank on its own), and
    a rank with fewer packs splits its plan (`split_packs`), so the ranks' forwards and their collectives line up.

    >>> plan_step([5, 90, 7, 88], 4, micro_batch_size=2, group_by_length=True)  # padded to 90 and to 7
    StepPlan(order=[1, 3, 2, 0], chunks=[[(0, 2), (2, 4)]], positions=194)
    """
    if chunk <= 0:
        raise ValueError(f"plan_step: chunk must be positive, got {chunk}")
    order: list[int] = []
    chunks: list[list[tuple[int, int]]] = []
    positions = 0
    for first in range(0, len(lengths), chunk):
        members = list(range(first, min(first + chunk, len(lengths))))
        within = [lengths[i] for i in members]
        if pack_max_tokens > 0:
            packs = pack_plan(within, pack_max_tokens)
            groups = split_packs(packs, agree_count(len(packs)) if agree_count else len(packs))
        else:
            ranked = length_order(within) if group_by_length else list(range(len(members)))
            size = micro_batch_size or len(members)
            groups = [ranked[k : k + size] for k in range(0, len(ranked), size)]
        chunks.append([])
        for group in groups:
            chunks[-1].append((len(order), len(order) + len(group)))
            order.extend(members[k] for k in group)
            sizes = [within[k] for k in group]
            positions += sum(sizes) if pack_max_tokens > 0 else max(sizes) * len(sizes)  # a packed row has no pad
    return StepPlan(order, chunks, positions)


@dataclass
class _Memo:
    """What `build_batch` makes once per batch: the tensor of each source array (a GRPO group's video is one array
    shared by its G trajectories, so it becomes one tensor) and the digest of each set of vision tensors."""

    tensors: dict[int, tuple[Any, Any]] = field(default_factory=dict)  # id(array) -> (array, tensor)
    digests: dict[tuple[int, ...], tuple[list, str]] = field(default_factory=dict)

    def tensor(self, value: Any) -> Any:
        import torch

        if id(value) not in self.tensors:  # the array is kept, so its id is not reused while the memo lives
            self.tensors[id(value)] = (value, torch.tensor(value))
        return self.tensors[id(value)][1]

    def vision_keys(self, mm: dict[str, Any]) -> dict[str, str]:
        """Per vision kind present, a digest of its pixels and grids (their shapes, dtypes and bytes)."""
        import torch

        keys = {}
        for kind, names in VISION_KINDS.items():
            if names[0] not in mm:
                continue
            tensors = [mm[n] for n in names if n in mm]
            ident = tuple(id(t) for t in tensors)
            if ident not in self.digests:
                digest = hashlib.blake2b(digest_size=16)
                for t in tensors:
                    digest.update(f"{tuple(t.shape)} {t.dtype};".encode())
                    digest.update(t.contiguous().reshape(-1).view(torch.uint8).numpy())
                self.digests[ident] = (tensors, digest.hexdigest())
            keys[kind] = self.digests[ident][1]
        return keys


def _expand(traj: Trajectory, merge_size: int, memo: _Memo) -> Sample:
    where = f"trajectory {traj.sample_id!r} (group_index {traj.group_index})"
    n_resp = len(traj.response_ids)
    if len(traj.response_mask) != n_resp or len(traj.rollout_logprobs) != n_resp:
        raise ValueError(
            f"{where}: response_ids ({n_resp}), response_mask ({len(traj.response_mask)}) and "
            f"rollout_logprobs ({len(traj.rollout_logprobs)}) must have the same length"
        )
    full = list(traj.prompt_ids) + list(traj.response_ids)
    # Passing positions as the "mask" gives, for every expanded token, the index of the token it came from.
    try:
        ids, src = expand_placeholders(
            full,
            list(range(len(full))),
            video_grid_thw=traj.mm_inputs.get("video_grid_thw"),
            image_grid_thw=traj.mm_inputs.get("image_grid_thw"),
            merge_size=merge_size,
        )
    except ValueError as err:
        raise ValueError(f"{where}: {err}") from err
    n_prompt = len(traj.prompt_ids)
    start = sum(1 for s in src if s < n_prompt)
    if start == 0:
        raise ValueError(f"{where}: empty prompt_ids (the first response token needs a preceding position)")
    resp_src = [s - n_prompt for s in src[start:]]
    mm = {k: memo.tensor(traj.mm_inputs[k]) for k in MM_KEYS if traj.mm_inputs.get(k) is not None}
    n_videos = 0 if "video_grid_thw" not in mm else int(mm["video_grid_thw"].shape[0])
    if "second_per_grid_ts" in mm and int(mm["second_per_grid_ts"].numel()) != n_videos:
        raise ValueError(
            f"{where}: mm_inputs.second_per_grid_ts has {mm['second_per_grid_ts'].numel()} entries "
            f"for {n_videos} videos"
        )
    return Sample(
        input_ids=ids,
        response_start=start,
        response_mask=[int(traj.response_mask[s]) for s in resp_src],
        rollout_logprobs=[float(traj.rollout_logprobs[s]) for s in resp_src],
        mm=mm,
        vision_keys=memo.vision_keys(mm),
    )


def expanded_length(traj: Trajectory, merge_size: int = 2) -> int:
    """The length of `traj`'s forward (`len(input_ids)` of its sample after `build_batch`): prompt and response
    tokens, each vision placeholder counted as its t*h*w / merge_size**2 features. Reads only the grids, so it is
    cheap for every trajectory of a batch (`build_batch` checks that placeholders and grids match).

    >>> video = {"video_grid_thw": [[2, 4, 4]]}  # 5 tokens, the placeholder becoming 2*4*4/4 = 8
    >>> expanded_length(Trajectory("s", 0, [1, VIDEO_PAD_ID, 2], [3, 4], [1, 1], [0.0, 0.0], mm_inputs=video))
    12
    """
    length = len(traj.prompt_ids) + len(traj.response_ids)
    for key in ("video_grid_thw", "image_grid_thw"):
        for t, h, w in traj.mm_inputs.get(key) if traj.mm_inputs.get(key) is not None else []:
            length += int(t * h * w) // merge_size**2 - 1
    return length


def build_batch(trajectories: Sequence[Trajectory], merge_size: int = 2) -> Batch:
    """Expand every trajectory (placeholders -> one token per vision feature, `merge_size` from the model config's
    `vision_config.spatial_merge_size`) and lay out the response masks and rollout log-probs as (B, Lresp)."""
    import torch

    memo = _Memo()
    samples = [_expand(t, merge_size, memo) for t in trajectories]
    width = max((len(s.response_mask) for s in samples), default=0)
    mask = torch.zeros(len(samples), width)
    logprobs = torch.zeros(len(samples), width)
    for i, s in enumerate(samples):
        mask[i, : len(s.response_mask)] = torch.tensor(s.response_mask, dtype=torch.float32)
        logprobs[i, : len(s.rollout_logprobs)] = torch.tensor(s.rollout_logprobs, dtype=torch.float32)
    return Batch(samples, mask, logprobs)


def model_inputs(samples: Sequence[Sample], device: Any = "cpu", share: bool = False) -> dict[str, Any]:
    """Right-padded input_ids / attention_mask and the samples' vision tensors concatenated in order (with `share`,
    each distinct video or image set once: see `_vision_inputs`)."""
    import torch

    length = max(len(s.input_ids) for s in samples)
    input_ids = torch.full((len(samples), length), PAD_ID, dtype=torch.long)
    attention = torch.zeros((len(samples), length), dtype=torch.long)
    for i, s in enumerate(samples):
        input_ids[i, : len(s.input_ids)] = torch.tensor(s.input_ids, dtype=torch.long)
        attention[i, : len(s.input_ids)] = 1
    out: dict[str, Any] = {
        "input_ids": input_ids.to(device),
        "attention_mask": attention.to(device),
        "mm_token_type_ids": token_types(input_ids).to(device),
    }
    out.update(_vision_inputs(samples, device, share))
    return out


def sample_positions(s: Sample, model: Any) -> Any:
    """The sample's (4, 1, L) position ids: the text positions, then the three rope rows of the model's
    `get_rope_index` (`rollout.positions` for Qwen2.5-VL), from the sample's own float32 grids and frame timing, so
    that a bf16 forward (whose inputs FSDP casts) computes nothing from rounded seconds. Worked out once, cached: the
    same for every forward of the sample (policy, old and reference passes)."""
    import torch

    if s.positions is None:
        ids = torch.tensor([s.input_ids], dtype=torch.long)
        grids = {k: s.mm[k] for k in ("image_grid_thw", "video_grid_thw", "second_per_grid_ts") if k in s.mm}
        rope, _ = _unwrap(model).model.get_rope_index(ids, mm_token_type_ids=token_types(ids), **grids)
        text = torch.arange(len(s.input_ids), dtype=rope.dtype).view(1, 1, -1)
        s.positions = torch.cat([text, rope.to(text.device)], 0)
    return s.positions


def padded_positions(samples: Sequence[Sample], model: Any, length: int) -> Any:
    """(3, B, length) rope position ids of right-padded rows (0 on padding), what the model computes itself for
    padded rows, but from the samples' float32 timing (`sample_positions`)."""
    import torch

    out = torch.zeros(3, len(samples), length, dtype=torch.long)
    for i, s in enumerate(samples):
        out[:, i, : len(s.input_ids)] = sample_positions(s, model)[1:, 0]
    return out


def packed_inputs(
    samples: Sequence[Sample], model: Any, device: Any = "cpu", share: bool = False
) -> tuple[dict[str, Any], list[int]]:
    """The samples laid end to end in one row (batch size 1, no attention mask) with four rows of position ids:
    the text positions, then the three rope rows of each sample computed on its own by the model's
    `get_rope_index` (every sample starts at position 0). Returns the inputs and each sample's start column.
    `share`: see `_vision_inputs`."""
    import torch

    starts, offset = [], 0
    for s in samples:
        starts.append(offset)
        offset += len(s.input_ids)
        sample_positions(s, model)
    input_ids = torch.tensor([[t for s in samples for t in s.input_ids]], dtype=torch.long)
    out: dict[str, Any] = {
        "input_ids": input_ids.to(device),
        "position_ids": torch.cat([s.positions for s in samples], -1).to(device),
        "mm_token_type_ids": token_types(input_ids).to(device),
    }
    out.update(_vision_inputs(samples, device, share))
    return out, starts


def _vision_inputs(samples: Sequence[Sample], device: Any, share: bool = False) -> dict[str, Any]:
    """The samples' vision tensors concatenated in sample order (the order of their placeholders).

    With `share`, a kind whose inputs repeat (the G trajectories of a GRPO sample share one video) holds each
    distinct set of pixels once, and `<kind>_rows` maps every grid row (every video or image, in placeholder order)
    to the row of the distinct inputs whose features it takes. The grids and `second_per_grid_ts` stay one row per
    video or image: the rope positions need them all."""
    import torch

    out = {}
    for kind in VISION_KINDS if share else ():
        out.update(_distinct_vision(samples, kind, device))
    for key in MM_KEYS:
        parts = [s.mm[key] for s in samples if key in s.mm]
        if parts and key not in out:  # (the distinct pixels are already there)
            out[key] = torch.cat([p.reshape(-1) if p.dim() == 0 else p for p in parts]).to(device)
    return out


def _distinct_vision(samples: Sequence[Sample], kind: str, device: Any) -> dict[str, Any]:
    """The distinct pixels of one vision kind and `<kind>_rows` (see `_vision_inputs`); {} when none repeat."""
    import torch

    pixels, grid = VISION_KINDS[kind]
    users = [s for s in samples if pixels in s.mm]
    first_row: dict[str, int] = {}  # digest -> its first grid row among the distinct inputs
    distinct, rows, n_rows = [], [], 0
    for s in users:
        key, count = s.vision_keys.get(kind) or f"sample {id(s)}", int(s.mm[grid].shape[0])  # no digest: its own
        if key not in first_row:
            first_row[key], n_rows = n_rows, n_rows + count
            distinct.append(s)
        rows += range(first_row[key], first_row[key] + count)
    if len(distinct) == len(users):
        return {}
    return {
        pixels: torch.cat([s.mm[pixels] for s in distinct]).to(device),
        f"{kind}_rows": torch.tensor(rows, dtype=torch.long, device=device),
    }


def _unwrap(model: Any) -> Any:
    """The Hugging Face model inside a DeepSpeed engine (FSDP2 shards the model in place)."""
    return getattr(model, "module", model)


def token_types(input_ids: Any) -> Any:
    """0 on text, 1 on image and 2 on video placeholder tokens: Qwen2.5-VL's 3D rope positions read these, and
    without them transformers falls back to 1-D positions, which would not be the positions the rollout used."""
    return (input_ids == IMAGE_PAD_ID).long() + 2 * (input_ids == VIDEO_PAD_ID).long()


def micro_batches(batch: Batch, size: int | None) -> Iterator[tuple[int, int]]:
    """[start, stop) ranges of at most `size` samples (all of them when size is None)."""
    size = len(batch) if not size else size
    for start in range(0, len(batch), size):
        yield start, min(start + size, len(batch))


def add_dummy_image(inputs: dict[str, Any], config: Any, every_kind: bool = False) -> dict[str, Any]:
    """Give a micro-batch without vision inputs one blank image, after the end of its first sequence (padded
    rows) or as a sequence of its own at the end of the row (a packed row).

    With FSDP the vision tower's gradients are reduced across ranks: a rank whose micro-batch never ran the tower
    would leave them unset and reduce fewer tensors than the others (a collective mismatch). The blank image sits
    on a masked position after the last real token, so causal attention keeps it out of every real token's
    logits: the log-probs are unchanged and the tower's gradients are exact zeros instead of missing.

    With `every_kind` (DeepSpeed ZeRO-3, which gathers the tower's parameters on every call of it) a blank image is
    added when there is no image and a blank video when there is no video, so every rank calls the tower exactly
    twice per forward. A blank of a kind is only added when no real input of that kind is present, so it is the
    last of its kind in token order and its features go to its own placeholder.
    """
    import torch

    vision = getattr(config, "vision_config", None)
    has_image, has_video = "pixel_values" in inputs, "pixel_values_videos" in inputs
    if vision is None:
        return inputs
    add = ["image"] if not (has_image or has_video) else []
    if every_kind:
        add = [k for k, present in (("image", has_image), ("video", has_video)) if not present]
    if not add:
        return inputs
    merge = int(vision.spatial_merge_size)
    patch_dim = int(vision.in_channels) * int(vision.temporal_patch_size) * int(vision.patch_size) ** 2
    ids = inputs["input_ids"]
    extra = torch.full((ids.shape[0], len(add)), PAD_ID, dtype=ids.dtype, device=ids.device)
    out = dict(inputs)
    if "attention_mask" in inputs:  # padded rows: on masked positions after the first sequence
        end = int(inputs["attention_mask"][0].sum())
        out["attention_mask"] = torch.cat([inputs["attention_mask"], torch.zeros_like(extra)], 1)
        if "position_ids" in inputs:  # masked columns: position 0, as the model gives padding
            pos = inputs["position_ids"]
            out["position_ids"] = torch.cat([pos, pos.new_zeros(*pos.shape[:-1], len(add))], -1)
    else:  # a packed row: a sequence of its own at the end (its positions restart at 0)
        end = ids.shape[1]
        tail = torch.arange(len(add), device=ids.device).view(1, 1, -1).expand(inputs["position_ids"].shape[0], 1, -1)
        out["position_ids"] = torch.cat([inputs["position_ids"], tail.to(inputs["position_ids"].dtype)], -1)
    ids = torch.cat([ids, extra], 1)
    blank = torch.zeros(merge * merge, patch_dim, device=ids.device)
    grid = torch.tensor([[1, merge, merge]], device=ids.device)
    for offset, kind in enumerate(add):
        if kind == "image":
            ids[0, end + offset] = int(config.image_token_id)
            out["pixel_values"], out["image_grid_thw"] = blank, grid
        else:
            ids[0, end + offset] = int(config.video_token_id)
            out["pixel_values_videos"], out["video_grid_thw"] = blank, grid
            if "second_per_grid_ts" in out:
                out["second_per_grid_ts"] = torch.cat([out["second_per_grid_ts"], torch.ones(1, device=ids.device)])
    out.update({"input_ids": ids, "mm_token_type_ids": token_types(ids)})
    return out


def token_logprobs(
    model,
    batch: Batch,
    temperature: float = 1.0,
    micro_batch_size: int | None = None,
    with_entropy: bool = False,
    every_vision_kind: bool = False,
    packed: bool = False,
    ranges: Sequence[tuple[int, int]] | None = None,
    share_video: bool = True,
    chunk_tokens: int = 512,
):
    """log p(token) of every model token (response mask 1) under `model`: a (B, Lresp) tensor, 0 on tool-reply
    tokens and padding, which are never trained on and so get no (vocabulary-sized) logits.

    The logit at position t-1 scores the token at t. Runs `micro_batch_size` samples per forward; gradients
    flow unless called under `torch.no_grad()`. With `with_entropy` returns (logprobs, entropy) where the
    per-token entropy of the sampling distribution is computed without gradient. `every_vision_kind`: see
    `add_dummy_image` (DeepSpeed ZeRO-3 needs the same vision-tower calls on every rank, with or without grad).
    With `packed` each micro-batch's samples share one row (`packed_inputs`) instead of being right-padded.
    `ranges`, [start, stop) pairs covering the batch in order, replace the cut by `micro_batch_size`.
    `share_video`: the vision tower encodes each distinct video (and image) of a micro-batch once; `chunk_tokens`:
    positions per lm_head chunk (see `rl.logprobs`, which runs each forward).
    """
    import torch

    from rl.logprobs import forward_logprobs

    parts, ents = [], []
    for start, stop in ranges if ranges is not None else micro_batches(batch, micro_batch_size):
        lp, ent = forward_logprobs(
            model,
            batch.samples[start:stop],
            batch.response_length,
            temperature,
            with_entropy,
            every_vision_kind,
            packed,
            share_video=share_video,
            chunk_tokens=chunk_tokens,
        )
        parts.append(lp)
        ents.append(ent)
    logprobs = torch.cat(parts) if parts else torch.zeros(0, batch.response_length)
    if with_entropy:
        return logprobs, (torch.cat(ents) if ents else torch.zeros_like(logprobs))
    return logprobs
