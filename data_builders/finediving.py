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
The pickles are read with the restricted unpickler (data_builders/safe_pickle.py): builtins and numpy only.

    python -m data_builders.finediving --root /data/FineDiving --out /data/records/finediving
"""

from __future__ import annotations

import sys
from pathlib import Path

from data_builders.aqa_records import AqaItem, add_aqa, segments_from_frame_labels
from data_builders.builder import BuildError, Collector, base_parser, cli_main, require_file
from data_builders.safe_pickle import load_pickle

COARSE_FIELDS = ("action_type", "dive_score", "difficulty", "start_frame", "end_frame")
FINE_FIELDS = ("frames_labels", "sub-action_types")


def find_annotation(root: Path, name: str) -> Path:
    for folder in ("Annotations", "train_test_split", "."):
        if (root / folder / name).is_file():
            return root / folder / name
    return require_file(root / "Annotations" / name, f"FineDiving annotation {name}")


def load_annotations(root: Path) -> tuple[dict, dict, dict[str, list]]:
    coarse_path = find_annotation(root, "FineDiving_coarse_annotation.pkl")
    fine_path = find_annotation(root, "FineDiving_fine-grained_annotation.pkl")
    coarse, fine = load_pickle(coarse_path), load_pickle(fine_path)
    for path, obj in ((coarse_path, coarse), (fine_path, fine)):
        if not isinstance(obj, dict):
            raise BuildError(f"{path}: expected a dict keyed by (video, instance), got {type(obj).__name__}")
    splits = {}
    for split in ("train", "test"):
        path = find_annotation(root, f"{split}_split.pkl")
        splits[split] = [(path, i, key) for i, key in enumerate(load_pickle(path))]
    return coarse, fine, splits


def item_of(col: Collector, key, at: str, coarse: dict, fine: dict, args, videos: Path, split: str):
    """The AqaItem of one (video, instance), or None after dropping it with the reason."""
    key = tuple(key) if isinstance(key, list) else key
    c, f = coarse.get(key), fine.get(key)
    if not isinstance(c, dict) or not isinstance(f, dict):
        col.drop("missing annotation", at, f"{key!r} is not in both annotation pickles")
        return None
    missing = [k for k in COARSE_FIELDS if k not in c] + [k for k in FINE_FIELDS if k not in f]
    if missing:
        col.drop("missing field", at, f"{key!r} lacks {missing}")
        return None
    video = videos / f"{key[0]}.mp4"
    if not video.is_file():
        col.drop("video not found", at, str(video))
        return None
    labels = [int(x) for x in f["frames_labels"]]
    try:
        subs = segments_from_frame_labels(labels, {int(k): v for k, v in f["sub-action_types"].items()}, args.fps)
    except KeyError as e:
        col.drop("unknown sub-action", at, f"{key!r}: frame label {e} has no name in sub-action_types")
        return None
    start, end = int(c["start_frame"]), int(c["end_frame"])
    meta = {"judge_scores": [float(x) for x in c.get("judge_scores", [])], "start_frame": start, "end_frame": end}
    return AqaItem(
        split,
        f"finediving-{key[0]}-{key[1]}",
        str(video.resolve()),
        at,
        str(c["action_type"]),
        subs,
        round(float(c["dive_score"]), 3),
        float(c["difficulty"]),
        [start / args.fps, (end + 1) / args.fps],
        meta,
    )


def build(args, col: Collector) -> dict:
    root = Path(args.root).expanduser()
    videos = Path(args.videos_dir) if args.videos_dir else root / "Untrimmed_Videos"
    coarse, fine, splits = load_annotations(root)
    items, seen = [], {}
    for split, entries in splits.items():
        for path, i, key in col.progress(entries, f"finediving {split}"):
            at = f"{path}:#{i}"
            if repr(key) in seen:
                col.drop("duplicate id", at, f"{key!r} already listed at {seen[repr(key)]}")
                continue
            seen[repr(key)] = at
            item = item_of(col, key, at, coarse, fine, args, videos, split)
            if item:
                items.append(item)
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
