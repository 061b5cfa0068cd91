"""The asynchronous tool loop (rollout.loop=async) against the per-turn barrier loop, with the ScriptedEngine and a
tool client whose calls run on threads with different latencies (as envs' ToolPool's do on its actors)."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from envs.base import ToolResult, Video
from rollout.config import RolloutConfig
from rollout.engine import Completion, SamplingParams
from rollout.scripted_engine import ScriptedEngine, StreamingScriptedEngine
from rollout.tool_loop import Episode, run_episodes


def _call(name: str, **args) -> str:
    import json

    return f"<tool_call>\n{json.dumps({'name': name, 'arguments': args})}\n</tool_call>"


SLOW, FAST, GATE = _call("slow"), _call("fast"), _call("gate")
CROP = _call("crop", frame=1)
CROP_AGAIN = "<think>again</think>" + _call("crop", frame=2)
BAD = '<tool_call>\n{"name": "fast", "arguments": {oops}}\n</tool_call>'
ANSWER = "<answer>riding a bike</answer>"


class ThreadedTools:
    """A tool client like envs' ToolPool: `submit_many` starts each call on a thread and returns its future;
    `slow` takes `slow_s`, `gate` waits (at most `gate_s`) until `gate_open` is set."""

    def __init__(self, slow_s: float = 0.6, gate_s: float = 5.0):
        self.slow_s, self.gate_s = slow_s, gate_s
        self.gate_open = threading.Event()
        self.pool = ThreadPoolExecutor(max_workers=8)
        self.submissions: list[int] = []

    def call(self, name, args, video):
        if name == "slow":
            time.sleep(self.slow_s)
            return ToolResult(text="slow done")
        if name == "gate":
            return ToolResult(text="released" if self.gate_open.wait(self.gate_s) else "not released")
        if name == "crop":
            time.sleep(0.02)
            return ToolResult(text=f"crop {args['frame']}", images=[video.frames[args["frame"], :28, :28].copy()])
        time.sleep(0.01)
        return ToolResult(text=f"{video.frames.shape[0]} frames")

    def submit_many(self, calls):
        self.submissions.append(len(calls))
        return [self.pool.submit(self.call, *c) for c in calls]

    def call_many(self, calls):
        return [f.result() for f in self.submit_many(calls)]


class LogprobScripted(ScriptedEngine):
    """The ScriptedEngine with a log-prob per token that depends on the token, so that log-probs can be compared."""

    def generate(self, requests, sampling):
        return [
            Completion(c.token_ids, [-(t % 97) / 100 for t in c.token_ids], c.text, c.finish_reason)
            for c in super().generate(requests, sampling)
        ]


class LogprobStreaming(LogprobScripted, StreamingScriptedEngine):
    """The same with continuous batching (a fake too): the loop takes its streaming path."""


@pytest.fixture(scope="module")
def processor(tiny_model_dir):
    from transformers import AutoProcessor

    return AutoProcessor.from_pretrained(tiny_model_dir)


@pytest.fixture
def video():
    frames = np.random.default_rng(0).integers(0, 255, size=(4, 56, 56, 3), dtype=np.uint8)
    return Video(frames=frames, timestamps=[0.0, 0.5, 1.0, 1.5], path="synthetic", key="synthetic")


def _episodes(processor, video, count):
    text = processor.apply_chat_template(
        [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": "What happens?"}]}],
        add_generation_prompt=True,
        tokenize=False,
    )
    tok = processor.tokenizer
    return [
        Episode(tok.encode(f"conv{k}|" + text, add_special_tokens=False), video, sample_id=str(k))
        for k in range(count)
    ]


def _conv(tok, req) -> int:
    return int(tok.decode(req.prompt_ids[:8]).split("conv")[1].split("|")[0])


def _scripted(tok, scripts, engine=LogprobScripted):
    return engine(tok, lambda req, turn: scripts[_conv(tok, req)][turn])


SCRIPTS = [
    [SLOW, ANSWER],  # one slow call: in the async loop the others go on meanwhile
    [CROP, CROP_AGAIN, ANSWER],  # two images, max_images=1: the second one is dropped
    [BAD, FAST, "plain text<|im_end|>"],  # a malformed call, then a fine one, then an end without an answer
    [FAST, FAST, FAST],  # calls until max_turns
    [FAST, "word " * 100],  # the second turn runs past max_new_tokens
]


def _view(traj):
    calls = [
        (c.name, c.arguments, c.ok, c.response, c.error, c.num_images, c.dropped_images, c.cached)
        for turn in traj.turns
        for c in turn.tool_calls
    ]
    return (
        traj.sample_id,
        traj.response_ids,
        traj.response_mask,
        traj.rollout_logprobs,
        [t.text for t in traj.turns],
        calls,
        traj.finish_reason,
        traj.mm_inputs["image_grid_thw"].tolist() if "image_grid_thw" in traj.mm_inputs else None,
    )


def test_async_and_barrier_loops_give_the_same_trajectories(processor, video):
    tok = processor.tokenizer
    runs = {}
    for loop, engine in (("barrier", LogprobScripted), ("async", LogprobScripted), ("stream", LogprobStreaming)):
        tools = ThreadedTools()
        start = time.perf_counter()
        runs[loop] = run_episodes(
            _scripted(tok, SCRIPTS, engine),
            tools,
            _episodes(processor, video, len(SCRIPTS)),
            SamplingParams(max_new_tokens=40, seed=3),
            tok,
            max_turns=3,
            max_response_tokens=600,
            processor=processor,
            max_images=1,
            loop="barrier" if loop == "barrier" else "async",  # an engine with submit/step streams
        )
        runs[loop + "_s"] = time.perf_counter() - start
    barrier, fast = runs["barrier"], runs["async"]
    assert [_view(t) for t in fast] == [_view(t) for t in barrier]
    assert [_view(t) for t in runs["stream"]] == [_view(t) for t in barrier]
    # What the scripts make happen, worked out by hand.
    assert [t.finish_reason for t in fast] == ["answer", "answer", "stop", "max_turns", "length"]
    assert [len(t.turns) for t in fast] == [2, 3, 3, 3, 2]
    assert [c.dropped_images for t in fast[1].turns for c in t.tool_calls] == [0, 1]
    assert fast[1].mm_inputs["image_grid_thw"].tolist() == [[1, 4, 4]]
    assert fast[2].turns[0].tool_calls[0].error == "bad_json"
    assert all(lp <= 0 for lp in fast[0].rollout_logprobs) and min(fast[0].rollout_logprobs) < 0
    # Tool time is each conversation's own wait: in the barrier loop everyone waits for the slow call of turn 1.
    assert barrier[3].timings["tools"] >= 0.6 and fast[0].timings["tools"] >= 0.6
    assert fast[3].timings["tools"] < 0.5
    assert all(t.timings["generate"] > 0 for t in fast)


def test_a_conversation_waiting_on_a_tool_does_not_hold_up_the_others(processor, video):
    """Conversation 0's tool answers only once conversation 1 has generated its answer (its third turn): the
    barrier loop cannot get there while the call is in flight; the async loop does."""
    tok = processor.tokenizer
    scripts = [[GATE, ANSWER], [FAST, FAST, ANSWER]]
    out = {}
    for loop, gate_s in (("async", 10.0), ("barrier", 0.3)):
        engine = _scripted(tok, scripts)
        tools = ThreadedTools(gate_s=gate_s)
        inner = engine.script

        def script(req, turn, inner=inner, tools=tools):
            text = inner(req, turn)
            if text == ANSWER and "conv1|" in tok.decode(req.prompt_ids[:8]):
                tools.gate_open.set()
            return text

        engine.script = script
        episodes = _episodes(processor, video, 2)
        trajs = run_episodes(engine, tools, episodes, SamplingParams(max_new_tokens=40), tok, loop=loop)
        out[loop] = (trajs, [tok.decode(r.prompt_ids[:8]).split("|")[0] for r in engine.requests])
    trajs, order = out["async"]
    assert trajs[0].turns[0].tool_calls[0].response == "released"
    assert [t.finish_reason for t in trajs] == ["answer", "answer"]
    assert order == ["conv0", "conv1", "conv1", "conv1", "conv0"]  # conversation 1 ran on while 0 waited
    trajs, order = out["barrier"]
    assert trajs[0].turns[0].tool_calls[0].response == "not released"
    assert order == ["conv0", "conv1", "conv0", "conv1", "conv1"]


class BrokenClient:
    """A client whose submit_many raises."""

    def submit_many(self, calls):
        raise RuntimeError("lost the actors")


def test_a_failing_tool_client_costs_error_replies_not_the_rollout(processor, video):
    tok = processor.tokenizer
    [traj] = run_episodes(
        _scripted(tok, [[FAST, ANSWER]]),
        BrokenClient(),
        _episodes(processor, video, 1),
        SamplingParams(max_new_tokens=40),
        tok,
        loop="async",
    )
    [call] = traj.turns[0].tool_calls
    assert (call.ok, call.error, traj.finish_reason) == (False, "tool_error", "answer")


def test_unknown_loop_is_refused_with_the_field_name(processor, video):
    with pytest.raises(ValueError, match="rollout.loop"):
        run_episodes(None, None, [], SamplingParams(), processor.tokenizer, loop="pipelined")
    assert RolloutConfig(loop="pipelined").validate() == ["rollout.loop: 'pipelined' is not one of 'async', 'barrier'"]


def test_with_continuous_batching_a_next_turn_joins_the_running_batch(processor, video):
    """Conversation 0 writes one long answer; conversation 1 calls a fast tool, then answers. On a streaming engine
    conversation 1's second turn is submitted, and finishes, while conversation 0's first is still decoding."""
    tok = processor.tokenizer
    long_answer = "<think>" + "long " * 60 + "</think>" + ANSWER
    engine = _scripted(tok, [[long_answer], [FAST, ANSWER]], StreamingScriptedEngine)
    engine.step_s = 0.005  # 5 ms per step: the fast tool (10 ms) answers within a few steps
    trajs = run_episodes(
        engine, ThreadedTools(), _episodes(processor, video, 2), SamplingParams(max_new_tokens=200, seed=5), tok
    )
    assert [t.finish_reason for t in trajs] == ["answer", "answer"]
    # submissions in order: conv0 turn 0 (r0), conv1 turn 0 (r1), then conv1 turn 1 after its tool reply
    submits = [(key, step) for kind, key, step in engine.events if kind == "submit"]
    done = {key: step for kind, key, step in engine.events if kind == "done"}
    (first, _), (second, _), (third, joined_at) = submits
    assert 0 < joined_at < done[first]  # joined the batch while conversation 0 was running
    assert done[third] < done[first]  # and was done before it
    # conversation 0's turn takes as many steps as its tokens, whatever ran beside it
    assert done[first] == len(tok.encode(long_answer, add_special_tokens=False))
    assert max(engine.batch_sizes) == 2 and engine.batch_sizes[-1] == 1
    # seeds: the run's seed + turn x 2 conversations + the conversation's index
    assert [engine.seeds[k] for k in (first, second, third)] == [5 + 0, 5 + 1, 5 + 2 + 1]


def test_a_failed_streaming_rollout_aborts_what_it_left_in_the_engine(processor, video):
    """Submitting conversation 1 fails after conversation 0 is running: the error reaches the caller, and
    conversation 0's request is aborted, so that no later call of the engine receives its completion."""
    tok = processor.tokenizer

    class FailsOnConv1(StreamingScriptedEngine):
        def submit(self, request, sampling):
            if _conv(tok, request) == 1:
                raise ValueError("conversation 1 cannot be processed")
            return super().submit(request, sampling)

    engine = _scripted(tok, [[ANSWER], [ANSWER]], FailsOnConv1)
    with pytest.raises(ValueError, match="conversation 1"):
        run_episodes(engine, ThreadedTools(), _episodes(processor, video, 2), SamplingParams(max_new_tokens=40), tok)
    assert [(kind, key) for kind, key, _ in engine.events] == [("submit", "r0"), ("abort", "r0")]
    assert engine.running == {}
