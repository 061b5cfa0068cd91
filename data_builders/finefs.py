"""FineFS (figure skating) -> `aqa` records (HieroAction): program type, timed technical elements, scores.

Expected layout (the release on the authors' drives, README "Data Structure"):

    ROOT/data/annotation/<n>.json    n = 0..1166; 0-728 short programs, 729-1166 free skating
    ROOT/data/video/<n>.mp4          25 fps
    ROOT/data/train_split.txt, test_split.txt   optional, one sample number per line

The annotation JSON's item list is described in the authors' Appendix (not in the repository). This builder
assumes, and checks, these keys (a missing key is reported with the file):
    "executed_element": {"<k>": {"element": "3Lz+3T", "start_frame": int, "end_frame": int, ...}, ...}
                        (or a list of such objects), in video frames at --fps
    "total_element_score": TES, "total_program_component_score(factored)": PCS,
    "total_segment_score": the final score (TES + PCS - deductions)
Without split files, the split is seeded per program type with the published sizes (583/146 short, 350/88 free).
FineFS has no difficulty: records carry `meta.has_difficulty = false` (the score reward and eval then leave it out).

    python -m data_builders.finefs --root /data/FineFS --out /data/records/finefs
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import numpy as np

from data_builders.aqa_records import AqaItem, add_aqa
from data_builders.builder import BuildError, Collector, base_parser, cli_main, load_json

SHORT_LAST = 728  # files 0-728 are short programs
TEST_SHARE = {"short program": 146 / 729, "free skating": 88 / 438}
ELEMENTS, SCORE, TES, PCS = (
    "executed_element",
    "total_segment_score",
    "total_element_score",
    "total_program_component_score(factored)",
)


def program(n: int) -> str:
    return "short program" if n <= SHORT_LAST else "free skating"


def seeded_split(numbers: list[int], seed: int) -> dict[int, str]:
    """{n: train|test}: per program type, round(share * count) test samples drawn with the seed."""
    out = {}
    for prog, share in TEST_SHARE.items():
        group = sorted(n for n in numbers if program(n) == prog)
        test = set(np.random.default_rng([seed, len(prog)]).permutation(group)[: round(share * len(group))].tolist())
        out |= {n: "test" if n in test else "train" for n in group}
    return out


def split_of(data: Path, numbers: list[int], seed: int) -> tuple[dict[int, str], str]:
    files = {s: data / f"{s}_split.txt" for s in ("train", "test")}
    if not all(f.is_file() for f in files.values()):
        return seeded_split(numbers, seed), f"seeded (seed {seed}), published sizes"
    out = {}
    for split, path in files.items():
        for lineno, line in enumerate(path.read_text().splitlines(), 1):
            if line.strip() and not line.strip().isdigit():
                raise BuildError(f"{path}:{lineno}: expected a sample number, got {line!r}")
            if line.strip():
                out[int(line)] = split
    return out, "split files"


def item_of(col: Collector, path: Path, split: str, args, videos: Path):
    ann = load_json(path)
    missing = [k for k in (ELEMENTS, SCORE, TES, PCS) if not isinstance(ann, dict) or k not in ann]
    if missing:
        col.drop("missing field", str(path), f"missing {missing}")
        return None
    elements = ann[ELEMENTS]
    elements = [elements[k] for k in sorted(elements, key=int)] if isinstance(elements, dict) else elements
    subs = []
    for i, el in enumerate(elements):
        if not isinstance(el, dict) or not {"element", "start_frame", "end_frame"} <= set(el):
            col.drop("missing field", f"{path}:{ELEMENTS}[{i}]", "an element needs element, start_frame, end_frame")
            return None
        s, e = int(el["start_frame"]) / args.fps, (int(el["end_frame"]) + 1) / args.fps
        subs.append({"name": str(el["element"]), "start": round(s, 3), "end": round(e, 3)})
    video = videos / f"{path.stem}.mp4"
    if not video.is_file():
        col.drop("video not found", str(path), str(video))
        return None
    meta = {"tes": float(ann[TES]), "pcs": float(ann[PCS]), "sample": int(path.stem)}
    label = program(int(path.stem))
    return AqaItem(
        split, f"finefs-{path.stem}", str(video.resolve()), str(path), label, subs, float(ann[SCORE]), None, None, meta
    )


def build(args, col: Collector) -> dict:
    data = Path(args.root).expanduser() / "data"
    annotations = data / "annotation"
    if not annotations.is_dir():
        raise BuildError(f"{annotations}: missing annotation folder (data/annotation/<n>.json)")
    files = sorted((p for p in annotations.glob("*.json") if re.fullmatch(r"\d+", p.stem)), key=lambda p: int(p.stem))
    splits, source = split_of(data, [int(p.stem) for p in files], args.seed)
    items = []
    for path in col.progress(files, "finefs"):
        split = splits.get(int(path.stem))
        if split is None:
            col.drop("not in a split", str(path), "listed in neither split file")
            continue
        item = item_of(col, path, split, args, data / "video")
        if item:
            items.append(item)
    return {"fps": args.fps, "split": source, **add_aqa(col, items, "finefs")}


def parser():
    p = base_parser(__doc__)
    p.add_argument("--fps", type=float, default=25.0, help="frame rate of the videos (25 in FineFS)")
    return p


def main(argv: list[str] | None = None) -> int:
    return cli_main("finefs", parser(), build, argv)


if __name__ == "__main__":
    sys.exit(main())
