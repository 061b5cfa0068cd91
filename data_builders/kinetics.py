"""Kinetics-400 and -600 -> `ovar` records (see data_builders/protocols.py for the protocols).

Expected layout (the annotation CSVs as distributed, e.g. by the CVDF mirror, and the clips the downloaders name
`<youtube_id>_<time_start:06d>_<time_end:06d>.mp4`):

    ROOT/annotations/train.csv, validate.csv     columns label,youtube_id,time_start,time_end,split
    ROOT/<train|val|validate>/[<label>/]<youtube_id>_<start>_<end>.mp4

Kinetics-400 (`--version 400`): base-to-novel, training on train.csv's base classes, evaluated on validate.csv.
Kinetics-600 (`--version 600`): the cross-dataset target: its classes whose names are not Kinetics-400 classes
(220) in three splits of 160 (zs_split1..3 over validate.csv, and xd_eval holding the three with `meta.fold`):
the published splits with `--vificlip-splits DIR` (ViFi-CLIP's labels/ZS_split{1,2,3}_K600.csv), else seeded
samples; Kinetics-400's names come from `--k400-root`'s train.csv or, by default, gluoncv's list.

    python -m data_builders.kinetics --version 400 --root /data/kinetics400 --out /data/records/k400
    python -m data_builders.kinetics --version 600 --root /data/kinetics600 --out /data/records/k600 \
        --vificlip-splits ViFi-CLIP/labels
"""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path

from common.class_lists import class_list
from data_builders.builder import BuildError, Collector, base_parser, cli_main, read_csv_rows, require_file
from data_builders.label_files import read_class_list, vificlip_k600_files
from data_builders.protocols import (
    K600_NOVEL_COUNT,
    K600_SPLIT_SIZE,
    Clip,
    add_base_to_novel,
    add_folds,
    add_ovar,
    add_ovar_arguments,
    base_novel,
    k600_novel_classes,
    k600_zero_shot_splits,
)
from data_builders.protocols import cross_check_vocabulary as cross_check

COLUMNS = ("label", "youtube_id", "time_start", "time_end", "split")
VIDEO_DIRS = {"train": ("train",), "validate": ("val", "validate", "valid"), "test": ("test",)}


def clip_name(youtube_id: str, start: float, end: float) -> str:
    """The file name the Kinetics downloaders give a clip.

    >>> clip_name("---QUuC4vJs", 84.0, 94.0)
    '---QUuC4vJs_000084_000094'
    """
    return f"{youtube_id}_{int(start):06d}_{int(end):06d}"


def read_annotations(col: Collector, path: Path, videos: Path | None, version: str) -> list[Clip]:
    """Clips of one annotation CSV; rows with a bad time, an absent video or a repeated clip are dropped.
    `videos` None: read the labels only (no existence check, for class counts)."""
    clips, seen = [], {}
    for lineno, row in col.progress(read_csv_rows(path, COLUMNS), path.name):
        at = f"{path}:{lineno}"
        try:
            start, end = float(row["time_start"]), float(row["time_end"])
        except ValueError:
            col.drop("malformed line", at, f"time_start/time_end {row['time_start']!r}, {row['time_end']!r}")
            continue
        if not row["label"] or not row["youtube_id"]:
            col.drop("malformed line", at, "empty label or youtube_id")
            continue
        name = clip_name(row["youtube_id"], start, end)
        vid = f"k{version}-{name}"
        if vid in seen:
            col.drop("duplicate id", at, f"{name} already listed at {seen[vid]}")
            continue
        seen[vid] = at
        video = find_video(videos, row["split"], row["label"], name) if videos else Path(name)
        if video is None:
            col.drop("video not found", at, f"{name}.mp4 under {videos}")
            continue
        clips.append(Clip(vid, str(video.resolve()), row["label"], at))
    return clips


def find_video(videos: Path, split: str, label: str, name: str) -> Path | None:
    """The clip's file: <videos>/<split folder>/[<label>/]<name>.mp4 (the two layouts the downloaders write)."""
    for folder in VIDEO_DIRS.get(split, (split,)):
        for path in (videos / folder / f"{name}.mp4", videos / folder / label / f"{name}.mp4"):
            if path.is_file():
                return path
    return None


def classes_of(path: Path) -> list[str]:
    """The sorted label vocabulary of an annotation CSV."""
    return sorted({row["label"] for _, row in read_csv_rows(path, COLUMNS)})


def build_400(args, col: Collector, ann: Path, videos: Path) -> dict:
    train_csv = require_file(ann / "train.csv", "Kinetics-400 annotations (annotations/train.csv)")
    names = classes_of(train_csv)
    cross_check(col, names, "kinetics400", str(train_csv))
    train = read_annotations(col, train_csv, videos, "400")
    evals = read_annotations(col, require_file(ann / "validate.csv", "annotations/validate.csv"), videos, "400")
    unknown = [c for c in evals if c.cls not in set(names)]
    for c in unknown:
        col.drop("unknown class", c.at, f"{c.cls!r} is not a class of train.csv")
    counts = Counter(c.cls for c in read_annotations(Collector("counts", quiet=True), train_csv, None, "400"))
    base, novel, source = base_novel(args, counts, names)
    add_base_to_novel(col, train, evals, base, novel, args, "kinetics400")
    return {"base_to_novel": {"base": base, "novel": novel, "source": source, "eval": "validate.csv"}}


def k600_splits(args, col: Collector, names: list[str], novel: list[str]) -> tuple[list[list[str]], str]:
    """The three zero-shot label sets and where they came from: ViFi-CLIP's split files (`--vificlip-splits`), the
    user's lists (`--split-files`), or seeded samples of `novel`. A listed class that is a Kinetics-400 class, or a
    split that is not 160 classes, is kept and reported as a warning."""
    if args.vificlip_splits and args.split_files:
        raise BuildError("give --vificlip-splits or --split-files, not both")
    if not (args.vificlip_splits or args.split_files):
        return k600_zero_shot_splits(novel, args.seed), f"seeded sample (seed {args.seed})"
    paths = vificlip_k600_files(args.vificlip_splits) if args.vificlip_splits else [Path(p) for p in args.split_files]
    splits = [read_class_list(p, names) for p in paths]
    for path, label_set in zip(paths, splits):
        for cls in sorted(set(label_set) - set(novel)):
            col.warn("class of Kinetics-400 in a zero-shot split", str(path), repr(cls))
        if len(label_set) != K600_SPLIT_SIZE:
            col.warn("unexpected class count", str(path), f"{len(label_set)} classes, not {K600_SPLIT_SIZE}")
    kind = "ViFi-CLIP split files" if args.vificlip_splits else "user files"
    return splits, f"{kind} {[str(p) for p in paths]}"


def build_600(args, col: Collector, ann: Path, videos: Path) -> dict:
    val_csv = require_file(ann / "validate.csv", "Kinetics-600 annotations (annotations/validate.csv)")
    train_csv = ann / "train.csv"
    names = classes_of(train_csv if train_csv.is_file() else val_csv)
    if args.k400_root:
        k400 = classes_of(require_file(Path(args.k400_root) / "annotations" / "train.csv", "Kinetics-400 train.csv"))
    else:
        k400 = list(class_list("kinetics400"))
    novel = k600_novel_classes(names, k400)
    if len(novel) != K600_NOVEL_COUNT:
        col.warn("unexpected class count", str(val_csv), f"{len(novel)} classes absent from Kinetics-400, not 220")
    splits, source = k600_splits(args, col, names, novel)
    evals = read_annotations(col, val_csv, videos, "600")
    common = {"dataset": "kinetics600", "split": "eval", "base_or_novel": "novel", "seed": args.seed}
    common |= {"num_candidates": args.num_candidates, "sub_motions": args.sub_motions}
    for k, label_set in enumerate(splits, 1):
        add_ovar(col, f"zs_split{k}", evals, label_set, **common)
    add_folds(col, "xd_eval", {k: (evals, label_set) for k, label_set in enumerate(splits, 1)}, **common)
    return {"novel_classes": novel, "zero_shot_splits": splits, "source": source, "eval": "validate.csv"}


def build(args, col: Collector) -> dict:
    root = Path(args.root).expanduser()
    ann = Path(args.annotations_dir) if args.annotations_dir else root / "annotations"
    videos = Path(args.videos_dir) if args.videos_dir else root
    if not ann.is_dir():
        raise BuildError(f"{ann}: missing annotations folder (train.csv, validate.csv)")
    return (build_400 if args.version == "400" else build_600)(args, col, ann, videos)


def parser():
    p = base_parser(__doc__)
    p.add_argument("--version", choices=("400", "600"), required=True)
    p.add_argument("--annotations-dir", help="folder of train.csv / validate.csv (default ROOT/annotations)")
    p.add_argument("--videos-dir", help="folder holding train/ and val/ (default ROOT)")
    p.add_argument("--k400-root", help="Kinetics-400 folder whose annotations/train.csv names its classes (600 only)")
    p.add_argument(
        "--vificlip-splits",
        metavar="DIR",
        help="folder holding ViFi-CLIP's ZS_split{1,2,3}_K600.csv (its labels/ folder or a clone of the repository): "
        "the published K-600 splits (600 only)",
    )
    p.add_argument("--split-files", nargs=3, help="three class lists replacing the seeded K-600 splits (600 only)")
    add_ovar_arguments(p)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    return cli_main(f"kinetics{args.version}", parser(), build, argv)


if __name__ == "__main__":
    sys.exit(main())
