"""The multi-turn tool loop: generate, parse `<tool_call>`s, call the tools, append `<tool_response>`s, repeat.

`run_episodes` takes a list of `Episode`s (prompt, video, processed video inputs, sample id, group index, record)
and advances their conversations in one of two ways (`rollout.loop`). "async" (the default): every conversation
that is ready (no tool call in flight) goes into one `engine.generate`; the tool calls that come out are started
in the background (`rollout.tool_futures`: the pool's `submit_many`, or `call_many` on a thread), and the next
generate takes whatever is ready then, so a slow tool call holds up only its own conversation; the loop waits only
when nothing is ready. "barrier": one `engine.generate` per turn across all the conversations still running, then
the tool calls of the turn dispatched together with `tools.call_many`. Both give the same trajectories for the same
completions. Each trajectory's `timings` hold the seconds its conversation spent in generate calls and waiting for
its own tool replies (in "async" these overlap other conversations' work). Model tokens
get mask 1 and their engine log-probs; the tokens we insert (tool responses and the chat-format glue around them)
get mask 0 and log-prob 0.0, so the trainer never learns to predict tool output.

A completion may hold anything: turning it into tool calls and replies never raises. A call that is malformed or
past a bound (MAX_CALL_CHARS, MAX_JSON_DEPTH, MAX_CALLS_PER_TURN) gets an error reply the model can read
(docs/reliability.md). A conversation holds at most `max_images` images: the images of a tool reply past that
limit are dropped, and the reply's text says so.

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

import contextlib
import dataclasses
import json
import logging
import re
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from rollout.config import LOOPS, RolloutConfig
from rollout.engine import GenerationRequest, SamplingParams
from rollout.tool_futures import InFlight, ToolRunner, call_many_guarded
from rollout.trajectory import Episode, ToolCall, Trajectory, Turn

log = logging.getLogger(__name__)

__all__ = ["Episode", "format_tool_response", "json_depth", "parse_tool_calls", "run_episode", "run_episodes"]

IM_END = "<|im_end|>"
TURN_STOP_STRINGS = ("</tool_call>", "</answer>")
IMAGE_PLACEHOLDER = "<|vision_start|><|image_pad|><|vision_end|>"
_TAG = re.compile(r"<tool_call>(.*?)(</tool_call>|$)", re.DOTALL)
# Vision special tokens written as text (a tool echoing an argument): the tokenizer would turn them into real
# placeholders without an image behind them, which every engine and the trainer refuse.
_VISION_TOKEN_TEXT = re.compile(r"<\|(vision_start|vision_end|vision_pad|image_pad|video_pad)\|>")

# Bounds on what one turn's text can make the parser do; a call past one gets an error reply the model can read.
MAX_CALL_CHARS = 64 * 1024  # one call's body (a real call is a few hundred characters)
MAX_JSON_DEPTH = 64  # json.loads recurses once per level: a few hundred nested `[` raise RecursionError
MAX_CALLS_PER_TURN = 16  # the calls after these are not run; one error reply counts them
# A JSON string (maybe unterminated: `"?`) or one bracket; strings are skipped whole, so brackets in them do not count.
_JSON_TOKEN = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"?|[\[\]{}]', re.DOTALL)


def parse_tool_calls(text: str, max_calls: int = MAX_CALLS_PER_TURN) -> list[tuple[dict | None, str | None]]:
    """The `<tool_call>...</tool_call>`s of `text`, each as (call, None) or (None, "kind: readable message").

    A call is {"name": str, "arguments": dict}; arguments given as a JSON string are decoded. Never raises: a body
    that is not a well-formed call, longer than MAX_CALL_CHARS or nested deeper than MAX_JSON_DEPTH gets an error
    ("bad_json", "too_long", "too_deep", ...). The first `max_calls` calls are parsed; when there are more, one
    last entry (None, "too_many_calls: ...") counts the others.

    >>> parse_tool_calls('<tool_call>{"name": "pose", "arguments": {"frame": 3}}</tool_call>')
    [({'name': 'pose', 'arguments': {'frame': 3}}, None)]
    >>> parse_tool_calls('<tool_call>{"name": pose}</tool_call>')[0][1].split(':')[0]
    'bad_json'
    >>> parse_tool_calls('<tool_call>' + '[' * 1000 + '</tool_call>')[0][1].split(':')[0]
    'too_deep'
    """
    out: list[tuple[dict | None, str | None]] = []
    extra = 0
    for match in _TAG.finditer(text):
        if len(out) >= max_calls:
            extra += 1  # counted, not parsed: thousands of calls cost one regex scan
            continue
        body, closing = match.group(1), match.group(2)
        if not closing:
            out.append((None, "unclosed_tag: <tool_call> has no closing </tool_call>"))
            continue
        out.append(_parse_one(body.strip()))
    if extra:
        message = f"{extra} of the {max_calls + extra} tool calls were not run; at most {max_calls} run per turn"
        out.append((None, "too_many_calls: " + message))
    return out


def _load_json(text: str, what: str) -> tuple[Any, str | None]:
    """json.loads within the bounds: (value, None) or (None, "kind: message")."""
    if len(text) > MAX_CALL_CHARS:
        return None, f"too_long: {what} has {len(text)} characters; at most {MAX_CALL_CHARS} are read"
    if json_depth(text, stop_above=MAX_JSON_DEPTH) > MAX_JSON_DEPTH:
        return None, f"too_deep: {what} nests arrays and objects more than {MAX_JSON_DEPTH} levels deep"
    try:
        return json.loads(text), None
    except json.JSONDecodeError as err:
        return None, f"bad_json: {what} is not valid JSON ({err.msg} at char {err.pos})"
    except (ValueError, RecursionError) as err:  # e.g. an integer of more than 4300 digits
        return None, f"bad_json: {what} is not valid JSON ({str(err).split(';')[0][:200]})"


def json_depth(text: str, stop_above: int | None = None) -> int:
    """How deep the arrays and objects of JSON `text` nest, in one linear scan; brackets inside strings do not
    count. Stops counting once past `stop_above`. An upper bound for invalid JSON (json.loads fails earlier).

    >>> json_depth('{"a": [1, {"b": "]]]"}]}'), json_depth('[[[]]] []'), json_depth('"[[["'), json_depth('[[[[', 2)
    (3, 3, 0, 3)
    """
    depth = deepest = 0
    for match in _JSON_TOKEN.finditer(text):
        char = text[match.start()]
        if char in "[{":
            depth += 1
            deepest = max(deepest, depth)
            if stop_above is not None and deepest > stop_above:
                break
        elif char in "]}":
            depth = max(depth - 1, 0)
    return deepest


def _parse_one(body: str) -> tuple[dict | None, str | None]:
    obj, err = _load_json(body, "the tool call")
    if err:
        return None, err
    if not isinstance(obj, dict):
        return None, f"not_object: the tool call must be a JSON object, got {type(obj).__name__}"
    name = obj.get("name")
    if not isinstance(name, str) or not name:
        return None, "missing_name: the tool call needs a string field 'name'"
    args = obj.get("arguments", {})
    if isinstance(args, str):
        args, err = _load_json(args, "'arguments' (a string)") if args.strip() else ({}, None)
        if err:
            return None, err
    if not isinstance(args, dict):
        return None, f"bad_arguments: 'arguments' must be a JSON object, got {type(args).__name__}"
    return {"name": name, "arguments": args}, None


def format_tool_response(results: list[Any]) -> str:
    """The user turn that carries tool results back: one `<tool_response>` block per call, then the assistant cue.

    Each result is a ToolResult-like object (`text`, `images`); each image gets a vision placeholder in its block,
    and these are the only placeholders: vision tokens spelt out in a text lose their bars (`<image_pad>`).

    >>> from envs.base import ToolResult
    >>> format_tool_response([ToolResult("a"), ToolResult("b")])
    '<|im_start|>user\\n<tool_response>\\na\\n</tool_response>\\n<tool_response>\\nb\\n</tool_response><|im_end|>\\n<|im_start|>assistant\\n'
    >>> format_tool_response([ToolResult("echo <|image_pad|>", images=[None])]).count("<|image_pad|>")
    1
    """
    blocks = "".join(
        "\n<tool_response>\n"
        + IMAGE_PLACEHOLDER * len(getattr(r, "images", []) or [])
        + _VISION_TOKEN_TEXT.sub(r"<\1>", r.text)
        + "\n</tool_response>"
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
    results = iter(call_many_guarded(tools, jobs))
    elapsed = time.perf_counter() - start
    per_call = elapsed / max(len(jobs), 1)
    out = []
    for conv, calls in zip(convs, parsed):
        wanted = [(next(results), per_call) for call, _ in calls if call is not None]
        out.append(_records(calls, wanted))
        conv.timings["tools"] += elapsed
    return out


def _records(calls: list[tuple[dict | None, str | None]], results: list[tuple[Any, float]]):
    """The ToolCall records and the replies of one turn's `calls`: the (result, seconds) of each well-formed call,
    in order, and an error reply for each malformed one."""
    results = iter(results)
    records, replies = [], []
    for call, err in calls:
        if call is None:
            kind = err.split(":", 1)[0]
            res = _ErrorResult(text=f"Error: {err}", error=kind)
            records.append(ToolCall(name="", arguments={}, ok=False, response=res.text, error=kind))
        else:
            res, seconds = next(results)
            records.append(
                ToolCall(
                    name=call["name"],
                    arguments=call["arguments"],
                    ok=bool(res.ok),
                    response=res.text,
                    num_images=len(res.images or []),
                    error=res.error,
                    latency_s=float(getattr(res, "latency_s", seconds)),
                    cached=bool(getattr(res, "cached", False)),
                )
            )
        replies.append(res)
    return records, replies


def _has_answer(text: str) -> bool:
    """Whether `text` has an `<answer>` closed by a later `</answer>` (two finds: linear on any text, where a lazy
    regex search retries from every unclosed `<answer>`)."""
    start = text.find("<answer>")
    return start >= 0 and text.find("</answer>", start + len("<answer>")) >= 0


def _finish_turn(conv: _Conversation, completion: Any, im_end_id: int, budget: int) -> list | None:
    """Append the model's tokens; return the parsed tool calls to run, or None when the episode is over."""
    conv.response_ids += completion.token_ids
    conv.mask += [1] * len(completion.token_ids)
    conv.logprobs += [float(x) for x in completion.logprobs]
    text = completion.text
    conv.turns.append(Turn(text=text.replace(IM_END, "").replace("<|endoftext|>", "")))
    if _has_answer(text):
        conv.finish_reason = "answer"
    elif completion.finish_reason == "length" or len(conv.response_ids) >= budget:
        conv.finish_reason = "length"
    else:
        calls = parse_tool_calls(text)
        if calls:
            return calls
        conv.finish_reason = "stop"
    return None


@dataclass
class _Reply:
    """A tool reply as the model reads it: its text and the images it keeps."""

    text: str
    images: list = field(default_factory=list)


def _fit_images(replies: list, held: int, max_images: int, max_side: int | None) -> tuple[list[_Reply], list[int]]:
    """The replies with at most `max_images - held` images among them, the first ones in order, each shrunk to
    `max_side` (longest side, aspect kept, never enlarged); and how many images each reply lost. A reply that lost
    images says so at the end of its text, so that the model knows what it does not see."""
    room = max(max_images - held, 0)
    fitted, dropped = [], []
    for reply in replies:
        images = list(getattr(reply, "images", None) or [])
        kept = images[:room]
        room -= len(kept)
        lost = len(images) - len(kept)
        text = reply.text
        if lost:
            were = "image was" if lost == 1 else "images were"
            text += f"\n({lost} {were} dropped: at most {max_images} images per conversation)"
        fitted.append(_Reply(text, [_shrink(image, max_side) for image in kept]))
        dropped.append(lost)
    return fitted, dropped


def _shrink(image: Any, max_side: int | None) -> np.ndarray:
    """`image` (H x W x 3) with its longest side at most `max_side`; the same array when it already fits."""
    image = np.asarray(image)
    if max_side is None or max(image.shape[:2]) <= max_side:
        return image
    from envs.video import resize_frames

    return resize_frames(image[None], max_side)[0]


def _append_tool_reply(
    conv: _Conversation,
    records: list[ToolCall],
    replies: list,
    tokenizer: Any,
    im_end_id: int,
    budget: int,
    max_images: int,
    max_side: int | None,
) -> None:
    """Append the user turn of this turn's tool replies (mask 0), with the images that fit the conversation's limit;
    the records count the images left out. Nothing is appended when the reply does not fit the token budget."""
    replies, dropped = _fit_images(replies, len(conv.images), max_images, max_side)
    ended = bool(conv.response_ids) and conv.response_ids[-1] == im_end_id
    glue = "\n" if ended else IM_END + "\n"  # close the assistant turn the way the chat template does
    # A tool may echo an argument, and a JSON escape lets the model write a lone surrogate (\ud800), which the
    # tokenizer refuses: it becomes "?" here.
    text = (glue + format_tool_response(replies)).encode("utf-8", "replace").decode("utf-8")
    ids = tokenizer.encode(text, add_special_tokens=False)
    if len(conv.response_ids) + len(ids) >= budget:
        conv.finish_reason = "length"  # no room left for the reply and an answer after it
        return
    conv.response_ids += ids
    conv.mask += [0] * len(ids)
    conv.logprobs += [0.0] * len(ids)
    for reply, record, lost in zip(replies, records, dropped):
        conv.images.extend(reply.images)  # one per placeholder that format_tool_response wrote, in order
        record.dropped_images = lost


@dataclass(frozen=True)
class _Limits:
    """What every turn of a run is bounded by (run_episodes' keyword arguments)."""

    tokenizer: Any
    im_end_id: int
    max_turns: int
    max_response_tokens: int
    max_images: int
    max_side: int | None


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
    max_images: int = RolloutConfig.max_images,
    max_side: int | None = None,
    loop: str = RolloutConfig.loop,
) -> list[Trajectory]:
    """Run every episode to its end; one trajectory per episode, in the same order, each with the episode's sample
    id, group index and record.

    Turns end at `<|im_end|>`, `</tool_call>`, `</answer>` or the token budget. An episode ends with finish_reason
    "answer" (an `<answer>...</answer>` was written), "stop" (an end token without tool calls), "length" (the
    `max_response_tokens` budget, model and tool tokens together, is used up) or "max_turns".
    Each trajectory's `mm_inputs` holds the episode's `video_inputs` (the same arrays, not copies) plus, when a
    `processor` is given, the processed images that tool replies added (pixel_values, image_grid_thw).
    A conversation holds at most `max_images` tool images (`rollout.max_images`; an engine refuses a prompt with
    more): the images of a reply past the limit are dropped, the reply's text gets a note saying how many, and its
    ToolCall records them in `dropped_images`. Kept images are shrunk to `max_side` pixels on their longest side.
    `loop` (`rollout.loop`): "async", each conversation goes on as soon as its own tool replies are in, or
    "barrier", one generate per turn over all conversations, then all the turn's tool calls. Given the same
    completions both give the same trajectories; see RolloutConfig.loop for what differs (order, seeds).
    """
    if loop not in LOOPS:
        raise ValueError(f"run_episodes: loop {loop!r} is not one of {', '.join(map(repr, LOOPS))} (rollout.loop)")
    im_end_id = tokenizer.convert_tokens_to_ids(IM_END)
    limits = _Limits(tokenizer, im_end_id, max_turns, max_response_tokens, max_images, max_side)
    convs = [_Conversation(ep, _seconds_per_frame(ep.video)) for ep in episodes]
    if loop == "barrier":
        _run_barrier(engine, tools, convs, sampling, limits)
    elif callable(getattr(engine, "submit", None)) and callable(getattr(engine, "step", None)):
        _run_stream(engine, tools, convs, sampling, limits)  # continuous batching (rollout.engine.StreamingEngine)
    else:
        _run_async(engine, tools, convs, sampling, limits)
    return [_trajectory(c, processor) for c in convs]


def _generate(engine: Any, batch: list[_Conversation], sampling: SamplingParams, limits: _Limits, draw: int):
    """One engine.generate over `batch`; appends each completion. Returns the (conversation, parsed calls) of
    those that called tools. `draw` numbers the generate calls of a run: the sampling seed is `seed + draw`."""
    budgets = [limits.max_response_tokens - len(c.response_ids) for c in batch]
    # One sampling per call, bounded by the largest remaining budget; `_clip` cuts the others to theirs.
    call_sampling = _turn_sampling(sampling, limits.im_end_id, max(budgets), draw)
    start = time.perf_counter()
    completions = engine.generate([c.request() for c in batch], call_sampling)
    elapsed = time.perf_counter() - start
    pending = []
    for conv, completion, budget in zip(batch, completions, budgets):
        conv.timings["generate"] += elapsed
        completion = _clip(completion, budget, limits.tokenizer)
        calls = _finish_turn(conv, completion, limits.im_end_id, limits.max_response_tokens)
        if calls is not None:
            pending.append((conv, calls))
    return pending


def _reply(conv: _Conversation, records: list[ToolCall], replies: list, limits: _Limits) -> None:
    conv.turns[-1].tool_calls = records
    _append_tool_reply(
        conv,
        records,
        replies,
        limits.tokenizer,
        limits.im_end_id,
        limits.max_response_tokens,
        limits.max_images,
        limits.max_side,
    )


def _run_barrier(engine: Any, tools: Any, convs: list[_Conversation], sampling: SamplingParams, limits: _Limits):
    """Turn by turn: one generate over the conversations still running, then all of the turn's tool calls."""
    for turn in range(limits.max_turns):
        active = [c for c in convs if not c.finish_reason]
        if not active:
            break
        pending = _generate(engine, active, sampling, limits, turn)
        if not pending:
            continue
        dispatched = _dispatch(tools, [c for c, _ in pending], [calls for _, calls in pending])
        for (conv, _), (records, replies) in zip(pending, dispatched):
            _reply(conv, records, replies, limits)


def _run_async(engine: Any, tools: Any, convs: list[_Conversation], sampling: SamplingParams, limits: _Limits):
    """Each conversation on its own: one generate over every conversation that is ready (no tool call in flight),
    its tool calls started in the background, then whatever is ready next; waits only when nothing is ready."""
    position = {id(c): i for i, c in enumerate(convs)}
    ready, inflight, draws = list(convs), [], 0
    with ToolRunner(tools) as runner:
        while ready or inflight:
            if ready:
                ready.sort(key=lambda c: position[id(c)])  # episode order within a batch, as in the barrier loop
                pending = _generate(engine, ready, sampling, limits, draws)
                draws, ready = draws + 1, []
                inflight += _submit(runner, pending)
            done, inflight = runner.wait_any(inflight)
            ready += _take_replies(done, limits)


def _take_replies(done: list[InFlight], limits: _Limits) -> list[_Conversation]:
    """Append each finished conversation's tool replies; returns those that go on to another turn."""
    going_on = []
    for entry in done:
        conv, calls = entry.owner
        conv.timings["tools"] += entry.seconds()
        _reply(conv, *_records(calls, entry.results()), limits)
        if not conv.finish_reason and len(conv.turns) < limits.max_turns:
            going_on.append(conv)
    return going_on


def _run_stream(engine: Any, tools: Any, convs: list[_Conversation], sampling: SamplingParams, limits: _Limits):
    """The asynchronous loop on an engine with continuous batching: a conversation's next turn joins the running
    batch as soon as its tool replies are in, and each completion is taken as soon as it is done. A request's seed
    is the run's seed + turn x conversations + the conversation's index: the same whatever the timing."""
    position = {id(c): i for i, c in enumerate(convs)}
    ready, running, inflight = list(convs), {}, []
    with ToolRunner(tools) as runner, _aborting(engine, running):
        while ready or running or inflight:
            for conv in sorted(ready, key=lambda c: position[id(c)]):
                budget = limits.max_response_tokens - len(conv.response_ids)
                draw = len(conv.turns) * len(convs) + position[id(conv)]
                key = engine.submit(conv.request(), _turn_sampling(sampling, limits.im_end_id, budget, draw))
                running[key] = (conv, budget, time.perf_counter())
            ready, pending = [], []
            for key, completion in engine.step() if running else []:
                conv, budget, start = running.pop(key)
                conv.timings["generate"] += time.perf_counter() - start
                completion = _clip(completion, budget, limits.tokenizer)
                calls = _finish_turn(conv, completion, limits.im_end_id, limits.max_response_tokens)
                if calls is not None:
                    pending.append((conv, calls))
            inflight += _submit(runner, pending) if pending else []
            done, inflight = runner.ready(inflight) if running else runner.wait_any(inflight)
            ready += _take_replies(done, limits)


@contextlib.contextmanager
def _aborting(engine: Any, running: dict):
    """On an error, abort the requests still in the engine: a later call must not receive their completions."""
    try:
        yield
    except BaseException:
        if running and callable(getattr(engine, "abort", None)):
            engine.abort(list(running))
        raise


def _submit(runner: ToolRunner, pending: list) -> list[InFlight]:
    """Start the well-formed calls of each conversation in `pending` (one submission: a pool batches them)."""
    jobs = [[(c["name"], c["arguments"], conv.video) for c, _ in calls if c] for conv, calls in pending]
    return runner.submit(pending, jobs)


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
