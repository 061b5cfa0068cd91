"""What an evaluation writes: results.jsonl, metrics.json, table.md (checkpoints side by side in the paper's
layout) and PNG plots (each headline metric against the step; for AQA, predicted against true scores)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from eval import gps
from eval.benchmarks import Benchmark
from eval.runner import EvalResult


def json_value(v: Any) -> Any:
    """`v` with every NaN or infinity (an undefined metric, e.g. Spearman on constant values) as None, so the
    files are strict JSON.

    >>> json_value({"rho": float("nan"), "xs": [1.0, float("inf")]})
    {'rho': None, 'xs': [1.0, None]}
    """
    if isinstance(v, float):
        return v if math.isfinite(v) else None
    if isinstance(v, dict):
        return {k: json_value(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [json_value(x) for x in v]
    return v


def _key(line: str) -> tuple:
    row = json.loads(line)
    return row.get("checkpoint"), row.get("variant")


def append_results(out: Path, result: EvalResult) -> None:
    """Append the rows of one evaluation, replacing the rows of an earlier evaluation of the same checkpoint."""
    path = out / "results.jsonl"
    if path.is_file():
        key = (str(result.checkpoint.path), result.variant)
        kept = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip() and _key(line) != key]
        path.write_text("".join(line + "\n" for line in kept), encoding="utf-8")
    with path.open("a", encoding="utf-8") as f:
        for row in result.rows:
            f.write(json.dumps(json_value(row), ensure_ascii=False, allow_nan=False) + "\n")


def entry(result: EvalResult) -> dict:
    c = result.checkpoint
    return {
        "checkpoint": str(c.path),
        "label": c.label,
        "step": c.step,
        "variant": result.variant,
        "metrics": json_value(result.metrics),
    }


def load_entries(out: Path, benchmark: Benchmark) -> list[dict]:
    """Entries of an earlier run into the same folder on the same benchmark (so watch mode can resume)."""
    path = out / "metrics.json"
    if not path.is_file():
        return []
    data = json.loads(path.read_text())
    return data.get("results", []) if data.get("records") == str(benchmark.path) else []


def write_metrics(out: Path, benchmark: Benchmark, entries: list[dict]) -> Path:
    path = out / "metrics.json"
    data = {
        "benchmark": benchmark.name,
        "records": str(benchmark.path),
        "task": benchmark.task,
        "num_records": len(benchmark.records),
        "results": entries,
    }
    path.write_text(json.dumps(data, indent=1, allow_nan=False) + "\n")
    return path


def _fmt(v: Any) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "–"
    return f"{v:.4f}" if isinstance(v, float) else str(v)


def cell(metrics: dict, key: str) -> str:
    """A table cell: the value, or `mean ± std` for a `<metric>_fold_mean` whose `_fold_std` is there too.

    >>> cell({"top1_fold_mean": 0.775, "top1_fold_std": 0.008}, "top1_fold_mean"), cell({"hm": None}, "hm")
    ('0.7750 ± 0.0080', '–')
    """
    value = _fmt(metrics.get(key))
    std_key = key[: -len("_mean")] + "_std" if key.endswith("_fold_mean") else None
    if std_key and std_key in metrics and value != "–":
        return f"{value} ± {_fmt(metrics[std_key])}"
    return value


def table(benchmark: Benchmark, entries: list[dict]) -> str:
    """A markdown table, one row per (checkpoint, variant), the paper's columns in its order (columns no entry has
    are left out); a fold mean shows as `mean ± std`; `n` is the denominator, `failed` the samples whose video
    failed."""
    spec = benchmark.spec
    keys = {k for e in entries for k in e["metrics"]}
    dynamic = sorted(k for k in keys if spec.dynamic_prefix and k.startswith(spec.dynamic_prefix))
    cols = [(k[len(spec.dynamic_prefix) :], k) for k in dynamic] + [(h, k) for h, k in spec.columns if k in keys]
    cols += [("n", "n"), ("failed", "failed")]
    head = ["Checkpoint", "Step", *(h for h, _ in cols)]
    lines = [
        f"## {benchmark.name} ({benchmark.task}, {len(benchmark.records)} records)",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "|".join("---" for _ in head) + "|",
    ]
    for e in sorted(entries, key=lambda e: (e["step"] is None, e["step"] or 0, e["label"], e["variant"])):
        name = e["label"] + variant_label(e["variant"])
        cells = [name, _fmt(e["step"]), *(cell(e["metrics"], k) for _, k in cols)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def variant_label(variant: str) -> str:
    """How a table names an evaluation variant after the checkpoint.

    >>> variant_label(""), variant_label("gps:staged"), variant_label("localizer:oracle+descriptor")
    ('', ' + GPS staged inference', ' + FineAgent (localizer:oracle, descriptor)')
    >>> variant_label("gps:staged-gpv")
    ' + GPS staged inference w/o GPV'
    """
    if not variant:
        return ""
    if gps.staged_without(variant) is not None:
        return " + " + gps.variant_label(variant)
    return f" + FineAgent ({variant.replace('+', ', ')})"


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_metrics(benchmark: Benchmark, entries: list[dict], out: Path) -> Path | None:
    """Each of the task's headline metrics against the step, one line per variant; None without stepped entries."""
    keys = [k for k in benchmark.spec.plots if any(e["metrics"].get(k) is not None for e in entries)]
    stepped = [e for e in entries if e["step"] is not None]
    if not keys or not stepped:
        return None
    plt = _pyplot()
    from matplotlib.ticker import MaxNLocator

    fig, axes = plt.subplots(1, len(keys), figsize=(4 * len(keys), 3.5), squeeze=False)
    for ax, key in zip(axes[0], keys):
        for variant in sorted({e["variant"] for e in stepped}):
            pts = sorted((e["step"], e["metrics"].get(key)) for e in stepped if e["variant"] == variant)
            pts = [(s, v) for s, v in pts if v is not None]
            ax.plot([s for s, _ in pts], [v for _, v in pts], marker="o", label=variant or "plain")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("step")
        ax.set_title(key)
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    fig.suptitle(f"{benchmark.name}: metrics per checkpoint step")
    fig.tight_layout()
    path = out / "metrics_vs_step.png"
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_aqa_scatter(results: list[EvalResult], benchmark: Benchmark, out: Path) -> Path | None:
    """Predicted against true score, one colour per checkpoint (replies without a score are left out and
    counted in the legend); the diagonal is a perfect judge."""
    if benchmark.task != "aqa" or not results:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5, 5))
    truth = [float(r["score"]) for r in benchmark.records]
    for res in results:
        pts = [(t, row["parsed"]["score"]) for t, row in zip(truth, res.rows) if row["parsed"]["score"] is not None]
        label = f"{res.checkpoint.label}{' +' + res.variant if res.variant else ''} ({len(truth) - len(pts)} blank)"
        ax.scatter([t for t, _ in pts], [p for _, p in pts], s=18, alpha=0.7, label=label)
    lo, hi = benchmark.records[0]["score_range"]
    ax.plot([lo, hi], [lo, hi], color="grey", lw=1, ls="--")
    ax.set_xlabel("true score")
    ax.set_ylabel("predicted score")
    ax.set_title(f"{benchmark.name}: predicted vs true score")
    ax.legend(fontsize=7)
    fig.tight_layout()
    path = out / "aqa_scatter.png"
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
