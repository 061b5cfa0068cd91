"""The bundled sample data's `describe` sets (Gold Points Sniper's task), a CAP-like stand-in for the embedded
default: each `ovar` sample record becomes a `describe` record whose gold points are its ranked sub-motions and,
last, a point that states its label (as GPS's ground-truth points end with the label), and whose prompt is the GPS
paper's generic prompt (Table I). The eval set's novel classes are held-out (`meta.held: out`), the base ones
held-in, as GPS splits its benchmark.

These points are SYNTHETIC: written from how the stick figures were drawn (and, for the real clips, by hand in
`common.sample_data`), not by an annotator model. They give the entailment reward and the staged inference real
multi-point ground truth to run on, not a benchmark.

Built on first use by `common.sample_data.build_sample_data` (files `describe_train.jsonl`, `describe_eval.jsonl`
beside the ovar sets; the same videos).
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from common.gps import GENERIC_PROMPT

DESCRIBE_VERSION = "1"
STAMP = "actionrl_sample_describe.json"
SPLITS = {"describe_train": "train", "describe_eval": "eval"}  # describe file -> the ovar file it comes from


def _sentence(point: str) -> str:
    point = point.strip().rstrip(".")
    return point[:1].upper() + point[1:] + "."


def describe_from_ovar(record: dict[str, Any], prompt: str = GENERIC_PROMPT) -> dict[str, Any]:
    """A `describe` record made from an `ovar` record: its sub-motions, then its label, as the gold points.

    >>> rec = {"id": "s1", "task": "ovar", "video": "v.mp4", "prompt": "?", "answer": "wave", "label": "wave",
    ...        "candidates": ["wave"], "sub_motions": ["right arm raised", "body stays still"], "meta": {}}
    >>> describe_from_ovar(rec)["gold_points"]
    ["the person's right arm raised", 'body stays still', "the person performs the action 'wave'"]
    """
    points = [
        f"the person's {m}" if not m.startswith(("the ", "body", "mouth", "head")) else m
        for m in record.get("sub_motions") or []
    ]
    points.append(f"the person performs the action '{record['label']}'")
    rec = {k: v for k, v in record.items() if k not in ("label", "candidates", "sub_motions", "segments")}
    meta = dict(rec.get("meta") or {})
    if meta.get("base_or_novel") in ("base", "novel"):
        meta["held"] = "in" if meta["base_or_novel"] == "base" else "out"
    return {
        **rec,
        "id": record["id"] + "-describe",
        "task": "describe",
        "prompt": prompt,
        "answer": " ".join(_sentence(p) for p in points),
        "gold_points": points,
        "meta": meta,
    }


def build_sample_describe(root: str | Path, seed: int = 0) -> dict[str, Path]:
    """Write root/describe_train.jsonl and root/describe_eval.jsonl from root's ovar sets (a sample-data build);
    a build with the same version and seed is reused. Returns {split name: records file}."""
    from common.schema import load_records, write_records

    root = Path(root)
    out = {name: root / f"{name}.jsonl" for name in SPLITS}
    stamp, wanted = root / STAMP, {"version": DESCRIBE_VERSION, "seed": seed}
    try:
        if json.loads(stamp.read_text()) == wanted and all(p.is_file() for p in out.values()):
            return out
    except (OSError, ValueError):
        pass
    for name, source in SPLITS.items():
        ovar = load_records(root / f"{source}.jsonl", resolve_videos=False)  # same folder: relative paths hold
        records = [describe_from_ovar(r) for r in ovar if r.get("sub_motions")]
        fd, tmp = tempfile.mkstemp(suffix=".jsonl", dir=root)
        os.close(fd)
        write_records(tmp, records)
        os.replace(tmp, out[name])
    stamp.write_text(json.dumps(wanted))  # last: its presence means the build is complete
    return out
