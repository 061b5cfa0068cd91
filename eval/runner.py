"""Split a benchmark across N EvalActors, gather their rows in record order, and compute a checkpoint's metrics.

`Evaluator.submit` returns at once (the actors work on their own resources); `Pending.done()` polls and
`Evaluator.collect` waits (with a progress bar). The CLI (`eval.run`) and evaluation during training
(`eval.during_training`) both use it.

An actor that holds work and has not answered for `EvalOptions.timeout_s` (a hung engine, a stopped process) is
killed, and `done()` turns true so that a poller collects the evaluation. The clock is per actor, not per
evaluation: an evaluation queued behind another one on the same actors is not late while that one's answers come
back. A killed or dead actor (SIGKILL, the OOM killer) is replaced and its chunks run again on the new one, which
loads the checkpoint named in each call, up to `EvalOptions.retries` times per chunk (then
`common.recovery.ActorFailedError`; with 0 retries `collect` raises the `common.waits.ActorTimeoutError` or Ray's
error at once).
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from typing import Any

from common.recovery import ActorFailedError
from common.waits import DEFAULT_TIMEOUT_S, ActorTimeoutError, actor_died, actor_name, check_timeout, kill_actors
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
    entailment_mode: str = "all"
    """`describe`: how the judge sees the gold points: "all" of a description in one prompt (the paper's
    evaluator) or "each" in its own prompt (`rewards.entailment`)."""
    llm_judge: bool = False
    """Also ask the judge HieroAction's yes/no + 0-5 question about every reply."""
    sources: dict[str, str] = field(default_factory=dict)
    """Where each rollout setting came from ("run config", "flag", "default"), for the report."""
    metric_options: dict[str, str] = field(default_factory=dict)
    """Metric options by name, e.g. {"rl2_range": "action", "tiou_mode": "paper"} (`eval.tasks.aggregate`; a task
    takes only those it declares)."""
    timeout_s: float = DEFAULT_TIMEOUT_S
    """How long an actor that holds work may go without answering (a chunk of CHUNK records; its first one also
    loads the checkpoint) before it is killed and replaced."""
    retries: int = 2
    """How often a chunk whose actor died or hung runs again on a fresh actor (run.actor_retries in training)."""
    fineagent_tools: dict[str, dict] = field(default_factory=dict)
    """Options of FineAgent's tools ({tool name: options}, as rollout.tools), for mcq variants with FineAgent."""


class ActorClock:
    """The actors' outstanding calls, and for each busy actor when it last answered (or, idle until then, was given
    work): an actor is late when it has been busy without an answer for `timeout_s`. Answers are noticed when a
    caller waits or polls, so a late actor has been silent for at least `timeout_s`, never less."""

    def __init__(self, actors: list[Any], timeout_s: float):
        self.actors, self.timeout_s = actors, check_timeout(timeout_s)
        self.calls: dict[Any, int] = {}  # outstanding call -> index of its actor
        self.since: dict[int, float] = {}

    def add(self, futures: list[Any], owners: list[int]) -> None:
        now, busy = time.monotonic(), set(self.calls.values())
        for i in set(owners) - busy:
            self.since[i] = now
        self.calls.update(zip(futures, owners))

    def answered(self, refs: list[Any]) -> None:
        now = time.monotonic()
        for ref in refs:
            i = self.calls.pop(ref, None)
            if i is not None:
                self.since[i] = now

    def poll(self) -> None:
        """Notice every answer that has come back (without waiting)."""
        import ray

        if self.calls:
            ready, _ = ray.wait(list(self.calls), num_returns=len(self.calls), timeout=0, fetch_local=False)
            self.answered(ready)

    def left(self, owners: set[int]) -> float:
        """Seconds until the first of these actors that is still busy is late (0: one is)."""
        busy = owners & set(self.calls.values())
        if not busy:
            return self.timeout_s
        return max(0.0, min(self.since[i] for i in busy) + self.timeout_s - time.monotonic())

    def late(self, owners: set[int]) -> list[int]:
        """Those of these actors that are late, after noticing the answers that have come back."""
        self.poll()
        now = time.monotonic()
        busy = owners & set(self.calls.values())
        return sorted(i for i in busy if now - self.since[i] >= self.timeout_s)

    def fail(self, late: list[int], phase: str) -> ActorTimeoutError:
        """Kill the late actors; the error to raise, naming them."""
        kill_actors([self.actors[i] for i in late])
        return ActorTimeoutError(phase, [actor_name("eval actor", i, self.actors) for i in late], self.timeout_s)


@dataclass
class Pending:
    checkpoint: Checkpoint
    variant: str
    futures: list[Any]
    owners: list[int] = field(default_factory=list)
    """The index of the actor each future's call runs on."""
    clock: ActorClock | None = None
    calls: list[tuple] = field(default_factory=list)
    """The arguments of each future's call (to run it again on a replacement actor)."""
    handles: list[Any] = field(default_factory=list)
    """The actor each future's call was given to."""
    attempts: list[int] = field(default_factory=list)

    def done(self) -> bool:
        """Every call has answered, or one of its actors is late (collect then raises at once)."""
        import ray

        ready, _ = ray.wait(self.futures, num_returns=len(self.futures), timeout=0)
        if len(ready) == len(self.futures):
            return True
        return self.clock is not None and bool(self.clock.late(set(self.owners)))


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
        self._make = lambda: remote.remote(rollout, torch_threads=threads, fineagent_tools=o.fineagent_tools)
        self.actors = [self._make() for _ in range(max(1, o.actors))]
        self.clock = ActorClock(self.actors, o.timeout_s)
        self.restarts = 0  # actors replaced

    def submit(self, checkpoint: Checkpoint, variant: str = "") -> Pending:
        """Queue the whole benchmark on the actors (chunks dealt round-robin); returns without waiting."""
        recs, task = self.benchmark.records, self.benchmark.task
        modules = [m for m in variant.split("+") if m] if variant else None
        pending = Pending(checkpoint, variant, [], [], self.clock)
        path = str(checkpoint.path)  # each call names its checkpoint: a failed load fails it
        for n, start in enumerate(range(0, len(recs), CHUNK)):
            idx = list(range(start, min(start + CHUNK, len(recs))))
            pending.calls.append(([recs[i] for i in idx], task, path, idx, modules))
            pending.owners.append(n % len(self.actors))
            pending.attempts.append(0)
            pending.handles.append(self.actors[pending.owners[-1]])
            pending.futures.append(pending.handles[-1].evaluate.remote(*pending.calls[-1]))
        self.clock.add(pending.futures, pending.owners)
        return pending

    def _rerun(self, pending: Pending, refs: list, error: BaseException) -> list:
        """Run the chunks of `refs` (their actors died or were killed) again, each on a fresh actor in its old
        actor's place; returns the new futures."""
        new = []
        for ref in refs:
            k = pending.futures.index(ref)
            i = pending.owners[k]
            pending.attempts[k] += 1
            if pending.attempts[k] > self.options.retries:
                if not self.options.retries:
                    raise error
                why = f"{type(error).__name__}: {str(error).splitlines()[0][:300]}"
                raise ActorFailedError(f"eval of {pending.checkpoint.label}", self._name(i), pending.attempts[k], why)
            if self.actors[i] is pending.handles[k]:  # not replaced yet (by another chunk of it)
                kill_actors([self.actors[i]])
                print(f"[recovery] replacing {self._name(i)}: {type(error).__name__}", flush=True)
                self.actors[i] = self._make()
                self.restarts += 1
            pending.handles[k] = self.actors[i]
            pending.futures[k] = self.actors[i].evaluate.remote(*pending.calls[k])
            self.clock.add([pending.futures[k]], [i])
            new.append(pending.futures[k])
        return new

    def _name(self, i: int) -> str:
        return actor_name("eval actor", i, self.actors)

    def collect(self, pending: Pending, progress: bool = True) -> EvalResult:
        """Wait for a submitted evaluation; rows in record order, judged if asked, then the metrics. An actor that
        is late (see ActorClock) or dies is replaced and its chunks run again (see the module docstring)."""
        import ray
        from tqdm import tqdm

        rows: list[dict] = []
        remaining = list(pending.futures)
        label = f"{pending.checkpoint.label}{' +' + pending.variant if pending.variant else ''}"
        with tqdm(total=len(self.benchmark.records), desc=f"eval {label}", unit="sample", disable=not progress) as bar:
            while remaining:
                owner = dict(zip(pending.futures, pending.owners))
                busy = {owner[ref] for ref in remaining}
                ready, remaining = ray.wait(remaining, num_returns=1, timeout=self.clock.left(busy))
                if not ready:
                    late = self.clock.late(busy)  # an answer to another evaluation may have reset an actor's clock
                    if late:
                        error = self.clock.fail(late, f"eval of {label} on {self.benchmark.name}")
                        lost = [ref for ref in remaining if owner[ref] in late]
                        self.clock.answered(lost)
                        remaining = [ref for ref in remaining if ref not in lost] + self._rerun(pending, lost, error)
                    continue
                self.clock.answered(ready)
                try:
                    part = ray.get(ready[0])
                except Exception as error:
                    if not actor_died(error):
                        raise
                    remaining += self._rerun(pending, ready, error)  # its chunk runs again on a new actor
                    continue
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
            _entailment(rows, recs, self.options.judge, self.options.entailment_mode)
        if self.options.llm_judge:
            _llm_judge(rows, recs, self.options.judge)
        o = self.options
        metrics = aggregate(self.benchmark.task, rows, recs, skip_failed=o.skip_failed, options=o.metric_options)
        return EvalResult(pending.checkpoint, pending.variant, rows, metrics)

    def shutdown(self) -> None:
        import ray

        for actor in self.actors:
            ray.kill(actor)


def _entailment(rows: list[dict], records: list[dict], judge: dict | None, mode: str = "all") -> None:
    """GPS's semantic entailment of each description (the reward's code, prompt and judge), into row metrics:
    `entailment` (0.0 for a failed sample and for a malformed judge reply, whose points all fail) and
    `judge_malformed` (1.0 for a malformed reply); the labels into `row["entailment"]`."""
    from rewards.entailment import description_of, gold_points_of, judge_points
    from rewards.helpers import entailment_score

    descriptions = ["" if r["failed"] else description_of(r["prediction"]) for r in rows]
    verdicts = judge_points(descriptions, [gold_points_of(rec) for rec in records], judge, mode)
    for row, v in zip(rows, verdicts, strict=True):
        scored = v is not None and not v.malformed
        row["metrics"]["entailment"] = entailment_score(v.labels) if scored else 0.0
        row["metrics"]["judge_malformed"] = 1.0 if v is not None and v.malformed else 0.0
        if v is not None:
            row["entailment"] = {"labels": v.labels, "malformed": v.malformed}


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
