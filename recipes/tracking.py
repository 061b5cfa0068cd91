"""Metric trackers for training runs: metrics.jsonl always, TensorBoard and Weights & Biases when chosen.

A recipe names its trackers in `run.trackers` (`jsonl`, `tensorboard`, `wandb`), checks them with
`check_trackers` before Ray starts, and logs one dict of metrics per step:

    start_step = resume(cfg.run, run_dir, trainer, sampler)  # recipes.run.resume
    with Tracker(run_dir, cfg.run.trackers, config=dataclasses.asdict(cfg), run_name=run_dir.name,
                 resume_from_step=start_step) as tracker:
        for step in range(start_step + 1, cfg.run.steps + 1):
            ...
            tracker.log(metrics)  # metrics["step"] is the step
    plot_rewards(tracker.rows(), run_dir / "rewards.png")

What each writes (docs/tracking.md has more):
- `jsonl`: `<run_dir>/metrics.jsonl`, one flat JSON object per step, every value (strings and None too). It is
  written whatever `run.trackers` says: plots, resume and the end-to-end tests read it.
- `tensorboard`: scalars under `<run_dir>/tensorboard/` (`tensorboard --logdir <run_dir>/tensorboard`).
- `wandb`: a W&B run under `<run_dir>/wandb/`, offline unless `WANDB_MODE=online`; upload an offline run later
  with `wandb sync <run_dir>/wandb/offline-run-*`.

The heavy libraries (torch's SummaryWriter, wandb, matplotlib) are imported only when chosen or used.
"""

from __future__ import annotations

import difflib
import importlib.util
import json
import numbers
import os
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from recipes.config import ConfigError

TRACKERS = ("jsonl", "tensorboard", "wandb")

# the package each optional tracker needs, and what to install (the same ranges as the `trackers` extra)
_PACKAGES = {"tensorboard": ("tensorboard", "tensorboard>=2.14"), "wandb": ("wandb", "wandb>=0.17")}
_WANDB_MODES = ("online", "offline", "disabled", "shared")

GRPO_CONSOLE_KEYS = ("reward/total_mean", "train/pg_loss", "train/kl", "train/grad_norm", "tools/calls", "time/step")
SFT_CONSOLE_KEYS = ("sft/loss", "sft/lr", "sft/grad_norm", "eval/format_mean", "eval/tool_call_rate", "time/step")


def check_trackers(names: Iterable[str]) -> list[str]:
    """The problems with `run.trackers`, each a sentence naming the bad value and what is allowed (empty: fine).

    Cheap enough to run before Ray starts: it looks the optional packages up without importing them.

    >>> check_trackers(["jsonl", "tensorboard"]) if importlib.util.find_spec("tensorboard") else []
    []
    >>> check_trackers(["jsonl", "csv"])
    ["run.trackers: unknown tracker 'csv'; choose from jsonl, tensorboard, wandb"]
    """
    if isinstance(names, str) or not isinstance(names, Iterable):
        return [f"run.trackers must be a list of names such as [jsonl,tensorboard], got {names!r}"]
    names = list(names)
    problems = []
    for name in names:
        if name not in TRACKERS:
            close = difflib.get_close_matches(str(name), TRACKERS, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            problems.append(f"run.trackers: unknown tracker {name!r}{hint}; choose from {', '.join(TRACKERS)}")
        elif name in _PACKAGES and importlib.util.find_spec(_PACKAGES[name][0]) is None:
            module, requirement = _PACKAGES[name]
            problems.append(
                f"run.trackers: {name!r} needs the {module} package, which is not installed: "
                f"pip install '{requirement}' (or pip install -e '.[trackers]')"
            )
    mode = os.environ.get("WANDB_MODE", "offline")
    if "wandb" in names and mode not in _WANDB_MODES:
        problems.append(f"run.trackers: wandb: WANDB_MODE={mode!r} is not one of {', '.join(_WANDB_MODES)}")
    return problems


class Tracker:
    """Sends each step's metrics to metrics.jsonl and the chosen trackers, and prints a one-line summary.

    `names`: trackers from TRACKERS (metrics.jsonl is written in any case). `config`: the resolved run config, shown
    by wandb beside the run. `run_name`: wandb's name for the run (empty: wandb picks one). `console_keys`: the
    metrics the one-line summary shows. `resume_from_step`: the step of the checkpoint a run resumes from (0 when
    it starts over); the rows metrics.jsonl holds after it are dropped, since the run logs those steps again, and
    TensorBoard hides its events from those steps likewise.
    """

    def __init__(
        self,
        run_dir: str | Path,
        names: Iterable[str] = ("jsonl",),
        config: dict | None = None,
        run_name: str = "",
        console_keys: tuple[str, ...] = GRPO_CONSOLE_KEYS,
        resume_from_step: int | None = None,
    ):
        names = list(names)
        problems = check_trackers(names)
        if problems:
            raise ConfigError("; ".join(problems))
        self.names = tuple(dict.fromkeys(["jsonl", *names]))
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.path = self.run_dir / "metrics.jsonl"
        self.console_keys = tuple(console_keys)
        self.last: dict[str, Any] = {}
        self._wandb_step = -1  # the last step sent to wandb, which refuses to go back
        self._warned_late = False
        if resume_from_step is not None:
            _drop_rows_after(self.path, int(resume_from_step))
        self._tensorboard = self._open_tensorboard(resume_from_step) if "tensorboard" in self.names else None
        self._wandb = self._open_wandb(config, run_name) if "wandb" in self.names else None

    def _open_tensorboard(self, resume_from_step: int | None) -> Any:
        from torch.utils.tensorboard import SummaryWriter

        # purge_step: TensorBoard hides the events an earlier attempt wrote from this step on (as metrics.jsonl)
        purge_step = None if resume_from_step is None else int(resume_from_step) + 1
        return SummaryWriter(log_dir=str(self.run_dir / "tensorboard"), purge_step=purge_step)

    def _open_wandb(self, config: dict | None, run_name: str) -> Any:
        import wandb

        # offline unless asked: runs must work without a network; `wandb sync` uploads the run afterwards
        return wandb.init(
            mode=os.environ.get("WANDB_MODE", "offline"),
            dir=str(self.run_dir),
            config=config,
            name=run_name or None,
            project=os.environ.get("WANDB_PROJECT", "actionrl"),
        )

    def log(self, metrics: dict[str, Any], step: int | None = None) -> None:
        """Log one step's metrics (`step` defaults to metrics["step"]). Every value goes to metrics.jsonl; the
        numbers (bools as 0/1) go to TensorBoard and wandb as well."""
        if step is None and "step" not in metrics:
            raise ValueError("Tracker.log: pass step= or a 'step' key in metrics")
        step = int(metrics["step"] if step is None else step)
        self.last = metrics
        row = metrics if "step" in metrics else {"step": step, **metrics}
        with self.path.open("a") as f:
            f.write(json.dumps(row) + "\n")
        scalars = {k: float(v) for k, v in metrics.items() if k != "step" and isinstance(v, numbers.Real)}
        if self._tensorboard is not None:
            for key, value in scalars.items():
                self._tensorboard.add_scalar(key, value, step)
            self._tensorboard.flush()  # a live TensorBoard sees each step as it is logged
        if self._wandb is not None:
            self._log_wandb(scalars, step)
        shown = "  ".join(f"{k.split('/')[-1]}={scalars[k]:.4g}" for k in self.console_keys if k in scalars)
        print(f"[step {step}] {shown}", flush=True)

    def _log_wandb(self, scalars: dict[str, float], step: int) -> None:
        if step < self._wandb_step:
            # wandb drops a step below its last one (with a warning that WANDB_SILENT hides): say so once
            if not self._warned_late:
                print(
                    f"[tracking] wandb cannot log step {step} after step {self._wandb_step}; such late rows are in "
                    "metrics.jsonl and TensorBoard only",
                    file=sys.stderr,
                    flush=True,
                )
                self._warned_late = True
            return
        self._wandb.log(scalars, step=step)
        self._wandb_step = step

    def rewind(self, step: int) -> None:
        """The run goes back to `step` (the trainer was rebuilt from that step's checkpoint) and logs the later
        steps again: their rows leave metrics.jsonl now, and TensorBoard hides its events after `step` (wandb keeps
        what it has and drops the repeated steps, see `_log_wandb`)."""
        _drop_rows_after(self.path, int(step))
        if self._tensorboard is not None:
            self._tensorboard.close()
            self._tensorboard = self._open_tensorboard(int(step))

    def rows(self) -> list[dict]:
        """The rows of metrics.jsonl, earlier attempts of a resumed run included."""
        if not self.path.exists():
            return []
        return [json.loads(line) for line in self.path.read_text().splitlines() if line.strip()]

    def close(self, failed: bool = False) -> None:
        """Flush and close TensorBoard's file, finish the wandb run (marked failed with `failed`). Idempotent."""
        if self._tensorboard is not None:
            self._tensorboard.close()
            self._tensorboard = None
        if self._wandb is not None:
            self._wandb.finish(exit_code=1 if failed else 0)
            self._wandb = None

    def __enter__(self) -> Tracker:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        self.close(failed=exc_type is not None)


def _drop_rows_after(path: Path, step: int) -> None:
    """Keep the rows of metrics.jsonl up to `step`; a line cut short by a crash is dropped too."""
    if not path.exists():
        return
    kept, dropped = [], 0
    for line in path.read_text().splitlines():
        if not line.strip():
            continue
        try:
            row_step = json.loads(line).get("step")
        except (json.JSONDecodeError, AttributeError):
            dropped += 1
            continue
        if isinstance(row_step, numbers.Real) and row_step > step:
            dropped += 1
        else:
            kept.append(line)
    if dropped:
        tmp = path.with_suffix(".jsonl.tmp")
        tmp.write_text("".join(line + "\n" for line in kept))
        os.replace(tmp, path)  # atomic: a crash here leaves the old file or the new one, never half of it
        print(f"[tracking] {path.name}: dropped {dropped} rows after step {step}, which this run logs again")


# ------------------------------------------------------------------------------------------------------- plots
def plot_rewards(rows: list[dict], out: Path) -> Path:
    """A PNG of the reward curves (total and each component's mean) over steps."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    keys = sorted({k for r in rows for k in r if k.startswith("reward/") and k.endswith("_mean")})
    fig, ax = plt.subplots(figsize=(7, 4))
    steps = [r["step"] for r in rows]
    for key in keys:
        ax.plot(steps, [r.get(key, float("nan")) for r in rows], marker="o", label=key[len("reward/") : -5])
    ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    ax.set_xlabel("step")
    ax.set_ylabel("mean reward")
    ax.set_title("Rewards per step")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out


def plot_sft(rows: list[dict], out: Path) -> Path:
    """Loss (and learning rate) per step."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in rows if "sft/loss" in r]
    fig, ax = plt.subplots(figsize=(7, 4))
    steps = [r["step"] for r in rows]
    ax.plot(steps, [r["sft/loss"] for r in rows], marker=".", label="loss (token mean)")
    ax.set_xlabel("step")
    ax.set_ylabel("cross-entropy")
    ax.grid(alpha=0.3)
    lr_ax = ax.twinx()
    lr_ax.plot(steps, [r["sft/lr"] for r in rows], color="tab:orange", alpha=0.6, label="lr")
    lr_ax.set_ylabel("learning rate")
    ax.set_title("SFT")
    fig.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out
