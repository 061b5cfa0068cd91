"""Multi-turn rollout throughput: episodes per second of the asynchronous loop (`rollout.loop=async`) against the
per-turn barrier loop (`rollout.loop=barrier`), at the same settings, measured interleaved in one run.

Settings: the Video-STAR GRPO default (`recipes/configs/videostar_grpo.yaml`: the embedded tiny model, the bundled
sample records, all four tools on their Ray actors, G=4, 3 turns), plus any `key=value` overrides given here. One
RolloutWorker runs in this process with the hf engine and the real tool pool.

The policy: an untrained tiny model never writes a well-formed tool call, so the texts of the turns are scripted,
in the template teacher's format (`data_builders.template_teacher`), and the hf engine still runs the tiny model on
every request for as many tokens as the scripted turn has: generation costs what it would cost, tools are really
called, and both loops get the same completions. Rollout k of a group makes k % 3 tool turns (pose or detection,
then description or explanation) with arguments of its own (no cache hits inside a group), then answers, so some
conversations finish early and others wait on tools: the case the asynchronous loop is for. The tool cache is
cleared before every measured batch, so that no batch is answered from a previous one.

    python benchmarks/rollout_async.py                        # 2 records x G=4, 3 repeats of each loop
    python benchmarks/rollout_async.py --repeats 5 --records 4 rollout.n=8

The numbers depend on the machine and its load (tools and generation share its cores): compare the two loops
within one run, not across runs.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import re
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

LOOPS = ("barrier", "async")
_PLAN = re.compile(r"<think>Plan (\d+)\.")


def scripted_turns(record: dict, variant: int, num_frames: int) -> list[str]:
    """The assistant turns of rollout `variant` of `record`: `variant % 3` tool turns, then the answer. The first
    turn says which plan it follows, so that later turns can be told apart by their prompt alone.

    >>> [t.count("<tool_call>") for t in scripted_turns({"label": "run", "candidates": ["run", "walk"]}, 2, 8)]
    [1, 1, 0]
    """
    from data_builders.template_teacher import template_chain

    answer = template_chain(record, num_frames, tools=())[-1]
    frames = sorted({variant % num_frames, (variant + num_frames // 2) % num_frames})
    people = [
        {"name": "pose_estimation", "arguments": {"frames": frames, "person": 0}},
        {"name": "human_detection", "arguments": {"frames": frames}},
    ][variant % 2]
    candidates = sorted({record["label"], *record.get("candidates", [])[:2]})
    knowledge = [
        {"name": "video_description", "arguments": {"num_key_frames": 1 + variant % 2}},
        {"name": "action_explanation", "arguments": {"actions": candidates[: 1 + variant % 2], "top_k": 1}},
    ][(variant // 3) % 2]
    calls = [people, knowledge][: variant % 3]
    turns = [f"<tool_call>\n{json.dumps(call)}\n</tool_call>" for call in calls] + [answer]
    return [f"<think>Plan {variant}.</think>\n" + turns[0], *turns[1:]]


class PacedScriptedEngine:
    """The hf engine's generation cost with scripted texts: each call's requests also run on the hf engine, as one
    call, for as many tokens as the longest scripted turn among them has (the sampled tokens are thrown away). Turn 0
    of a group's requests (identical prompts) gets variants 0, 1, 2, ... in batch order; later turns read their
    variant back from the prompt."""

    def __init__(self, hf_engine: Any, tokenizer: Any, records: dict[str, dict], num_frames: int):
        from rollout.scripted_engine import ScriptedEngine

        self.hf, self.tokenizer, self.records, self.num_frames = hf_engine, tokenizer, records, num_frames
        self.scripted = ScriptedEngine(tokenizer, lambda req, turn: "")

    def _texts(self, requests: list) -> list[str]:
        seen: dict[tuple, int] = {}
        texts = []
        for req in requests:
            prompt = self.tokenizer.decode(req.prompt_ids, skip_special_tokens=False)
            turn = self.scripted.turn_index(req.prompt_ids)
            plan = _PLAN.search(prompt)
            if plan is None:
                key = tuple(req.prompt_ids)
                variant = seen[key] = seen.get(key, -1) + 1
            else:
                variant = int(plan.group(1))
            record = next(r for rid, r in self.records.items() if f"[{rid}]" in prompt)
            texts.append(scripted_turns(record, variant, self.num_frames)[turn])
        return texts

    def generate(self, requests: list, sampling: Any) -> list:
        texts = {id(req): text for req, text in zip(requests, self._texts(requests))}
        self.scripted.script = lambda req, turn: texts[id(req)]
        out = self.scripted.generate(requests, sampling)
        # The cost: the real model on all requests for as many tokens as the longest scripted turn has. The hf
        # engine samples a call's requests as one batch, which runs until its longest row is done.
        longest = max((len(c.token_ids) for c in out), default=0)
        if longest:
            self.hf.generate(requests, dataclasses.replace(sampling, max_new_tokens=longest, stop_strings=[]))
        return out

    def update_weights(self, named_tensors: Any) -> None:
        self.hf.update_weights(named_tensors)


class PacedStreamingEngine(PacedScriptedEngine):
    """The same pacing on an engine with continuous batching (vLLM): each request runs on the real engine, in the
    batch it joins, for as many tokens as its own scripted turn has, and finishes with it; the asynchronous loop
    takes the streaming path (`submit` / `step`). Turn 0's variants are numbered per prompt modulo G."""

    def __init__(self, engine: Any, tokenizer: Any, records: dict[str, dict], num_frames: int, group: int):
        super().__init__(engine, tokenizer, records, num_frames)
        self.group = group
        self._turn0: dict[tuple, int] = {}
        self._scripted: dict[str, Any] = {}

    def _text(self, req: Any) -> str:
        if self.scripted.turn_index(req.prompt_ids) == 0:
            key = tuple(req.prompt_ids)
            self._turn0[key] = self._turn0.get(key, -1) + 1
            variant = self._turn0[key] % self.group
            record = next(r for rid, r in self.records.items() if f"[{rid}]" in self.tokenizer.decode(req.prompt_ids))
            return scripted_turns(record, variant, self.num_frames)[0]
        return self._texts([req])[0]

    def generate(self, requests: list, sampling: Any) -> list:
        keys = [self.submit(req, sampling) for req in requests]
        done: dict[str, Any] = {}
        while len(done) < len(keys):
            done.update(self.step())
        return [done[k] for k in keys]

    def submit(self, req: Any, sampling: Any) -> str:
        text = self._text(req)
        self.scripted.script = lambda r, turn: text
        (completion,) = self.scripted.generate([req], sampling)
        paced = dataclasses.replace(
            sampling, max_new_tokens=max(len(completion.token_ids), 1), stop_strings=[], stop_token_ids=[]
        )
        key = self.hf.submit(req, paced)
        self._scripted[key] = completion
        return key

    def step(self) -> list:
        return [(key, self._scripted.pop(key)) for key, _ in self.hf.step()]


def _worker(argv: list[str]) -> tuple[Any, list[dict], Any]:
    """The rollout worker of the Video-STAR default (+ overrides), its engine paced, and the sample records."""
    from recipes import grpo
    from recipes.run import load_records, resolve_model, resolve_records
    from rollout.worker import RolloutWorker

    cfg = grpo.load(argv, Path(grpo.__file__).with_name("configs") / "videostar_grpo.yaml")
    records = [r for r in load_records(resolve_records(cfg.data.train)) if r.get("task") == "ovar"]
    # Each record's prompt names it, so that the scripted policy knows which record a request is for.
    records = [{**r, "prompt": f"[{r['id']}] {r['prompt']}"} for r in records]
    worker = RolloutWorker(cfg.rollout, resolve_model(cfg.model.path), seed=0, torch_threads=1)
    by_id = {str(r["id"]): r for r in records}
    if callable(getattr(worker.engine, "submit", None)):  # continuous batching (vLLM)
        paced = PacedStreamingEngine(worker.engine, worker.tokenizer, by_id, cfg.rollout.num_frames, cfg.rollout.n)
    else:
        paced = PacedScriptedEngine(worker.engine, worker.tokenizer, by_id, cfg.rollout.num_frames)
    worker.engine = paced
    return worker, records, cfg


def measure(worker: Any, records: list[dict], n: int, repeats: int) -> dict[str, list[float]]:
    """Episodes per second of each loop, `repeats` times, alternating the loops so that machine noise hits both."""
    from rollout.group import sampling_params

    sampling = sampling_params(worker.cfg, seed=0)
    rates: dict[str, list[float]] = {loop: [] for loop in LOOPS}
    worker.rollout(records, n, sampling)  # warm-up: tool actors, model and video caches
    for rep in range(repeats):
        for loop in LOOPS if rep % 2 == 0 else LOOPS[::-1]:
            worker.cfg.loop = loop
            clear = getattr(worker.tools, "clear_cache", None)
            if clear:
                clear()
            start = time.perf_counter()
            trajs = worker.rollout(records, n, sampling)
            rates[loop].append(len(trajs) / (time.perf_counter() - start))
    return rates


def main(argv: list[str]) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3, help="measured batches of each loop")
    parser.add_argument("--records", type=int, default=0, help="records per batch (default: data.batch_size)")
    args, overrides = parser.parse_known_args(argv)
    import ray

    ray.init(num_cpus=4, num_gpus=0, include_dashboard=False, log_to_driver=False)
    try:
        worker, records, cfg = _worker(overrides)
        batch = records[: args.records or cfg.data.batch_size]
        rates = measure(worker, batch, cfg.rollout.n, args.repeats)
    finally:
        ray.shutdown()
    summary = {loop: sum(r) / len(r) for loop, r in rates.items()}
    summary["ratio"] = summary["async"] / summary["barrier"]
    print(f"\n{len(batch)} records x G={cfg.rollout.n}, {args.repeats} batches of each loop, interleaved")
    for loop in LOOPS:
        print(f"{loop:<8} episodes/s: mean {summary[loop]:.3f}  ({', '.join(f'{r:.3f}' for r in rates[loop])})")
    print(f"async / barrier: {summary['ratio']:.2f}x")
    return summary


if __name__ == "__main__":
    main(sys.argv[1:])
