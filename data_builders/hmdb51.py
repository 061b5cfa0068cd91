"""HMDB-51 -> `ovar` records for the base-to-novel and cross-dataset protocols (see data_builders/protocols.py).

Expected layout (the official `hmdb51_org.rar` with each class's rar extracted, and `test_train_splits.rar`):

    ROOT/videos/<class>/<video>.avi
    ROOT/testTrainMulti_7030_splits/<class>_test_split<k>.txt     k = 1, 2, 3; lines "<video>.avi <0|1|2>"
                                                                   (1 = train, 2 = test, 0 = unused)

Outputs: b2n_train_base and b2n_eval (split 1; base and novel records in one file), split<k>_train /
split<k>_test (all 51 classes, k = 1..3, the cross-dataset source and the full benchmark) and xd_eval (the three
test lists in one file, `meta.fold` k: the cross-dataset target of a model trained on UCF-101).

    python -m data_builders.hmdb51 --root /data/hmdb51 --out /data/records/hmdb51
"""

from __future__ import annotations

import re
import sys
from collections import Counter
from pathlib import Path

from data_builders.builder import BuildError, Collector, base_parser, cli_main, where
from data_builders.protocols import Clip, add_official_splits, add_ovar_arguments
from data_builders.protocols import cross_check_vocabulary as cross_check

SPLIT_FILE = re.compile(r"^(?P<cls>.+)_test_split(?P<k>[123])\.txt$")
TAGS = {"1": "train", "2": "test"}


def split_files(splits_dir: Path) -> dict[str, dict[int, Path]]:
    """{class: {k: path}} from the split folder's file names (the class vocabulary comes from them)."""
    if not splits_dir.is_dir():
        raise BuildError(f"{splits_dir}: missing split folder (testTrainMulti_7030_splits from test_train_splits.rar)")
    found: dict[str, dict[int, Path]] = {}
    for path in sorted(splits_dir.iterdir()):
        m = SPLIT_FILE.match(path.name)
        if m:
            found.setdefault(m["cls"], {})[int(m["k"])] = path
    if not found:
        raise BuildError(f"{splits_dir}: no <class>_test_split<k>.txt files")
    return found


def read_split(
    col: Collector, classes: dict[str, dict[int, Path]], k: int, videos: Path, exists: dict
) -> tuple[dict[str, list[Clip]], Counter]:
    """({"train": clips, "test": clips}, training videos listed per class) of split k. Unusable lines are dropped
    with their file:line; the counts are of the split file's train lines, on disk or not, so that missing videos
    cannot move a class between base and novel."""
    out: dict[str, list[Clip]] = {"train": [], "test": []}
    listed: Counter = Counter()
    seen: dict[str, str] = {}
    for cls in col.progress(sorted(classes), f"hmdb51 split {k}"):
        path = classes[cls].get(k)
        if path is None:
            col.drop("missing file", str(next(iter(classes[cls].values())).parent / f"{cls}_test_split{k}.txt"))
            continue
        for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            parts = line.split()
            at = where(path, lineno)
            if len(parts) != 2 or parts[1] not in ("0", "1", "2"):
                col.drop("malformed line", at, repr(line))
                continue
            if parts[1] == "0":
                continue
            vid = f"hmdb51-{cls}-{Path(parts[0]).stem}"
            if vid in seen:
                col.drop("duplicate id", at, f"{parts[0]} already listed at {seen[vid]}")
                continue
            seen[vid] = at
            if parts[1] == "1":
                listed[cls] += 1
            video = videos / cls / parts[0]
            if video not in exists:
                exists[video] = video.is_file()
            if not exists[video]:
                col.drop("video not found", at, str(video))
                continue
            out[TAGS[parts[1]]].append(Clip(vid, str(video.resolve()), cls, at, meta={"official_split": k}))
    return out, listed


def build(args, col: Collector) -> dict:
    root = Path(args.root).expanduser()
    videos = Path(args.videos_dir) if args.videos_dir else root / "videos"
    classes = split_files(Path(args.splits_dir) if args.splits_dir else root / "testTrainMulti_7030_splits")
    names = sorted(classes)
    cross_check(col, names, "hmdb51", str(root / "testTrainMulti_7030_splits"))
    exists: dict = {}
    read = {k: read_split(col, classes, k, videos, exists) for k in (1, 2, 3)}
    splits = {k: parts for k, (parts, _) in read.items()}
    return add_official_splits(col, splits, read[1][1], names, args, "hmdb51")


def parser():
    p = base_parser(__doc__)
    p.add_argument("--videos-dir", help="folder of <class>/<video>.avi (default ROOT/videos)")
    p.add_argument("--splits-dir", help="folder of the split files (default ROOT/testTrainMulti_7030_splits)")
    add_ovar_arguments(p)
    return p


def main(argv: list[str] | None = None) -> int:
    return cli_main("hmdb51", parser(), build, argv)


if __name__ == "__main__":
    sys.exit(main())
