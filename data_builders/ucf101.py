"""UCF-101 -> `ovar` records for the base-to-novel and cross-dataset protocols (see data_builders/protocols.py).

Expected layout (the official `UCF101.rar` and `UCF101TrainTestSplits-RecognitionTask.zip`, extracted):

    ROOT/UCF-101/<Class>/v_<Class>_gXX_cYY.avi
    ROOT/ucfTrainTestlist/classInd.txt          lines "<index> <Class>" (1-based)
    ROOT/ucfTrainTestlist/trainlist0<k>.txt     lines "<Class>/<video>.avi <index>"    k = 1, 2, 3
    ROOT/ucfTrainTestlist/testlist0<k>.txt      lines "<Class>/<video>.avi"

Outputs: b2n_train_base and b2n_eval (split 1; base and novel records in one file), split<k>_train /
split<k>_test (all 101 classes) and xd_eval (the three test lists in one file, `meta.fold` k: the cross-dataset
target of a model trained on HMDB-51, reported as mean and std over the splits).

    python -m data_builders.ucf101 --root /data/ucf101 --out /data/records/ucf101
"""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path

from data_builders.builder import BuildError, Collector, base_parser, cli_main, require_file, where
from data_builders.protocols import Clip, add_official_splits, add_ovar_arguments
from data_builders.protocols import cross_check_vocabulary as cross_check


def read_class_index(path: Path) -> dict[int, str]:
    """{index: Class} from classInd.txt; BuildError naming file:line on a malformed line."""
    classes = {}
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != 2 or not parts[0].isdigit():
            raise BuildError(f"{where(path, lineno)}: expected '<index> <Class>', got {line!r}")
        classes[int(parts[0])] = parts[1]
    if not classes:
        raise BuildError(f"{path}: no classes")
    return classes


def read_list(
    col: Collector, path: Path, index: dict[int, str], videos: Path, exists: dict
) -> tuple[list[Clip], Counter]:
    """(clips, videos listed per class) of one train or test list; unusable lines are dropped with their file:line.
    The counts are of the list's lines, on disk or not (the base/novel ranking must not depend on the download)."""
    by_name = {c.lower(): c for c in index.values()}
    clips, seen, listed = [], {}, Counter()
    for lineno, line in enumerate(col.progress(path.read_text(encoding="utf-8").splitlines(), path.name), 1):
        parts = line.split()
        if not parts:
            continue
        at = where(path, lineno)
        rel = parts[0]
        folder = rel.split("/")[0] if "/" in rel else None
        if len(parts) == 2 and parts[1].isdigit():
            cls = index.get(int(parts[1]))
        elif len(parts) == 1 and folder:
            cls = by_name.get(folder.lower())
        else:
            col.drop("malformed line", at, repr(line))
            continue
        if cls is None or (folder and folder.lower() != cls.lower()):
            col.drop("unknown class", at, f"{line!r} does not match classInd.txt")
            continue
        vid = f"ucf101-{Path(rel).stem}"
        if vid in seen:
            col.drop("duplicate id", at, f"{rel} already listed at {seen[vid]}")
            continue
        seen[vid] = at
        listed[cls] += 1
        video = videos / rel
        if video not in exists:
            exists[video] = video.is_file()
        if not exists[video]:
            col.drop("video not found", at, str(video))
            continue
        clips.append(Clip(vid, str(video.resolve()), cls, at))
    return clips, listed


def build(args, col: Collector) -> dict:
    root = Path(args.root).expanduser()
    lists = Path(args.lists_dir) if args.lists_dir else root / "ucfTrainTestlist"
    videos = Path(args.videos_dir) if args.videos_dir else root / "UCF-101"
    index = read_class_index(require_file(lists / "classInd.txt", "class index (ucfTrainTestlist/classInd.txt)"))
    names = [index[i] for i in sorted(index)]
    cross_check(col, names, "ucf101", str(lists / "classInd.txt"))
    exists: dict = {}
    splits, train1_counts = {}, Counter()
    for k in (1, 2, 3):
        splits[k] = {}
        for part, stem in (("train", "trainlist"), ("test", "testlist")):
            path = lists / f"{stem}0{k}.txt"
            if not path.is_file():
                col.drop("missing file", str(path))
                splits[k][part] = []
                continue
            splits[k][part], listed = read_list(col, path, index, videos, exists)
            if (k, part) == (1, "train"):
                train1_counts = listed
    return add_official_splits(col, splits, train1_counts, names, args, "ucf101")


def parser():
    p = base_parser(__doc__)
    p.add_argument("--videos-dir", help="folder of <Class>/<video>.avi (default ROOT/UCF-101)")
    p.add_argument("--lists-dir", help="folder of classInd.txt and the lists (default ROOT/ucfTrainTestlist)")
    add_ovar_arguments(p)
    return p


def main(argv: list[str] | None = None) -> int:
    return cli_main("ucf101", parser(), build, argv)


if __name__ == "__main__":
    sys.exit(main())
