"""Split a benchmark across N EvalActors, gather their rows in record order, and compute a checkpoint's metrics.

`Evaluator.submit` returns at once (the actors work on their own resources); `Pending.done()` polls and
`Evaluator.collect` waits (with a progress bar). The CLI (`eval.run`) and evaluation during training
(`eval.during_training`) both use it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from eval.benchmarks import Benchmark
from eval.checkpoints import Checkpoint
from eval.tasks import aggregate
from rollout.config import RolloutConfig

CHUNK = 2  # records per actor call: small enough for a live progress bar, large enough to batch a turn


@dataclass
class EvalOptions:
    rollout: RolloutConfig = field(default_factory=RolloutConfig)
    """How each record is rolled out: the training run's prompt, tools, frames and budgets, one greedy episode
    (`EvalConfig.rollout_for_eval`). A task that does not use tools gets none."""
    actors: int = 1
    num_cpus: float = 1.0
    num_gpus: float = 0.0
    skip_failed: bool = False
    judge: dict[str, Any] | None = None
    """An OpenAI-compatible (or hf) judge spec as the entailment reward takes it; needed by `describe`."""
    llm_judge: bool = False
    """Also ask the judge HieroAction's yes/no + 0-5 question about every reply."""
    sources: dict[str, str] = field(default_factory=dict)
    """Where each rollout setting came from ("run config", "flag", "default"), for the report."""


@dataclass
class Pending:
    checkpoint: Checkpoint
    variant: str
    futures: list[Any]

    def done(self) -> bool:
        import ray

        ready, _ = ray.wait(self.futures, num_returns=len(self.futures), timeout=0)
        return len(ready) == len(self.futures)


@dataclass
class EvalResult:
    checkpoint: Checkpoint
    variant: str
    rows: list[dict]
    metrics: dict[str, float]


class Evaluator:
    """N EvalActors on one benchmark; each `submit` loads a checkpoint into all of them and splits the records."""

    def __init__(self, benchmark: Benchmark, options: EvalOptions):
        import ray

        from eval.actor import EvalActor

        self.benchmark, self.options = benchmark, options
        o = options
        remote = ray.remote(num_cpus=o.num_cpus, num_gpus=o.num_gpus)(EvalActor)
        rollout = o.rollout
        if not benchmark.spec.uses_tools:
            rollout = dataclasses.replace(rollout, tools={})
        threads = 1 if o.num_gpus == 0 else None
        self.actors = [remote.remote(rollout, torch_threads=threads) for _ in range(max(1, o.actors))]

    def submit(self, checkpoint: Checkpoint, variant: str = "") -> Pending:
        """Queue the whole benchmark on the actors (chunks dealt round-robin); returns without waiting."""
        recs, task = self.benchmark.records, self.benchmark.task
        modules = [m for m in variant.split("+") if m] if variant else None
        futures, path = [], str(checkpoint.path)  # each call names its checkpoint: a failed load fails the calls
        for n, start in enumerate(range(0, len(recs), CHUNK)):
            idx = list(range(start, min(start + CHUNK, len(recs))))
            actor = self.actors[n % len(self.actors)]
            futures.append(actor.evaluate.remote([recs[i] for i in idx], task, path, idx, modules))
        return Pending(checkpoint, variant, futures)

    def collect(self, pending: Pending, progress: bool = True) -> EvalResult:
        """Wait for a submitted evaluation; rows in record order, judged if asked, then the metrics."""
        import ray
        from tqdm import tqdm

        rows: list[dict] = []
        remaining = list(pending.futures)
        label = f"{pending.checkpoint.label}{' +' + pending.variant if pending.variant else ''}"
        with tqdm(total=len(self.benchmark.records), desc=f"eval {label}", unit="sample", disable=not progress) as bar:
            while remaining:
                ready, remaining = ray.wait(remaining, num_returns=1)
                part = ray.get(ready[0])
                rows.extend(part)
                bar.update(len(part))
        rows.sort(key=lambda r: r["index"])
        return self.finish(pending, rows)

    def finish(self, pending: Pending, rows: list[dict]) -> EvalResult:
        recs = self.benchmark.records
        if len(rows) != len(recs):
            raise RuntimeError(f"eval: {len(rows)} results for {len(recs)} records")
        step = pending.checkpoint.step
        for row in rows:
            row.update({"checkpoint": str(pending.checkpoint.path), "step": step, "variant": pending.variant})
        if self.benchmark.task == "describe":
            _entailment(rows, recs, self.options.judge)
        if self.options.llm_judge:
            _llm_judge(rows, recs, self.options.judge)
        metrics = aggregate(self.benchmark.task, rows, recs, skip_failed=self.options.skip_failed)
        return EvalResult(pending.checkpoint, pending.variant, rows, metrics)

    def shutdown(self) -> None:
        import ray

        for actor in self.actors:
            ray.kill(actor)


def _entailment(rows: list[dict], records: list[dict], judge: dict | None) -> None:
    """GPS's semantic entailment of each description (the reward's code and judge), into row metrics."""
    from rewards.entailment import semantic_entailment
    from rollout.trajectory import Trajectory

    trajs = [Trajectory(r["id"], 0, [], [], [], [], final_text="" if r["failed"] else r["prediction"]) for r in rows]
    for row, value in zip(rows, semantic_entailment(trajs, records, judge=judge)):
        row["metrics"]["entailment"] = 0.0 if value is None else value


def _llm_judge(rows: list[dict], records: list[dict], judge: dict | None) -> None:
    """HieroAction's LLM judge: yes/no + 0-5 per reply (its Figure 4 prompt)."""
    from eval.metrics import judge_prompt, parse_judge_reply
    from rewards.entailment import get_judge

    prompts = [
        judge_prompt(rec["prompt"], rec["answer"], "" if r["failed"] else r["prediction"])
        for r, rec in zip(rows, records)
    ]
    replies = get_judge(judge)(prompts)
    for row, reply in zip(rows, replies, strict=True):
        yes, score = parse_judge_reply(reply)
        row["judge"] = {"yes": yes, "score": score}
