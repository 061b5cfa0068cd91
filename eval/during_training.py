"""Evaluation during training: every K steps the recipe saves a checkpoint and hands it to eval actors that run on
their own Ray resources; training goes on, and each evaluation's metrics are logged, tagged with its step, when it
completes.

In a recipe config (the `eval` section):

    eval: {every_k: 50, benchmark: /data/hmdb51/test.jsonl, actors: 2, num_gpus: 1}

Each completed evaluation appends one line to `<run_dir>/eval_metrics.jsonl` ({"step": 50, "eval/<metric>": ...})
and rewrites `<run_dir>/eval/` (results.jsonl, metrics.json, table.md, plots), as `python -m eval.run` would.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from eval.checkpoints import Checkpoint


@dataclass
class EvalConfig:
    every_k: int = 0
    """Evaluate the policy every K training steps (a checkpoint is saved at those steps); 0 turns it off."""
    benchmark: str = "sample-ovar"
    """A benchmark name, records file or dataset builder output folder (see docs/eval.md)."""
    actors: int = 1
    """Eval actors; each loads the checkpoint and takes a share of the records."""
    num_cpus: float = 0.5
    num_gpus: float = 0.0
    """Resources of each eval actor, apart from the rollout workers' and trainer ranks'."""
    max_new_tokens: int = 96
    max_response_tokens: int = 640
    limit: int = 0
    """Evaluate only the first N records (0: all of them)."""
    skip_failed: bool = False
    """Leave samples whose video fails out of the metrics (by default they count as wrong)."""
    engine_kwargs: dict[str, Any] = field(default_factory=dict)


class TrainingEval:
    """Launches evaluations of saved checkpoints without waiting and logs them when they finish."""

    def __init__(self, cfg: EvalConfig, run_dir: str | Path, options: Any = None):
        """Resolves and validates the benchmark now (before Ray starts); the actors start on the first launch."""
        from eval.benchmarks import load_benchmark

        self.cfg, self.run_dir = cfg, Path(run_dir)
        self.benchmark = load_benchmark(cfg.benchmark, limit=cfg.limit or None) if cfg.every_k > 0 else None
        self.options = options
        self.evaluator = None
        self.pending: list = []
        self.entries: list[dict] = []
        self.results: list = []

    @classmethod
    def from_recipe(cls, cfg: Any, run_dir: str | Path, system_prompt: str) -> TrainingEval:
        """From a recipe config (sections eval, rollout, tools, data): the same engine, tools, frames and system
        prompt as the rollouts, greedy decoding."""
        from eval.runner import EvalOptions

        e = cfg.eval
        # a tool set to null in the recipe is disabled: the eval actors get the same tools as training
        options = EvalOptions(
            actors=e.actors, engine=cfg.rollout.engine, engine_kwargs=dict(e.engine_kwargs), num_cpus=e.num_cpus,
            num_gpus=e.num_gpus, tools={k: dict(v) for k, v in cfg.tools.enabled.items() if v is not None},
            num_frames=cfg.data.num_frames, max_side=cfg.data.max_side, system_prompt=system_prompt,
            max_turns=cfg.rollout.max_turns, max_new_tokens=e.max_new_tokens,
            max_response_tokens=e.max_response_tokens, skip_failed=e.skip_failed,
        )  # fmt: skip
        return cls(e, run_dir, options)

    def due(self, step: int) -> bool:
        return self.benchmark is not None and step % self.cfg.every_k == 0

    def launch(self, step: int, checkpoint: str | Path) -> bool:
        """Start evaluating the checkpoint saved at `step` if an evaluation is due then; returns at once."""
        if not self.due(step):
            return False
        if self.evaluator is None:
            from eval.runner import EvalOptions, Evaluator

            self.evaluator = Evaluator(self.benchmark, self.options or EvalOptions(actors=self.cfg.actors))
        self.pending.append(self.evaluator.submit(Checkpoint(Path(checkpoint).resolve(), step)))
        print(f"[eval] step {step}: evaluating {checkpoint} on {self.benchmark.name} in the background", flush=True)
        return True

    def poll(self, wait: bool = False) -> list[dict]:
        """Log the evaluations that have finished (all of them with `wait`); returns their log lines."""
        logged = []
        for pending in list(self.pending):
            if not wait and not pending.done():
                continue
            self.pending.remove(pending)
            try:
                result = self.evaluator.collect(pending, progress=False)
            except Exception as e:  # a failed evaluation is reported, and training goes on
                logged.append(self._log_error(pending.checkpoint.step, e))
                continue
            logged.append(self._log(result))
        return logged

    def _log_error(self, step: int | None, error: Exception) -> dict:
        line = {"step": step, "eval/benchmark": self.benchmark.name, "eval/error": f"{type(error).__name__}: {error}"}
        with (self.run_dir / "eval_metrics.jsonl").open("a") as f:
            f.write(json.dumps(line) + "\n")
        print(f"[eval] step {step}: evaluation failed: {line['eval/error'][:500]}", flush=True)
        return line

    def _log(self, result: Any) -> dict:
        from eval import report

        line = {"step": result.checkpoint.step, "eval/benchmark": self.benchmark.name}
        line.update({f"eval/{k}": report.json_value(v) for k, v in result.metrics.items()})
        with (self.run_dir / "eval_metrics.jsonl").open("a") as f:
            f.write(json.dumps(line) + "\n")
        out = self.run_dir / "eval"
        out.mkdir(exist_ok=True)
        self.entries.append(report.entry(result))
        self.results.append(result)
        report.append_results(out, result)
        report.write_metrics(out, self.benchmark, self.entries)
        (out / "table.md").write_text(report.table(self.benchmark, self.entries))
        report.plot_metrics(self.benchmark, self.entries, out)
        report.plot_aqa_scatter(self.results, self.benchmark, out)
        shown = "  ".join(f"{k}={v:.4g}" for k, v in result.metrics.items() if isinstance(v, float))
        print(f"[eval] step {line['step']} ({self.benchmark.name}): {shown}", flush=True)
        return line

    def close(self) -> list[dict]:
        """Wait for the evaluations still running, log them, and end the actors."""
        logged = self.poll(wait=True)
        if self.evaluator is not None:
            self.evaluator.shutdown()
            self.evaluator = None
        return logged
