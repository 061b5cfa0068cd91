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
from pathlib import Path
from typing import Any

from common.waits import DEFAULT_TIMEOUT_S
from eval.checkpoints import Checkpoint
from eval.config import EvalConfig
from rollout.config import RolloutConfig


class TrainingEval:
    """Launches evaluations of saved checkpoints without waiting and logs them when they finish."""

    def __init__(
        self,
        cfg: EvalConfig,
        run_dir: str | Path,
        rollout: RolloutConfig,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        retries: int = 2,
    ):
        """`cfg`: the recipe's `eval:` section; `rollout`: its `rollout:` section (the eval actors use the same
        engine, prompt, tools and frames, one greedy episode per record); `timeout_s`: the run's `run.timeout_s`
        (an eval actor silent that long is killed and replaced); `retries`: run.actor_retries (a chunk whose
        actor died or hung more often than that fails its evaluation, which is logged as failed). Resolves and
        validates the benchmark now, before Ray starts; the actors start on the first launch."""
        from eval.benchmarks import load_benchmark

        self.cfg, self.run_dir, self.rollout = cfg, Path(run_dir), rollout
        self.timeout_s, self.retries = timeout_s, retries
        self.benchmark = load_benchmark(cfg.benchmark, limit=cfg.limit or None) if cfg.every_k > 0 else None
        self.evaluator = None
        self.pending: list = []
        self.entries: list[dict] = []
        self.results: list = []

    @property
    def options(self) -> Any:
        """The eval actors' options (`eval.runner.EvalOptions`), read from the sections when asked, so resources
        changed after this object was made (a recipe fits the embedded default's CPUs once Ray is up) apply."""
        from eval.runner import EvalOptions

        cfg = self.cfg
        uses_tools = self.benchmark is None or self.benchmark.spec.uses_tools
        return EvalOptions(
            rollout=cfg.rollout_for_eval(self.rollout, uses_tools),
            actors=cfg.actors,
            num_cpus=cfg.num_cpus,
            num_gpus=cfg.num_gpus,
            skip_failed=cfg.skip_failed,
            judge=dict(cfg.judge) or None,
            entailment_mode=cfg.entailment_mode,
            metric_options=cfg.metric_options(),
            timeout_s=self.timeout_s,
            retries=self.retries,
        )

    def due(self, step: int) -> bool:
        return self.benchmark is not None and step % self.cfg.every_k == 0

    def launch(self, step: int, checkpoint: str | Path) -> bool:
        """Start evaluating the checkpoint saved at `step` if an evaluation is due then; returns at once."""
        if not self.due(step):
            return False
        if self.evaluator is None:
            from eval.runner import Evaluator

            self.evaluator = Evaluator(self.benchmark, self.options)
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
            except Exception as e:  # a failed (or timed-out) evaluation is reported, and training goes on
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
