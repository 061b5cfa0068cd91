"""The eval config (a recipe's `eval:` section) and the run config an evaluation reads back.

A recipe saves its resolved config as `<run_dir>/config.yaml`; its `rollout:` section holds the system prompt (the
text), the tools, the frames and the budgets the policy was trained with. `run_rollout_config` reads it back, so
`python -m eval.run --checkpoint RUN/checkpoint-4` evaluates the checkpoint under the prompt it learned.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rollout.config import RolloutConfig


def metric_option_values() -> dict[str, tuple[str, ...]]:
    """Every task's metric options (`TaskSpec.options`): name -> allowed values, the first the default."""
    from eval.tasks import TASKS

    return {name: values for spec in TASKS.values() for name, values in spec.options.items()}


@dataclass
class EvalConfig:
    """Evaluation beside training: eval actors score saved checkpoints on a benchmark (docs/eval.md)."""

    every_k: int = 0
    """Evaluate the policy every K training steps (a checkpoint is saved at those steps); 0 turns it off."""
    benchmark: str = "sample-ovar"
    """A benchmark name, records file or dataset builder output folder (see docs/eval.md)."""
    actors: int = 1
    """Eval actors; each loads the checkpoint and takes a share of the records."""
    num_cpus: float = 0.5
    """CPUs reserved for each eval actor, apart from the rollout workers' and trainer ranks'."""
    num_gpus: float = 0.0
    """GPUs for each eval actor."""
    temperature: float = 0.0
    """Sampling temperature of the evaluation (0: greedy). Everything else comes from the `rollout:` section."""
    limit: int = 0
    """Evaluate only the first N records (0: all of them)."""
    skip_failed: bool = False
    """Leave samples whose video fails out of the metrics (by default they count as wrong)."""
    rl2_range: str = "set"
    """AQA: the range relative L2 divides by: "set" (the evaluated set's true scores, as CoRe's and TSA's code and
    HieroAction's tables) or "action" (the true scores of the sample's action, e.g. its dive code). docs/eval.md."""
    tiou_mode: str = "max"
    """AQA: the tIoU form: "max" (matched IoU sum / max(#predicted, #true): missing and extra segments cost) or
    "paper" (HieroAction's mean over matched pairs, which one exact segment or a spray of segments drives to 1)."""
    judge: dict[str, Any] = field(default_factory=dict)
    """The judge of a `describe` benchmark (GPS's semantic entailment), as the `semantic_entailment` reward's `judge`
    argument, e.g. {kind: openai, base_url: ..., model: ..., api_key_env: ...}; needed when one is evaluated."""
    entailment_mode: str = "all"
    """`describe`: the judge labels all gold points of a description in one prompt ("all", the paper's evaluator)
    or each in its own prompt ("each")."""
    engine_kwargs: dict[str, Any] = field(default_factory=dict)
    """Engine arguments of the eval actors, over `rollout.engine_kwargs` (e.g. a smaller gpu_memory_utilization)."""
    samples: int = 0
    """SFT recipes: training records the policy rolls out after the last step (and before the first with
    `before`), scored with the recipe's `rewards` (format, accuracy, tool-call and answer rates); 0: none."""
    before: bool = False
    """SFT recipes: also roll out the untrained policy on those records first (logged as step 0)."""

    def validate(self, where: str = "eval") -> list[str]:
        problems = []
        for name in ("every_k", "limit", "samples"):
            if getattr(self, name) < 0:
                problems.append(f"{where}.{name}: must be >= 0, got {getattr(self, name)}")
        if self.actors < 1:
            problems.append(f"{where}.actors: must be >= 1, got {self.actors}")
        if self.temperature < 0:
            problems.append(f"{where}.temperature: must be >= 0, got {self.temperature}")
        for name, allowed in metric_option_values().items():
            if getattr(self, name) not in allowed:
                problems.append(
                    f"{where}.{name}: {getattr(self, name)!r} is not one of {', '.join(map(repr, allowed))}"
                )
        if self.entailment_mode not in ("all", "each"):
            problems.append(f"{where}.entailment_mode: {self.entailment_mode!r} is not one of 'all', 'each'")
        if self.every_k > 0:
            from eval.benchmarks import BenchmarkError, load_benchmark

            try:
                task = load_benchmark(self.benchmark, limit=self.limit or None).task
            except BenchmarkError as e:
                problems.append(f"{where}.benchmark: {e}")
            else:
                if task == "describe" and not self.judge:
                    problems.append(
                        f"{where}.judge: the describe benchmark {self.benchmark} needs a judge (docs/eval.md)"
                    )
        return problems

    def metric_options(self) -> dict[str, str]:
        """The metric options of this section (`rl2_range`, `tiou_mode`), for `eval.tasks.aggregate`."""
        return {name: getattr(self, name) for name in metric_option_values()}

    def rollout_for_eval(self, rollout: RolloutConfig, uses_tools: bool = True) -> RolloutConfig:
        """The training rollout config as the eval actors use it: one episode per record, at this temperature, with
        these engine arguments; without tools for a task that does not use them."""
        import copy

        out = copy.deepcopy(rollout)
        out.n, out.temperature = 1, self.temperature
        out.engine_kwargs = {**rollout.engine_kwargs, **self.engine_kwargs}
        if not uses_tools:
            out.tools = {}
        return out


def run_rollout_config(run_dir: str | Path) -> RolloutConfig | None:
    """The `rollout:` section of a recipe run's `config.yaml` (None when the run directory has none). Keys this
    version does not know are ignored with a warning, so an older run still evaluates."""
    import sys

    from omegaconf import OmegaConf

    path = Path(run_dir) / "config.yaml"
    if not path.is_file():
        return None
    saved = OmegaConf.to_container(OmegaConf.load(path), resolve=True)
    section = saved.get("rollout") if isinstance(saved, dict) else None
    if not isinstance(section, dict):
        return None
    known = set(RolloutConfig.__dataclass_fields__)
    unknown = sorted(set(section) - known)
    if unknown:
        print(f"[eval] {path}: ignoring rollout keys this version does not know: {unknown}", file=sys.stderr)
    merged = OmegaConf.merge(OmegaConf.structured(RolloutConfig), {k: v for k, v in section.items() if k in known})
    return OmegaConf.to_object(merged)
