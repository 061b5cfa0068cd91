"""LOGO (artistic swimming, group AQA) -> `aqa` records (HieroAction): routine type, action segments, score.

Expected layout (the authors' "Annotations and Split" folder, and the video frames converted to mp4; our video
readers decode video files, not frame folders):

    ROOT/anno_dict.pkl                       {(event, index): [routine type ('tech' | 'free'), score, _,
                                               end frame of each action instance, action id of each frame]}
    ROOT/train_split3.pkl, test_split3.pkl   [(event, index), ...]   (train_split.pkl / test_split.pkl also read)
    ROOT/videos/<event>/<index>.mp4          the frame folder LOGO/<event>/<index>/ encoded at 25 fps, e.g.
                                             ffmpeg -framerate 25 -i <frames>/%05d.jpg videos/<event>/<index>.mp4
    ROOT/action_names.json                   optional {action id: name}; without it segments are "action <id>"

LOGO has no difficulty: records carry `meta.has_difficulty = false` (the score reward and eval then leave it out).
The pickles are read by data_builders/safe_pickle.py, which parses their opcodes and never unpickles.

    python -m data_builders.logo --root /data/LOGO --out /data/records/logo
"""

from __future__ import annotations

import sys
from pathlib import Path

from data_builders.aqa_records import AqaItem, add_aqa, segments_from_frame_labels
from data_builders.builder import BuildError, Collector, base_parser, cli_main, load_json, require_file
from data_builders.safe_pickle import load_pickle

ROUTINES = {"tech": "technical routine", "free": "free routine"}


def split_file(root: Path, split: str) -> Path:
    for name in (f"{split}_split3.pkl", f"{split}_split.pkl"):
        if (root / name).is_file():
            return root / name
    return require_file(root / f"{split}_split3.pkl", f"LOGO {split} split")


def item_of(col: Collector, key, at: str, anno: dict, names: dict, args, videos: Path, split: str):
    key = tuple(key) if isinstance(key, list) else key
    entry = anno.get(key)
    if not isinstance(entry, (list, tuple)) or len(entry) < 5:
        col.drop("missing annotation", at, f"{key!r} has no 5-field entry in anno_dict.pkl")
        return None
    routine, score, frame_actions = str(entry[0]), entry[1], [int(x) for x in entry[4]]
    if routine not in ROUTINES:
        col.drop("unknown class", at, f"{key!r}: routine type {routine!r} is not 'tech' or 'free'")
        return None
    video = videos / str(key[0]) / f"{key[1]}.mp4"
    if not video.is_file():
        col.drop("video not found", at, str(video))
        return None
    lookup = {a: names.get(str(a), f"action {a}") for a in set(frame_actions)}
    subs = segments_from_frame_labels(frame_actions, lookup, args.fps)
    meta = {"event": str(key[0]), "end_frames": [int(x) for x in entry[3]]}
    vid = f"logo-{key[0]}-{key[1]}"
    return AqaItem(split, vid, str(video.resolve()), at, ROUTINES[routine], subs, float(score), None, None, meta)


def build(args, col: Collector) -> dict:
    root = Path(args.root).expanduser()
    videos = Path(args.videos_dir) if args.videos_dir else root / "videos"
    anno = load_pickle(require_file(root / "anno_dict.pkl", "LOGO annotations (anno_dict.pkl)"))
    if not isinstance(anno, dict):
        raise BuildError(f"{root / 'anno_dict.pkl'}: expected a dict keyed by (event, index)")
    names_path = root / "action_names.json"
    names = {str(k): str(v) for k, v in load_json(names_path).items()} if names_path.is_file() else {}
    items, seen = [], {}
    for split in ("train", "test"):
        path = split_file(root, split)
        for i, key in enumerate(col.progress(load_pickle(path), f"logo {split}")):
            at = f"{path}:#{i}"
            if repr(key) in seen:
                col.drop("duplicate id", at, f"{key!r} already listed at {seen[repr(key)]}")
                continue
            seen[repr(key)] = at
            item = item_of(col, key, at, anno, names, args, videos, split)
            if item:
                items.append(item)
    return {
        "fps": args.fps,
        "action_names": "action_names.json" if names else "action <id>",
        **add_aqa(col, items, "logo"),
    }


def parser():
    p = base_parser(__doc__)
    p.add_argument("--videos-dir", help="folder of <event>/<index>.mp4 (default ROOT/videos)")
    p.add_argument("--fps", type=float, default=25.0, help="frame rate of the annotation (25 in LOGO)")
    return p


def main(argv: list[str] | None = None) -> int:
    return cli_main("logo", parser(), build, argv)


if __name__ == "__main__":
    sys.exit(main())
