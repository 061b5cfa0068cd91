"""What each task reads from a reply, which metrics it reports, and the table layout of its paper.

`TASKS` maps a record's `task` to a `TaskSpec`; nothing else in eval/ branches on the task or the dataset name.
A spec's `score(text, record)` reads one reply (pure: parsed answer + per-sample values); `aggregate(rows,
records)` turns the scored rows of one checkpoint into its metrics (`eval.metrics`).

A sample whose video failed is scored as the empty reply, so it counts wrong (as the papers count it) unless the
run excludes failed samples (`--skip-failed`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from eval import metrics as M
from rewards.helpers import TIOU_MODES


@dataclass(frozen=True)
class TaskSpec:
    score: Callable[[str, dict], tuple[dict, dict]]
    """(reply text, record) -> (parsed answer, per-sample metric values)."""
    aggregate: Callable[..., dict[str, float]]
    """(scored rows, their records, **options) -> flat metrics of one checkpoint."""
    columns: tuple[tuple[str, str], ...]
    """The paper's table layout: (header, metric key) in order."""
    uses_tools: bool = False
    """Episodes run the multi-turn tool loop (Video-STAR); the others answer in one turn."""
    dynamic_prefix: str = ""
    """Metric keys starting with this prefix get a column each before `columns` (e.g. MCQ categories)."""
    plots: tuple[str, ...] = field(default=())
    """Metric keys plotted against the checkpoint step."""
    options: dict[str, tuple[str, ...]] = field(default_factory=dict)
    """Keyword options its `aggregate` takes: name -> allowed values, the first the default (e.g. AQA's
    `rl2_range`). `aggregate()` passes a task only the options it declares."""


def _meta(record: dict, key: str, default: Any = None) -> Any:
    meta = record.get("meta")
    return meta.get(key, default) if isinstance(meta, dict) else default


# ------------------------------------------------------------------------------------------------ ovar
def _ovar_score(text: str, record: dict) -> tuple[dict, dict]:
    from rewards.videostar import extract_answer, labels_match

    answer = extract_answer(text)
    correct = answer is not None and labels_match(answer, record["label"])
    return {"answer": answer}, {"correct": 1.0 if correct else 0.0}


def _recognition(correct: list[float], kinds: list[str]) -> dict[str, float]:
    """top1, and base / novel / hm when some record is tagged base or novel."""
    out = {"top1": M.top1_accuracy(correct)}
    if any(k in ("base", "novel") for k in kinds):
        out.update(M.base_novel(correct, kinds))
    return out


def _ovar_aggregate(rows: list[dict], records: list[dict]) -> dict[str, float]:
    """top1 over every record; base, novel and hm from `meta.base_or_novel`; with `meta.fold` (a protocol with
    several splits in one file), each fold's metrics (`top1/fold1`, ...) and their mean and std over the folds
    (`top1_fold_mean`, `top1_fold_std`, ...). Records without a fold count in no fold."""
    correct = [r["metrics"]["correct"] for r in rows]
    kinds = [_meta(rec, "base_or_novel", "") for rec in records]
    out = _recognition(correct, kinds)
    folds = [_meta(rec, "fold") for rec in records]
    names = sorted(set(folds) - {None}, key=str)
    if names:
        per_fold = {}
        for k in names:
            idx = [i for i, f in enumerate(folds) if f == k]
            per_fold[k] = _recognition([correct[i] for i in idx], [kinds[i] for i in idx])
            out.update({f"{key}/fold{k}": v for key, v in per_fold[k].items()})
        out.update(M.over_folds(per_fold))
    return out


# ------------------------------------------------------------------------------------------------- aqa
def _aqa_score(text: str, record: dict) -> tuple[dict, dict]:
    from rewards.hieroaction import parse_sar_answer

    answer = parse_sar_answer(text)
    names = [s.name for s in answer.sub_actions] if answer else []
    segments = [[s.start, s.end] for s in answer.sub_actions] if answer else []
    true_names = [s["name"] for s in record["sub_actions"]]
    true_segments = [(s["start"], s["end"]) for s in record["sub_actions"]]
    parsed = {
        "action": answer.action if answer else None,
        "sub_actions": names,
        "segments": segments,
        "score": answer.score if answer else None,
        "difficulty": answer.difficulty if answer else None,
    }
    values = {
        "action_correct": M.action_accuracy([parsed["action"]], [record["label"]]) if "label" in record else M.NAN,
        "sed": M.sed([names], [true_names]),
        # both tIoU forms per sample; the aggregate reports the one its tiou_mode names
        **{f"tiou_{mode}": M.mean_temporal_iou([segments], [true_segments], mode=mode) for mode in TIOU_MODES},
    }
    return parsed, values


def _filled(predicted: list[float | None], fill: list[float]) -> list[float]:
    return [p if p is not None else f for p, f in zip(predicted, fill)]


def _score_metrics(
    key: str, predicted: list[float | None], truth: list[float], labels: list[str], fill: list[float], rl2_range: str
) -> dict[str, float]:
    """`<key>_spearman` and `<key>_rl2` of the predictions (a missing one replaced by its `fill`); NaN for both when
    there is no true value, and for R-l2 when the range it divides by has no width."""
    if not truth:
        return {f"{key}_spearman": M.NAN, f"{key}_rl2": M.NAN}
    pred = _filled(predicted, fill)
    if rl2_range == "action":
        ranges = M.action_ranges(truth, labels)
        rl2 = M.relative_l2(pred, truth, ranges) if all(hi > lo for lo, hi in ranges) else M.NAN
    else:
        rl2 = M.relative_l2(pred, truth)
    return {f"{key}_spearman": M.spearman(pred, truth), f"{key}_rl2": rl2}


def _aqa_aggregate(
    rows: list[dict], records: list[dict], rl2_range: str = "set", tiou_mode: str = "max"
) -> dict[str, float]:
    """A missing score is filled with the bottom of the record's score_range, a missing difficulty with the lowest
    true difficulty: a reply without a number counts as the worst guess, not as a left-out sample. The difficulty
    metrics cover the records that have a difficulty (`rewards.hieroaction.record_difficulty`: not FineFS's or
    LOGO's); NaN when none has. `rl2_range` ("set" or "action", `eval.metrics.RL2_RANGES`) is the range R-l2
    divides by; `tiou_mode` ("max" or "paper", `eval.metrics.mean_temporal_iou`) the tIoU form reported."""
    from rewards.hieroaction import record_difficulty

    labels = [rec.get("label", "") for rec in records]
    has_labels = all(isinstance(rec.get("label"), str) and rec["label"] for rec in records)
    out = {
        "action_accuracy": M.action_accuracy([r["parsed"]["action"] for r in rows], labels) if has_labels else M.NAN,
        "sed": M._mean([r["metrics"]["sed"] for r in rows]),
        "tiou": M._mean([r["metrics"][f"tiou_{tiou_mode}"] for r in rows]),
        "answer_rate": M._mean([0.0 if r["parsed"]["score"] is None else 1.0 for r in rows]),
    }
    predicted = [r["parsed"]["score"] for r in rows]
    bottoms = [float(rec["score_range"][0]) for rec in records]
    out |= _score_metrics("score", predicted, [float(rec["score"]) for rec in records], labels, bottoms, rl2_range)
    rated = [i for i, rec in enumerate(records) if record_difficulty(rec) is not None]
    truth = [record_difficulty(records[i]) for i in rated]
    predicted = [rows[i]["parsed"]["difficulty"] for i in rated]
    lowest = [min(truth, default=0.0)] * len(rated)
    out |= _score_metrics("difficulty", predicted, truth, [labels[i] for i in rated], lowest, rl2_range)
    return out


# ------------------------------------------------------------------------------------------------- mcq
def _mcq_score(text: str, record: dict) -> tuple[dict, dict]:
    """The letter as the `mcq` reward reads it (`rewards.mcq.reply_letter`, one reader for both), and as
    FineBench's released evaluator reads it (`released_letter`, reported beside it for comparison; from the
    `<answer>` content too when there is one, so that only the reading rule differs)."""
    from rewards.helpers import released_mcq_letter
    from rewards.mcq import reply_letter
    from rewards.videostar import extract_answer

    letter = reply_letter(text, record.get("options"))
    answer = extract_answer(text)
    released = released_mcq_letter(answer if answer is not None else text, record.get("options"))
    values = {"correct": 1.0 if letter == record["answer"] else 0.0, "blank": 0.0 if letter else 1.0}
    values["correct_released"] = 1.0 if released == record["answer"] else 0.0
    return {"letter": letter, "released_letter": released}, values


def _mcq_aggregate(rows: list[dict], records: list[dict]) -> dict[str, float]:
    m = M.mcq_accuracy(
        [r["parsed"]["letter"] for r in rows], [rec["answer"] for rec in records], [rec["category"] for rec in records]
    )
    out = {"accuracy": m["accuracy"], "blank_rate": m["blank_rate"]}
    out["accuracy_released_reader"] = M._mean([r["metrics"].get("correct_released", 0.0) for r in rows])
    for cat, v in m["per_category"].items():
        out[f"accuracy/{cat}"] = v["accuracy"]
        out[f"blank_rate/{cat}"] = v["blank_rate"]
    return out


# -------------------------------------------------------------------------------------------- describe
def _describe_score(text: str, record: dict) -> tuple[dict, dict]:
    from rewards.videostar import extract_answer

    answer = extract_answer(text)
    return {"description": answer if answer is not None else text.strip()}, {}


def held_tag(record: dict) -> str:
    """ "in" or "out": `meta.held` when given, else base classes are held-in and novel ones held-out."""
    held = _meta(record, "held")
    if held in ("in", "out"):
        return held
    return {"base": "in", "novel": "out"}.get(_meta(record, "base_or_novel", ""), "")


def _describe_aggregate(rows: list[dict], records: list[dict]) -> dict[str, float]:
    """Held-in / held-out / whole entailment, and `judge_malformed`: the samples whose judge reply was malformed
    (scored 0, every point failing)."""
    scores = [r["metrics"].get("entailment", 0.0) for r in rows]
    out = M.held_in_out(scores, [held_tag(rec) for rec in records])
    out["judge_malformed"] = float(sum(r["metrics"].get("judge_malformed", 0.0) for r in rows))
    return out


TASKS: dict[str, TaskSpec] = {
    "ovar": TaskSpec(
        _ovar_score,
        _ovar_aggregate,
        uses_tools=True,
        plots=("top1", "hm", "top1_fold_mean"),
        columns=(
            ("Base", "base"),
            ("Novel", "novel"),
            ("HM", "hm"),
            ("Top-1", "top1"),
            ("Top-1 over folds", "top1_fold_mean"),
            ("HM over folds", "hm_fold_mean"),
        ),
    ),
    "aqa": TaskSpec(
        _aqa_score,
        _aqa_aggregate,
        options={"rl2_range": M.RL2_RANGES, "tiou_mode": TIOU_MODES},
        plots=("action_accuracy", "sed", "score_spearman", "score_rl2"),
        columns=(
            ("Action Acc.", "action_accuracy"),
            ("SED", "sed"),
            ("tIoU", "tiou"),
            ("Difficulty ρ", "difficulty_spearman"),
            ("Difficulty R-ℓ2", "difficulty_rl2"),
            ("Score ρ", "score_spearman"),
            ("Score R-ℓ2", "score_rl2"),
            ("Judge Acc.", "judge_accuracy"),
            ("Judge Score", "judge_score"),
        ),
    ),
    "mcq": TaskSpec(
        _mcq_score,
        _mcq_aggregate,
        dynamic_prefix="accuracy/",
        plots=("accuracy",),
        columns=(("Avg.", "accuracy"), ("Blank", "blank_rate")),
    ),
    "describe": TaskSpec(
        _describe_score,
        _describe_aggregate,
        plots=("whole",),
        columns=(("Held-in", "held_in"), ("Held-out", "held_out"), ("Whole", "whole")),
    ),
}


def score_rows(task: str, rows: list[dict], records: list[dict]) -> None:
    """Fill each row's `parsed` and `metrics` from its `prediction` (a failed sample is scored as "")."""
    spec = TASKS[task]
    for row, rec in zip(rows, records, strict=True):
        row["parsed"], row["metrics"] = spec.score("" if row.get("failed") else row.get("prediction") or "", rec)


def aggregate(
    task: str, rows: list[dict], records: list[dict], skip_failed: bool = False, options: dict[str, str] | None = None
) -> dict[str, float]:
    """The checkpoint's metrics over `rows`, plus `n` (samples in the denominator) and `failed` (video errors).
    `options`: metric options by name (e.g. {"rl2_range": "action"}); a task gets only those it declares in its
    `TaskSpec.options`, so one set of options serves every task."""
    spec = TASKS[task]
    kwargs = {k: v for k, v in (options or {}).items() if k in spec.options}
    for name, value in kwargs.items():
        if value not in spec.options[name]:
            raise ValueError(f"{task}: {name} must be one of {spec.options[name]}, got {value!r}")
    failed = sum(1 for r in rows if r.get("failed"))
    pairs = [(r, rec) for r, rec in zip(rows, records, strict=True) if not (skip_failed and r.get("failed"))]
    out: dict[str, float] = {"n": len(pairs), "failed": failed}
    if pairs:
        kept_rows, kept_records = [p[0] for p in pairs], [p[1] for p in pairs]
        out.update(spec.aggregate(kept_rows, kept_records, **kwargs))
        judged = [r["judge"] for r in kept_rows if "judge" in r]
        if judged:
            out.update(M.judge_summary([(j.get("yes"), j.get("score")) for j in judged]))
    return out
