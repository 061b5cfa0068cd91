"""CAP (Consented Activities of People) -> `describe` records, the data Gold Points Sniper (GPS) tunes and
evaluates on.

Expected layout (the classification release, `cap_classification_clip.tar.gz` or `cap_classification_pad.tar.gz`
from visym.github.io/cap, extracted):

    ROOT/videos/<activity>/<video>.mp4     one folder per activity label, e.g. person_pulls_out_chair/
    ROOT/train_val.json                    {"train": [<video>, ...], "val": [<video>, ...]} (names with or without
                                           folder and extension); optional: without it every video goes to all.jsonl
    ROOT/annotations/<activity>.json       vipy JSON (boxes and frame ranges): not read, the clips are trimmed

The label vocabulary is the set of activity folders. The GPS paper draws an instruction-tuning set of 80 activity
categories and an assessment benchmark of 40 (20 held-in, also tuned on, with videos of other scenes; 20 held-out,
never tuned on); it does not list them, so `--category-split FILE` takes them as JSON
{"tuning": [...], "held_in": [...], "held_out": [...]} (activity names as the folders spell them). With it the
outputs are tuning.jsonl (train videos of the tuning categories), held_in.jsonl and held_out.jsonl (val videos of
those categories; `meta.base_or_novel` base / novel) and eval.jsonl (the two together: one evaluation of it reports
held-in, held-out and whole); without it, train.jsonl and val.jsonl over every category.

Gold points: the schema needs at least one. GPS's ground-truth gold points end with one that states the action
label; that one is what the label alone gives, so each record built here has exactly it ("The person pulls out
chair.", `meta.gold_points_source` "label"). The full lists, several points per video, come from a second pass,
`python -m data_builders.gold_points` (an annotator VLM that sees the frames, or your own points file), which keeps
this last point. The prompt is the paper's generic prompt (Table I, `common.gps.GENERIC_PROMPT`).

    python -m data_builders.cap --root /data/cap_classification_clip --out /data/records/cap
"""

from __future__ import annotations

import sys
from pathlib import Path

from common.class_lists import readable
from common.gps import GENERIC_PROMPT
from data_builders.builder import BuildError, Collector, base_parser, cli_main, json_at, load_json

VIDEO_EXTS = (".mp4", ".mkv", ".webm", ".avi")
DESCRIBE_PROMPT = GENERIC_PROMPT  # GPS Table I: the baseline and "+Finetuning" prompt
SPLIT_KEYS = ("tuning", "held_in", "held_out")


def label_gold_point(activity: str) -> str:
    """The gold point an activity label states, as a sentence.

    >>> label_gold_point("person_pulls_out_chair"), label_gold_point("person_sneezees into arm")
    ('The person pulls out chair.', 'The person sneezees into arm.')
    """
    words = readable(activity)
    if words.startswith("person "):
        words = "the " + words
    return words[0].upper() + words[1:] + "."


def index_videos(videos: Path) -> dict[str, tuple[str, Path]]:
    """{video stem: (activity, path)} of `videos/<activity>/<video>.<ext>`; a stem found twice keeps the first."""
    if not videos.is_dir():
        raise BuildError(f"{videos}: missing videos folder (videos/<activity>/<video>.mp4)")
    found: dict[str, tuple[str, Path]] = {}
    for folder in sorted(p for p in videos.iterdir() if p.is_dir()):
        for path in sorted(folder.iterdir()):
            if path.suffix in VIDEO_EXTS and path.is_file():
                found.setdefault(path.stem, (folder.name, path.resolve()))
    if not found:
        raise BuildError(f"{videos}: no <activity>/<video>.mp4 files")
    return found


def read_split_lists(col: Collector, path: Path, videos: dict) -> dict[str, list[tuple[str, str]]]:
    """{"train": [(stem, where)], "val": [...]} from train_val.json; listed videos absent from disk and names
    listed twice are dropped with their position."""
    obj = load_json(path)
    if not isinstance(obj, dict) or not all(isinstance(obj.get(k), list) for k in ("train", "val")):
        raise BuildError(f'{path}: expected {{"train": [video, ...], "val": [video, ...]}}')
    out: dict[str, list[tuple[str, str]]] = {"train": [], "val": []}
    seen: dict[str, str] = {}
    for split in ("train", "val"):
        for i, name in enumerate(col.progress(obj[split], f"cap {split}")):
            at = json_at(path, i).replace(":#", f":{split}#")
            stem = Path(str(name)).stem
            if stem in seen:
                col.drop("duplicate id", at, f"{name!r} already listed at {seen[stem]}")
            elif stem not in videos:
                col.drop("video not found", at, f"{name!r} is not under videos/<activity>/")
            else:
                seen[stem] = at
                out[split].append((stem, at))
    return out


def read_category_split(path: Path, activities: set[str]) -> dict[str, list[str]]:
    """The user's GPS category split; BuildError naming the file for a missing key or an unknown activity."""
    obj = load_json(path)
    if not isinstance(obj, dict) or not all(isinstance(obj.get(k), list) for k in SPLIT_KEYS):
        raise BuildError(f"{path}: a category split is a JSON object with lists {', '.join(SPLIT_KEYS)}")
    unknown = sorted({c for k in SPLIT_KEYS for c in obj[k]} - activities)
    if unknown:
        raise BuildError(f"{path}: unknown activity folder(s) {unknown[:10]}")
    overlap = sorted(set(obj["tuning"]) & set(obj["held_out"]))
    if overlap:
        raise BuildError(f"{path}: held-out categories must not be tuned on: {overlap[:10]}")
    return {k: list(obj[k]) for k in SPLIT_KEYS}


def add_describe(col: Collector, output: str, items, videos: dict, split: str, role: str | None = None) -> None:
    """A `describe` record per (stem, where) of `items` into `output`."""
    for stem, at in items:
        activity, path = videos[stem]
        gold = label_gold_point(activity)
        meta = {"dataset": "cap", "split": split, "class": activity, "gold_points_source": "label"}
        if role:
            meta["base_or_novel"] = role
        rec = {
            "id": f"cap-{stem}",
            "task": "describe",
            "video": str(path),
            "prompt": DESCRIBE_PROMPT,
            "answer": gold,
            "gold_points": [gold],
            "meta": meta,
        }
        col.add(output, rec, at)


def build(args, col: Collector) -> dict:
    root = Path(args.root).expanduser()
    videos = index_videos(Path(args.videos_dir) if args.videos_dir else root / "videos")
    activities = sorted({a for a, _ in videos.values()})
    lists_path = root / "train_val.json"
    if lists_path.is_file():
        lists = read_split_lists(col, lists_path, videos)
        listed = {s for items in lists.values() for s, _ in items}
        for stem in sorted(set(videos) - listed):
            col.drop("video not in train_val.json", str(videos[stem][1]))
    else:
        lists = None
    split = read_category_split(Path(args.category_split), set(activities)) if args.category_split else None
    if lists is None:
        add_describe(col, "all", [(s, str(videos[s][1])) for s in sorted(videos)], videos, "all")
    elif split is None:
        for name, items in lists.items():
            add_describe(col, name, items, videos, name)
    else:
        of = {k: set(v) for k, v in split.items()}
        add_describe(col, "tuning", [i for i in lists["train"] if videos[i[0]][0] in of["tuning"]], videos, "train")
        for key, role in (("held_in", "base"), ("held_out", "novel")):
            items = [i for i in lists["val"] if videos[i[0]][0] in of[key]]
            add_describe(col, key, items, videos, "val", role)
            add_describe(col, "eval", items, videos, "val", role)  # both halves: one benchmark, one evaluation
    return {
        "activities": activities,
        "split_lists": str(lists_path) if lists is not None else None,
        "category_split": split,
        "gold_points": "one, stating the activity label (more: python -m data_builders.gold_points)",
    }


def parser():
    p = base_parser(__doc__)
    p.add_argument("--videos-dir", help="folder of <activity>/<video>.mp4 (default ROOT/videos)")
    p.add_argument("--category-split", help='JSON {"tuning": [...], "held_in": [...], "held_out": [...]} (GPS)')
    return p


def main(argv: list[str] | None = None) -> int:
    return cli_main("cap", parser(), build, argv)


if __name__ == "__main__":
    sys.exit(main())
