"""A fake engine that replays given texts, for tests and demos that need a well-formed tool call, which an untrained
tiny model never emits.

It is named a fake on purpose: nothing is sampled. Each turn's text is tokenised with the real tokenizer, cut at
the stop tokens / stop strings / `max_new_tokens` like a real engine would, and given log-prob 0.0 per token.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from rollout.engine import Completion, GenerationRequest, SamplingParams


class ScriptedEngine:
    """Replays `script`: a list of turn texts (turn k of every conversation gets `script[k]`), or a function
    `(request, turn_index) -> text`. The turn index is read from the prompt: the number of assistant cues
    (`<|im_start|>assistant`) in it, minus one."""

    def __init__(self, tokenizer: Any, script: list[str] | Callable[[GenerationRequest, int], str]):
        self.tokenizer = tokenizer
        self.script = script
        self.cue = tokenizer.encode("<|im_start|>assistant", add_special_tokens=False)
        self.requests: list[GenerationRequest] = []  # every request seen, for tests to inspect
        self.weight_updates = 0
        self.calls = 0  # generate() calls

    def turn_index(self, prompt_ids: list[int]) -> int:
        k = len(self.cue)
        hits = sum(1 for i in range(len(prompt_ids) - k + 1) if prompt_ids[i : i + k] == self.cue)
        return max(hits - 1, 0)

    def _text(self, req: GenerationRequest) -> str:
        turn = self.turn_index(req.prompt_ids)
        if callable(self.script):
            return self.script(req, turn)
        if turn >= len(self.script):
            raise IndexError(f"ScriptedEngine: the script has {len(self.script)} turns, asked for turn {turn}")
        return self.script[turn]

    def _cut(self, ids: list[int], sampling: SamplingParams) -> tuple[list[int], str]:
        text = ""
        for i, tok in enumerate(ids[: sampling.max_new_tokens]):
            text += self.tokenizer.decode([tok])
            if tok in sampling.stop_token_ids or any(text.endswith(s) for s in sampling.stop_strings):
                return ids[: i + 1], "stop"
        return ids[: sampling.max_new_tokens], "length" if len(ids) > sampling.max_new_tokens else "stop"

    def generate(self, requests: list[GenerationRequest], sampling: SamplingParams) -> list[Completion]:
        self.calls += 1
        out = []
        for req in requests:
            self.requests.append(req)
            ids, reason = self._cut(self.tokenizer.encode(self._text(req), add_special_tokens=False), sampling)
            text = self.tokenizer.decode(ids, skip_special_tokens=False)
            out.append(Completion(token_ids=ids, logprobs=[0.0] * len(ids), text=text, finish_reason=reason))
        return out

    def update_weights(self, named_tensors: dict[str, Any]) -> None:
        self.weight_updates += 1


class StreamingScriptedEngine(ScriptedEngine):
    """The ScriptedEngine with continuous batching (`rollout.engine.StreamingEngine`), also a fake: `submit` queues a
    request, and each `step` is one decoding step of every running request, so a request finishes after as many
    steps as its scripted turn has tokens, whatever else runs beside it, and one submitted meanwhile joins at the
    next step. `events` records ("submit" | "done", key, step) for tests; `batch_sizes` the running requests of
    each step. `step_s`: seconds each step takes (a real one takes some; tool replies arrive meanwhile)."""

    def __init__(
        self, tokenizer: Any, script: list[str] | Callable[[GenerationRequest, int], str], step_s: float = 0.0
    ):
        super().__init__(tokenizer, script)
        self.step_s = step_s
        self.steps = 0
        self.running: dict[str, list] = {}  # key -> [steps left, completion]
        self.events: list[tuple[str, str, int]] = []
        self.batch_sizes: list[int] = []
        self.seeds: dict[str, int | None] = {}

    def submit(self, request: GenerationRequest, sampling: SamplingParams) -> str:
        (completion,) = self.generate([request], sampling)
        key = f"r{len(self.events)}"
        self.running[key] = [max(len(completion.token_ids), 1), completion]
        self.seeds[key] = sampling.seed
        self.events.append(("submit", key, self.steps))
        return key

    def abort(self, keys: list[str]) -> None:
        for key in keys:
            self.running.pop(key, None)
            self.events.append(("abort", key, self.steps))

    def step(self) -> list[tuple[str, Completion]]:
        time.sleep(self.step_s)
        self.steps += 1
        self.batch_sizes.append(len(self.running))
        done = []
        for key in list(self.running):
            self.running[key][0] -= 1
            if self.running[key][0] == 0:
                done.append((key, self.running.pop(key)[1]))
                self.events.append(("done", key, self.steps))
        return done
