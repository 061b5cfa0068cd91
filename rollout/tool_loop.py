"""The multi-turn tool loop: generate, parse `<tool_call>`s, call the tools, append `<tool_response>`s, repeat.

`run_episodes` takes a list of `Episode`s (prompt, video, processed video inputs, sample id, group index, record)
and advances their conversations turn by turn: one `engine.generate` call per turn across all the
conversations still running, and the tool calls of a turn dispatched together with `tools.call_many`. Model tokens
get mask 1 and their engine log-probs; the tokens we insert (tool responses and the chat-format glue around them)
get mask 0 and log-prob 0.0, so the trainer never learns to predict tool output.

The text format is the Qwen2.5 one of our chat template (common/templates/qwen2_5_vl_tools.jinja):

    <tool_call>
    {"name": "pose_estimation", "arguments": {"frames": [0, 4]}}
    </tool_call><|im_end|>
    <|im_start|>user
    <tool_response>
    ...
    </tool_response><|im_end|>
    <|im_start|>assistant
"""

from __future__ import annotations

import dataclasses
import json
import re
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from rollout.engine import GenerationRequest, SamplingParams
from rollout.trajectory import Episode, ToolCall, Trajectory, Turn

__all__ = ["Episode", "format_tool_response", "parse_tool_calls", "run_episode", "run_episodes"]

IM_END = "<|im_end|>"
TURN_STOP_STRINGS = ("</tool_call>", "</answer>")
IMAGE_PLACEHOLDER = "<|vision_start|><|image_pad|><|vision_end|>"
_TAG = re.compile(r"<tool_call>(.*?)(</tool_call>|$)", re.DOTALL)
_ANSWER = re.compile(r"<answer>.*?</answer>", re.DOTALL)


def parse_tool_calls(text: str) -> list[tuple[dict | None, str | None]]:
    """Every `<tool_call>...</tool_call>` in `text`, each as (call, None) or (None, "kind: readable message").

    A call is {"name": str, "arguments": dict}; arguments given as a JSON string are decoded.

    >>> parse_tool_calls('<tool_call>{"name": "pose", "arguments": {"frame": 3}}</tool_call>')
    [({'name': 'pose', 'arguments': {'frame': 3}}, None)]
    >>> parse_tool_calls('<tool_call>{"name": pose}</tool_call>')[0][1].split(':')[0]
    'bad_json'
    """
    out: list[tuple[dict | None, str | None]] = []
    for match in _TAG.finditer(text):
        body, closing = match.group(1).strip(), match.group(2)
        if not closing:
            out.append((None, "unclosed_tag: <tool_call> has no closing </tool_call>"))
            continue
        out.append(_parse_one(body))
    return out


def _parse_one(body: str) -> tuple[dict | None, str | None]:
    try:
        obj = json.loads(body)
    except json.JSONDecodeError as err:
        return None, f"bad_json: the tool call is not valid JSON ({err.msg} at char {err.pos})"
    if not isinstance(obj, dict):
        return None, f"not_object: the tool call must be a JSON object, got {type(obj).__name__}"
    name = obj.get("name")
    if not isinstance(name, str) or not name:
        return None, "missing_name: the tool call needs a string field 'name'"
    args = obj.get("arguments", {})
    if isinstance(args, str):
        try:
            args = json.loads(args) if args.strip() else {}
        except json.JSONDecodeError as err:
            return None, f"bad_json: 'arguments' is a string that is not valid JSON ({err.msg})"
    if not isinstance(args, dict):
        return None, f"bad_arguments: 'arguments' must be a JSON object, got {type(args).__name__}"
    return {"name": name, "arguments": args}, None


def format_tool_response(results: list[Any]) -> str:
    """The user turn that carries tool results back: one `<tool_response>` block per call, then the assistant cue.

    Each result is a ToolResult-like object (`text`, `images`); each image gets a vision placeholder in its block.

    >>> from envs.base import ToolResult
    >>> format_tool_response([ToolResult("a"), ToolResult("b")])
    '<|im_start|>user\\n<tool_response>\\na\\n</tool_response>\\n<tool_response>\\nb\\n</tool_response><|im_end|>\\n<|im_start|>assistant\\n'
    """
    blocks = "".join(
        "\n<tool_response>\n" + IMAGE_PLACEHOLDER * len(getattr(r, "images", []) or []) + r.text + "\n</tool_response>"
        for r in results
    )
    return "<|im_start|>user" + blocks + "<|im_end|>\n<|im_start|>assistant\n"


@dataclass
class _ErrorResult:
    text: str
    images: list = field(default_factory=list)
    ok: bool = False
    error: str | None = None


@dataclass
class _Conversation:
    """An episode in progress: what the loop has appended so far."""

    episode: Episode
    seconds_per_frame: float
    response_ids: list[int] = field(default_factory=list)
    mask: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    turns: list[Turn] = field(default_factory=list)
    images: list[np.ndarray] = field(default_factory=list)
    finish_reason: str = ""
    timings: dict[str, float] = field(default_factory=lambda: {"generate": 0.0, "tools": 0.0})

    @property
    def video(self) -> Any:
        return self.episode.video

    def request(self) -> GenerationRequest:
        videos = [self.video.frames] if self.video is not None else []
        return GenerationRequest(
            prompt_ids=self.episode.prompt_ids + self.response_ids,
            videos=videos,
            images=list(self.images),
            mm_key=self.episode.mm_key,
            video_seconds_per_frame=[self.seconds_per_frame] * len(videos),
        )


def _turn_sampling(sampling: SamplingParams, im_end_id: int, budget: int, turn: int) -> SamplingParams:
    stops = list(dict.fromkeys([*sampling.stop_token_ids, im_end_id]))
    strings = list(dict.fromkeys([*sampling.stop_strings, *TURN_STOP_STRINGS]))
    seed = None if sampling.seed is None else sampling.seed + turn  # different draws per turn, still reproducible
    return dataclasses.replace(
        sampling,
        max_new_tokens=min(sampling.max_new_tokens, budget),
        stop_token_ids=stops,
        stop_strings=strings,
        seed=seed,
    )


def _dispatch(tools: Any, convs: list[_Conversation], parsed: list[list[tuple[dict | None, str | None]]]):
    """Call every well-formed tool call of this turn in one `call_many`; error replies for the malformed ones."""
    jobs = [(c["name"], c["arguments"], conv.video) for conv, calls in zip(convs, parsed) for c, _ in calls if c]
    start = time.perf_counter()
    results = iter(tools.call_many(jobs) if jobs else [])
    elapsed = time.perf_counter() - start
    per_call = elapsed / max(len(jobs), 1)
    out = []
    for conv, calls in zip(convs, parsed):
        records, replies = [], []
        for call, err in calls:
            if call is None:
                kind = err.split(":", 1)[0]
                res = _ErrorResult(text=f"Error: {err}", error=kind)
                records.append(ToolCall(name="", arguments={}, ok=False, response=res.text, error=kind))
            else:
                res = next(results)
                records.append(
                    ToolCall(
                        name=call["name"],
                        arguments=call["arguments"],
                        ok=bool(res.ok),
                        response=res.text,
                        num_images=len(res.images or []),
                        error=res.error,
                        latency_s=float(getattr(res, "latency_s", per_call)),
                        cached=bool(getattr(res, "cached", False)),
                    )
                )
            replies.append(res)
        conv.timings["tools"] += elapsed
        out.append((records, replies))
    return out


def _finish_turn(conv: _Conversation, completion: Any, im_end_id: int, budget: int) -> list | None:
    """Append the model's tokens; return the parsed tool calls to run, or None when the episode is over."""
    conv.response_ids += completion.token_ids
    conv.mask += [1] * len(completion.token_ids)
    conv.logprobs += [float(x) for x in completion.logprobs]
    text = completion.text
    conv.turns.append(Turn(text=text.replace(IM_END, "").replace("<|endoftext|>", "")))
    if _ANSWER.search(text):
        conv.finish_reason = "answer"
    elif completion.finish_reason == "length" or len(conv.response_ids) >= budget:
        conv.finish_reason = "length"
    else:
        calls = parse_tool_calls(text)
        if calls:
            return calls
        conv.finish_reason = "stop"
    return None


def _append_tool_reply(conv: _Conversation, replies: list, tokenizer: Any, im_end_id: int, budget: int) -> None:
    ended = bool(conv.response_ids) and conv.response_ids[-1] == im_end_id
    glue = "\n" if ended else IM_END + "\n"  # close the assistant turn the way the chat template does
    ids = tokenizer.encode(glue + format_tool_response(replies), add_special_tokens=False)
    if len(conv.response_ids) + len(ids) >= budget:
        conv.finish_reason = "length"  # no room left for the reply and an answer after it
        return
    conv.response_ids += ids
    conv.mask += [0] * len(ids)
    conv.logprobs += [0.0] * len(ids)
    for reply in replies:
        conv.images.extend(getattr(reply, "images", []) or [])


def run_episodes(
    engine: Any,
    tools: Any,
    episodes: list[Episode],
    sampling: SamplingParams,
    tokenizer: Any,
    *,
    max_turns: int = 3,
    max_response_tokens: int = 1024,
    processor: Any = None,
) -> list[Trajectory]:
    """Run every episode to its end; one trajectory per episode, in the same order, each with the episode's sample
    id, group index and record.

    Turns end at `<|im_end|>`, `</tool_call>`, `</answer>` or the token budget. An episode ends with finish_reason
    "answer" (an `<answer>...</answer>` was written), "stop" (an end token without tool calls), "length" (the
    `max_response_tokens` budget, model and tool tokens together, is used up) or "max_turns".
    Each trajectory's `mm_inputs` holds the episode's `video_inputs` (the same arrays, not copies) plus, when a
    `processor` is given, the processed images that tool replies added (pixel_values, image_grid_thw).
    """
    im_end_id = tokenizer.convert_tokens_to_ids(IM_END)
    convs = [_Conversation(ep, _seconds_per_frame(ep.video)) for ep in episodes]
    for turn in range(max_turns):
        active = [c for c in convs if not c.finish_reason]
        if not active:
            break
        budgets = [max_response_tokens - len(c.response_ids) for c in active]
        # One sampling per turn, bounded by the largest remaining budget; `_clip` cuts the others to theirs.
        turn_sampling = _turn_sampling(sampling, im_end_id, max(budgets), turn)
        start = time.perf_counter()
        completions = engine.generate([c.request() for c in active], turn_sampling)
        elapsed = time.perf_counter() - start
        pending = []
        for conv, completion, budget in zip(active, completions, budgets):
            conv.timings["generate"] += elapsed
            completion = _clip(completion, budget, tokenizer)
            calls = _finish_turn(conv, completion, im_end_id, max_response_tokens)
            if calls is not None:
                pending.append((conv, calls))
        if not pending:
            continue
        dispatched = _dispatch(tools, [c for c, _ in pending], [calls for _, calls in pending])
        for (conv, _), (records, replies) in zip(pending, dispatched):
            conv.turns[-1].tool_calls = records
            _append_tool_reply(conv, replies, tokenizer, im_end_id, max_response_tokens)
    return [_trajectory(c, processor) for c in convs]


def run_episode(
    engine: Any, tools: Any, episode: Episode, sampling: SamplingParams, tokenizer: Any, **kwargs: Any
) -> Trajectory:
    """One episode; `run_episodes` with a batch of one (same keyword arguments)."""
    return run_episodes(engine, tools, [episode], sampling, tokenizer, **kwargs)[0]


def _clip(completion: Any, budget: int, tokenizer: Any) -> Any:
    """Cut a completion to this conversation's remaining budget (turns share one max_new_tokens per call)."""
    if len(completion.token_ids) <= budget:
        return completion
    ids = completion.token_ids[:budget]
    text = tokenizer.decode(ids, skip_special_tokens=False)
    return dataclasses.replace(
        completion, token_ids=ids, logprobs=completion.logprobs[:budget], text=text, finish_reason="length"
    )


def _seconds_per_frame(video: Any) -> float:
    from rollout.multimodal import seconds_per_frame

    return seconds_per_frame(getattr(video, "timestamps", None))


def _trajectory(conv: _Conversation, processor: Any) -> Trajectory:
    ep = conv.episode
    mm_inputs = dict(ep.video_inputs)  # a new dict per trajectory, holding the group's shared arrays
    if conv.images and processor is not None:
        from rollout.multimodal import process_images

        mm_inputs.update(process_images(processor, conv.images))
    return Trajectory(
        sample_id=ep.sample_id,
        group_index=ep.group_index,
        prompt_ids=list(ep.prompt_ids),  # its own list: the episodes of a group may share one prompt
        response_ids=conv.response_ids,
        response_mask=conv.mask,
        rollout_logprobs=conv.logprobs,
        turns=conv.turns,
        final_text=conv.turns[-1].text if conv.turns else "",
        finish_reason=conv.finish_reason or "max_turns",
        mm_inputs=mm_inputs,
        record=ep.record,
        timings=dict(conv.timings),
    )
