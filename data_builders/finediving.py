"""FineDiving -> `aqa` records (HieroAction): dive code, timed sub-actions, judge score and difficulty.

Expected layout (the release sent on request by the FineDiving authors):

    ROOT/Annotations/FineDiving_coarse_annotation.pkl       {(video, instance): {action_type, dive_score,
                                                              difficulty, judge_scores, start_frame, end_frame}}
    ROOT/Annotations/FineDiving_fine-grained_annotation.pkl {(video, instance): {action_type, sub-action_types
                                                              {id: name}, frames_labels [per frame],
                                                              steps_transit_frames, ...}}
    ROOT/Annotations/train_split.pkl, test_split.pkl        [(video, instance), ...]  (or ROOT/train_test_split/)
    ROOT/Untrimmed_Videos/<video>.mp4

A record plays the untrimmed video in the window [start_frame, end_frame] (`clip`, at `--fps`, 25 by default);
`sub_actions` are the runs of `frames_labels`, named by `sub-action_types`, in seconds from the window's start.
The pickles are read without unpickling (data_builders/safe_pickle.py): builtin containers and numbers and numeric
numpy arrays only. An entry with a wrong-typed or missing field, or a split entry that is not a (video, instance)
pair, is dropped and counted (stats.json) with the file, the entry and the field at fault.

    python -m data_builders.finediving --root /data/FineDiving --out /data/records/finediving
"""

from __future__ import annotations

import math
import numbers
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from data_builders.aqa_records import AqaItem, add_aqa, segments_from_frame_labels
from data_builders.builder import BuildError, Collector, base_parser, cli_main, require_file
from data_builders.safe_pickle import load_pickle

COARSE_FIELDS = ("action_type", "dive_score", "difficulty", "start_frame", "end_frame")
FINE_FIELDS = ("frames_labels", "sub-action_types")


class Skip(Exception):
    """An entry that cannot become a record: the reason it is counted under, and a detail naming file and entry."""

    def __init__(self, reason: str, detail: str):
        super().__init__(detail)
        self.reason, self.detail = reason, detail


def shown(v: Any) -> str:
    """A value as an error message shows it: its type and the start of its repr.

    >>> shown("high"), shown(np.zeros((2, 3))), shown(None)
    ("str 'high'", 'an array of shape (2, 3) and dtype float64', 'NoneType None')
    """
    if isinstance(v, np.ndarray):
        return f"an array of shape {v.shape} and dtype {v.dtype}"
    text = repr(v)
    return f"{type(v).__name__} {text[:60]}" + ("..." if len(text) > 60 else "")


def number(v: Any) -> float:
    """A finite number (int, float or numpy number; not bool)."""
    if isinstance(v, bool) or not isinstance(v, numbers.Real) or not math.isfinite(v):
        raise ValueError(f"expected a finite number, got {shown(v)}")
    return float(v)


def integer(v: Any) -> int:
    """A whole number (50 or 50.0)."""
    x = number(v)
    if x != int(x):
        raise ValueError(f"expected a whole number, got {shown(v)}")
    return int(x)


def sequence(v: Any, item: Callable[[Any], Any], what: str) -> list:
    """The items of a list, tuple or 1-D array, each read by `item`."""
    if isinstance(v, np.ndarray) and v.ndim == 1:
        v = v.tolist()
    if not isinstance(v, (list, tuple)):
        raise ValueError(f"expected {what}, got {shown(v)}")
    return [item(x) for x in v]


def frame_labels(v: Any) -> list[int]:
    labels = sequence(v, integer, "a sequence of per-frame sub-action ids")
    if not labels:
        raise ValueError("expected a label per frame, got none")
    return labels


def judge_scores(v: Any) -> list[float]:
    return sequence(v, number, "a sequence of judge scores")


def sub_action_names(v: Any) -> dict[int, str]:
    """{id: name}; ids may be written as digit strings, as the old reader accepted."""
    if not isinstance(v, dict):
        raise ValueError(f"expected a dict {{sub-action id: name}}, got {shown(v)}")
    out = {}
    for k, name in v.items():
        if not isinstance(name, str):
            raise ValueError(f"sub-action {k!r}: expected a name (str), got {shown(name)}")
        out[integer(int(k) if isinstance(k, str) and k.strip().isdigit() else k)] = name
    return out


def action_type(v: Any) -> str:
    """The dive code, e.g. '107B' (a bare number such as 5253 is taken as its text)."""
    if isinstance(v, str) and v.strip():
        return v
    if isinstance(v, numbers.Integral) and not isinstance(v, bool):
        return str(int(v))
    raise ValueError(f"expected a dive code (str), got {shown(v)}")


@dataclass
class Annotations:
    """The two annotation pickles, keyed by (video, instance), and where each was read from."""

    coarse: dict
    fine: dict
    coarse_path: Path
    fine_path: Path

    def entries(self, key: tuple) -> tuple[dict, dict]:
        """The coarse and fine entries of `key`; Skip when one is absent or not a dict of fields."""
        pairs = ((self.coarse, self.coarse_path), (self.fine, self.fine_path))
        absent = [str(path) for table, path in pairs if key not in table]
        if absent:
            raise Skip("missing annotation", f"{key!r} is not in {' nor '.join(absent)}")
        for table, path in pairs:
            if not isinstance(table[key], dict):
                raise Skip("bad entry", f"{path}: {key!r}: expected a dict of fields, got {shown(table[key])}")
        return self.coarse[key], self.fine[key]


def field(entry: dict, name: str, read: Callable[[Any], Any], path: Path, key: tuple) -> Any:
    """`entry[name]` read by `read`; Skip('bad field') naming the file, the entry and the field when it is wrong."""
    try:
        return read(entry[name])
    except (TypeError, ValueError, OverflowError) as e:
        raise Skip("bad field", f"{path}: {key!r}: field {name!r}: {e}") from None


def entry_key(key: Any, where: str) -> tuple:
    """A split file's entry as (video name, instance number); Skip('bad key') for anything else."""
    key = tuple(key) if isinstance(key, list) else key
    if (
        isinstance(key, tuple)
        and len(key) == 2
        and isinstance(key[0], str)
        and key[0] not in ("", ".", "..")
        and not {"/", "\\"} & set(key[0])  # the name becomes a file name under the videos folder
        and isinstance(key[1], numbers.Integral)
        and not isinstance(key[1], bool)
    ):
        return key
    raise Skip("bad key", f"{where}: expected a (video name, instance number) pair, got {shown(key)}")


def find_annotation(root: Path, name: str) -> Path:
    for folder in ("Annotations", "train_test_split", "."):
        if (root / folder / name).is_file():
            return root / folder / name
    return require_file(root / "Annotations" / name, f"FineDiving annotation {name}")


def load_annotations(root: Path) -> tuple[Annotations, dict[str, list]]:
    coarse_path = find_annotation(root, "FineDiving_coarse_annotation.pkl")
    fine_path = find_annotation(root, "FineDiving_fine-grained_annotation.pkl")
    ann = Annotations(load_pickle(coarse_path), load_pickle(fine_path), coarse_path, fine_path)
    for path, obj in ((coarse_path, ann.coarse), (fine_path, ann.fine)):
        if not isinstance(obj, dict):
            raise BuildError(f"{path}: expected a dict keyed by (video, instance), got {type(obj).__name__}")
    splits = {}
    for split in ("train", "test"):
        path = find_annotation(root, f"{split}_split.pkl")
        keys = load_pickle(path)
        if not isinstance(keys, (list, tuple)):
            raise BuildError(f"{path}: expected a list of (video, instance) pairs, got {type(keys).__name__}")
        splits[split] = [(path, i, key) for i, key in enumerate(keys)]
    return ann, splits


def item_of(key: Any, at: str, ann: Annotations, args, videos: Path, split: str) -> AqaItem:
    """The AqaItem of one (video, instance); Skip with the reason and the file, entry and field at fault."""
    key = entry_key(key, at)
    c, f = ann.entries(key)
    missing = {
        ann.coarse_path: [k for k in COARSE_FIELDS if k not in c],
        ann.fine_path: [k for k in FINE_FIELDS if k not in f],
    }
    if any(missing.values()):
        gaps = [f"{path}: {key!r}: no field {', '.join(map(repr, ks))}" for path, ks in missing.items() if ks]
        raise Skip("missing field", "; ".join(gaps))
    video = videos / f"{key[0]}.mp4"
    if not video.is_file():
        raise Skip("video not found", str(video))
    labels = field(f, "frames_labels", frame_labels, ann.fine_path, key)
    names = field(f, "sub-action_types", sub_action_names, ann.fine_path, key)
    start, end = (field(c, k, integer, ann.coarse_path, key) for k in ("start_frame", "end_frame"))
    if end < start:
        raise Skip("bad field", f"{ann.coarse_path}: {key!r}: end_frame {end} is before start_frame {start}")
    scores = [] if "judge_scores" not in c else field(c, "judge_scores", judge_scores, ann.coarse_path, key)
    try:
        subs = segments_from_frame_labels(labels, names, args.fps)
    except KeyError as e:
        detail = f"{ann.fine_path}: {key!r}: frame label {e} has no name in sub-action_types"
        raise Skip("unknown sub-action", detail) from None
    return AqaItem(
        split,
        f"finediving-{key[0]}-{int(key[1])}",
        str(video.resolve()),
        at,
        field(c, "action_type", action_type, ann.coarse_path, key),
        subs,
        round(field(c, "dive_score", number, ann.coarse_path, key), 3),
        field(c, "difficulty", number, ann.coarse_path, key),
        [start / args.fps, (end + 1) / args.fps],
        {"judge_scores": scores, "start_frame": start, "end_frame": end},
    )


def build(args, col: Collector) -> dict:
    root = Path(args.root).expanduser()
    videos = Path(args.videos_dir) if args.videos_dir else root / "Untrimmed_Videos"
    ann, splits = load_annotations(root)
    items, seen = [], {}
    for split, entries in splits.items():
        for path, i, key in col.progress(entries, f"finediving {split}"):
            at = f"{path}:#{i}"
            if repr(key) in seen:
                col.drop("duplicate id", at, f"{key!r} already listed at {seen[repr(key)]}")
                continue
            seen[repr(key)] = at
            try:
                items.append(item_of(key, at, ann, args, videos, split))
            except Skip as skip:
                col.drop(skip.reason, at, skip.detail)
    return {"fps": args.fps, **add_aqa(col, items, "finediving")}


def parser():
    p = base_parser(__doc__)
    p.add_argument("--videos-dir", help="folder of <video>.mp4 (default ROOT/Untrimmed_Videos)")
    p.add_argument("--fps", type=float, default=25.0, help="frame rate of the videos the frame indices count")
    return p


def main(argv: list[str] | None = None) -> int:
    return cli_main("finediving", parser(), build, argv)


if __name__ == "__main__":
    sys.exit(main())
