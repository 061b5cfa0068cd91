"""The episode and the trajectory: what one rollout of one sample starts from, and what it produced. Plain types
that every package may import.

Rewards read `final_text`, `turns` and `tool_calls`; the trainer reads the token ids, the mask and the multimodal
inputs. Token ids are kept with *unexpanded* vision placeholders (one `<|video_pad|>` per video, one
`<|image_pad|>` per image), which is what every engine and the chat template agree on; the trainer expands them
with the grid sizes in `mm_inputs` (see `rollout.multimodal.expand_placeholders`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class Episode:
    """What one episode needs: the prompt, the video the tools see, and where the trajectory belongs.

    The G episodes of a group share `video` and `video_inputs` (decoded and processed once per sample).
    """

    prompt_ids: list[int]  # the chat prompt with unexpanded placeholders, ending with the assistant cue
    video: Any = None  # envs.base.Video (frames, timestamps, key), or None for a sample without video
    # The engine's cache key for the video's vision features; defaults to the video's own `key`.
    mm_key: str = ""
    # The processed video for the trainer (pixel_values_videos, video_grid_thw, second_per_grid_ts), passed on as is
    # to the trajectory's mm_inputs: shared by the group, never copied.
    video_inputs: dict[str, Any] = field(default_factory=dict)
    sample_id: str = ""
    group_index: int = 0  # which of the G rollouts of this sample
    record: dict[str, Any] = field(default_factory=dict)  # the sample record it came from

    def __post_init__(self):
        if not self.mm_key and self.video is not None:
            self.mm_key = getattr(self.video, "key", "") or ""


@dataclass
class ToolCall:
    """One call the model made, and what came back."""

    name: str
    arguments: dict[str, Any]
    ok: bool  # False when the call was malformed, unknown, timed out or the tool failed
    response: str  # the text returned to the model (an error text when ok is False)
    num_images: int = 0  # images the tool returned
    dropped_images: int = 0  # of those, how many the conversation's image limit (rollout.max_images) left out
    error: str | None = None  # short machine-readable reason: "bad_json", "unknown_tool", "bad_arguments", ...
    latency_s: float = 0.0
    cached: bool = False


@dataclass
class Turn:
    """One assistant turn: the text it generated, and the tool calls it made (if any)."""

    text: str
    tool_calls: list[ToolCall] = field(default_factory=list)


@dataclass
class Trajectory:
    sample_id: str
    group_index: int  # which of the G rollouts of this sample
    prompt_ids: list[int]
    response_ids: list[int]  # model tokens and tool-response tokens after the prompt, in order
    response_mask: list[int]  # 1 on model tokens, 0 on tool-response tokens (same length as response_ids)
    rollout_logprobs: list[float]  # engine log-probs, one per response token (0.0 on tool tokens)
    turns: list[Turn] = field(default_factory=list)
    final_text: str = ""  # text of the last assistant turn
    finish_reason: str = ""  # "answer" | "stop" | "length" | "max_turns" | "video_error"
    # Processed multimodal tensors for the trainer (numpy arrays): pixel_values_videos, video_grid_thw,
    # second_per_grid_ts, pixel_values, image_grid_thw. Empty when the sample has no video.
    mm_inputs: dict[str, Any] = field(default_factory=dict)
    record: dict[str, Any] = field(default_factory=dict)  # the sample record it came from
    timings: dict[str, float] = field(default_factory=dict)  # seconds: "generate", "tools"

    @property
    def tool_calls(self) -> list[ToolCall]:
        return [call for turn in self.turns for call in turn.tool_calls]

    @property
    def num_model_tokens(self) -> int:
        return int(sum(self.response_mask))


IMAGE_PAD_ID = 151655
VIDEO_PAD_ID = 151656


def expand_placeholders(
    ids: list[int],
    mask: list[int] | None = None,
    video_grid_thw: Any = None,
    image_grid_thw: Any = None,
    merge_size: int = 2,
) -> tuple[list[int], list[int] | None]:
    """Repeat each `<|video_pad|>` / `<|image_pad|>` placeholder as many times as its vision features need.

    The k-th video placeholder becomes t*h*w / merge_size**2 copies, with (t, h, w) the k-th row of
    `video_grid_thw` (likewise for images). The mask value of a placeholder is repeated with it.

    >>> expand_placeholders([1, VIDEO_PAD_ID, 2], [0, 0, 1], video_grid_thw=[[1, 2, 4]])
    ([1, 151656, 151656, 2], [0, 0, 0, 1])
    """

    def sizes(grid: Any) -> list[int]:
        return [] if grid is None else [int(t * h * w) // merge_size**2 for t, h, w in grid]

    counts = {VIDEO_PAD_ID: sizes(video_grid_thw), IMAGE_PAD_ID: sizes(image_grid_thw)}
    kind = {VIDEO_PAD_ID: "video", IMAGE_PAD_ID: "image"}
    used = {VIDEO_PAD_ID: 0, IMAGE_PAD_ID: 0}
    out_ids: list[int] = []
    out_mask: list[int] | None = [] if mask is not None else None
    for i, tok in enumerate(ids):
        n = 1
        if tok in counts:
            k = used[tok]
            if k >= len(counts[tok]):
                raise ValueError(f"more {kind[tok]} placeholders than grids")
            n, used[tok] = counts[tok][k], k + 1
        out_ids.extend([tok] * n)
        if out_mask is not None:
            out_mask.extend([mask[i]] * n)
    for tok, k in used.items():
        if k != len(counts[tok]):
            raise ValueError(f"{len(counts[tok])} {kind[tok]} grids for {k} placeholders")
    return out_ids, out_mask
