"""The sample record: one JSON object per line, the one schema every builder writes and every recipe reads.

Common fields: `id`, `task` (ovar | aqa | mcq | describe), `video` (path, relative paths resolve against the
records file's folder), optional `clip` [start_s, end_s], `prompt`, `answer`, `meta` {dataset, split, ...}.
Optional `meta` fields the evaluation groups by (checked when present):
  base_or_novel  "base" | "novel": the half of a base-to-novel label space the record's class is in
  fold           1, 2, 3, ...: the split (of a protocol with several) the record belongs to
Per task:
  ovar      `label`, `candidates` [str] (the label among them); optional `sub_motions` [str] ranked
  aqa       `sub_actions` [{name, start, end}], `score`, `difficulty`, `score_range` [lo, hi]
  mcq       `options` {A, B, C, D}, `category`; `answer` is one of the option letters
  describe  `gold_points` [str]
A record that breaks the schema is rejected with its file and line number.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from pathlib import Path
from typing import Any

TASKS = ("ovar", "aqa", "mcq", "describe")
COMMON = {"id": str, "task": str, "video": str, "prompt": str, "answer": str}
BASE_OR_NOVEL = ("base", "novel")
PER_TASK: dict[str, dict[str, Any]] = {
    "ovar": {"label": str, "candidates": list},
    "aqa": {"sub_actions": list, "score": (int, float), "difficulty": (int, float), "score_range": list},
    "mcq": {"options": dict, "category": str},
    "describe": {"gold_points": list},
}


class RecordError(ValueError):
    """A record that breaks the schema; the message names the file, line and field."""


def _type_name(t: Any) -> str:
    return " or ".join(x.__name__ for x in t) if isinstance(t, tuple) else t.__name__


def _check_fields(rec: dict, fields: dict[str, Any]) -> list[str]:
    errors = []
    for name, typ in fields.items():
        if name not in rec:
            errors.append(f"missing field {name!r}")
        elif not isinstance(rec[name], typ) or isinstance(rec[name], bool):
            errors.append(f"field {name!r} must be {_type_name(typ)}, got {type(rec[name]).__name__}")
    return errors


def _check_task(rec: dict) -> list[str]:
    task = rec["task"]
    errors = _check_fields(rec, PER_TASK[task])
    if errors:
        return errors
    if task == "ovar":
        if not rec["candidates"] or not all(isinstance(c, str) for c in rec["candidates"]):
            errors.append("field 'candidates' must be a non-empty list of strings")
        elif rec["label"] not in rec["candidates"]:
            errors.append(f"field 'label' ({rec['label']!r}) is not among 'candidates'")
        subs = rec.get("sub_motions")
        if subs is not None and (
            not isinstance(subs, list) or not subs or not all(isinstance(s, str) and s.strip() for s in subs)
        ):
            errors.append(
                "field 'sub_motions' must be a non-empty list of non-empty strings (leave it out when unknown)"
            )
    elif task == "aqa":
        for i, seg in enumerate(rec["sub_actions"]):
            if not isinstance(seg, dict) or not {"name", "start", "end"} <= set(seg):
                errors.append(f"sub_actions[{i}] must have name, start, end")
            elif not (_finite(seg["start"]) and _finite(seg["end"]) and seg["start"] <= seg["end"]):
                errors.append(f"sub_actions[{i}] needs finite start <= end")
        lo_hi = rec["score_range"]
        if len(lo_hi) != 2 or not all(_finite(x) for x in lo_hi) or lo_hi[0] >= lo_hi[1]:
            errors.append("field 'score_range' must be [lo, hi] with lo < hi")
        if not _finite(rec["score"]) or not _finite(rec["difficulty"]):
            errors.append("fields 'score' and 'difficulty' must be finite numbers")
    elif task == "mcq":
        if sorted(rec["options"]) != ["A", "B", "C", "D"]:
            errors.append("field 'options' must have exactly the keys A, B, C, D")
        elif rec["answer"] not in rec["options"]:
            errors.append(f"field 'answer' ({rec['answer']!r}) must be one of A-D")
    elif task == "describe":
        if not rec["gold_points"] or not all(isinstance(g, str) for g in rec["gold_points"]):
            errors.append("field 'gold_points' must be a non-empty list of strings")
    return errors


def _finite(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def validate_record(rec: Any) -> list[str]:
    """Return the list of problems with a record (empty when it is valid)."""
    if not isinstance(rec, dict):
        return [f"a record must be a JSON object, got {type(rec).__name__}"]
    errors = _check_fields(rec, COMMON)
    if errors:
        return errors
    if rec["task"] not in TASKS:
        return [f"field 'task' must be one of {', '.join(TASKS)}, got {rec['task']!r}"]
    if "clip" in rec:
        clip = rec["clip"]
        if not (isinstance(clip, list) and len(clip) == 2 and all(_finite(x) for x in clip) and clip[0] < clip[1]):
            errors.append("field 'clip' must be [start_s, end_s] with start_s < end_s")
    if "meta" in rec:
        errors += _check_meta(rec["meta"])
    return errors + _check_task(rec)


def _check_meta(meta: Any) -> list[str]:
    if not isinstance(meta, dict):
        return ["field 'meta' must be an object"]
    errors = []
    if "base_or_novel" in meta and meta["base_or_novel"] not in BASE_OR_NOVEL:
        errors.append(f"field 'meta.base_or_novel' must be 'base' or 'novel', got {meta['base_or_novel']!r}")
    fold = meta.get("fold")
    if "fold" in meta and not (isinstance(fold, int) and not isinstance(fold, bool) and fold >= 1):
        errors.append(f"field 'meta.fold' must be an integer >= 1, got {fold!r}")
    return errors


def load_records(path: str | Path, resolve_videos: bool = True) -> list[dict]:
    """Read and validate a JSONL records file. Raises RecordError naming the file and line of the first bad record.

    Relative `video` paths are made absolute against the file's folder, so a records file can be moved with its
    videos.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"records file not found: {path}")
    records, seen = [], {}
    with path.open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as e:
                raise RecordError(f"{path}:{lineno}: not valid JSON ({e.msg})") from None
            errors = validate_record(rec)
            if errors:
                rid = rec.get("id", "?") if isinstance(rec, dict) else "?"
                raise RecordError(f"{path}:{lineno}: record {rid!r}: " + "; ".join(errors))
            if rec["id"] in seen:
                raise RecordError(f"{path}:{lineno}: duplicate id {rec['id']!r} (first at line {seen[rec['id']]})")
            seen[rec["id"]] = lineno
            if resolve_videos and not Path(rec["video"]).is_absolute():
                rec["video"] = str((path.parent / rec["video"]).resolve())
            records.append(rec)
    return records


def write_records(path: str | Path, records: Iterable[dict]) -> int:
    """Validate and write records as JSONL; returns how many were written."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    n = 0
    with path.open("w", encoding="utf-8") as f:
        for rec in records:
            errors = validate_record(rec)
            if errors:
                raise RecordError(f"record {rec.get('id', '?')!r} for {path}: " + "; ".join(errors))
            f.write(json.dumps(rec, ensure_ascii=False) + "\n")
            n += 1
    return n
