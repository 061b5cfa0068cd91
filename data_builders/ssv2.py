"""Something-Something v2 -> `ovar` records for the base-to-novel protocol (see data_builders/protocols.py).

Expected layout (the official release: the annotation zip and the video parts, extracted):

    ROOT/labels.json              {"Approaching something with your camera": "0", ...}  (174 templates)
    ROOT/train.json, validation.json
                                  [{"id": "78687", "label": "holding potato next to vicks vaporub bottle",
                                    "template": "Holding [something] next to [something]",
                                    "placeholders": ["potato", "vicks vaporub bottle"]}, ...]
    ROOT/20bn-something-something-v2/<id>.webm

A class is a template, and its name is the template's text with "something" as is, as Video-STAR and ViFi-CLIP
name SSv2's classes: the prompt offers "Holding something next to something", "Pushing something from left to
right", ...; `label` and `meta.class` are the video's bare template. The annotators' objects are not put in the
names: they are this video's ground-truth annotation, which a model does not have at test time. They are kept in
`meta.placeholders` and `meta.caption`, which the model is never shown.

    python -m data_builders.ssv2 --root /data/ssv2 --out /data/records/ssv2
"""

from __future__ import annotations

import sys
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from data_builders.builder import (
    BuildError,
    Collector,
    base_parser,
    cli_main,
    json_at,
    load_json,
    require_file,
)
from data_builders.protocols import Clip, add_base_to_novel, add_ovar_arguments, base_novel
from data_builders.protocols import cross_check_vocabulary as cross_check

FIELDS = ("id", "template", "placeholders")


def bare(template: str) -> str:
    """A template as labels.json spells it: the brackets removed.

    >>> bare("Holding [something] next to [something]")
    'Holding something next to something'
    """
    return template.replace("[", "").replace("]", "")


def template_names(clip: Clip, label_set: Sequence[str]) -> tuple[str, list[str]]:
    """The names the prompt uses: the bare templates, "something" and all (the video's objects are never filled in).

    >>> template_names(Clip("1", "/1.webm", "Putting something on a surface", "x:#0"), ["Holding something"])
    ('Putting something on a surface', ['Holding something'])
    """
    return clip.cls, list(label_set)


def read_split(col: Collector, path: Path, classes: set[str], videos: Path) -> tuple[list[Clip], Counter]:
    """(clips, videos listed per class) of train.json or validation.json; unusable entries are dropped with their
    position. The counts are of the JSON's entries, on disk or not (the base/novel ranking must not depend on the
    download)."""
    items = load_json(path)
    if not isinstance(items, list):
        raise BuildError(f"{path}: expected a JSON array of videos")
    clips, seen, listed = [], {}, Counter()
    for i, item in enumerate(col.progress(items, path.name)):
        at = json_at(path, i)
        if not isinstance(item, dict) or any(k not in item for k in FIELDS):
            missing = [k for k in FIELDS if not isinstance(item, dict) or k not in item]
            col.drop("missing field", at, f"missing {missing}")
            continue
        cls = bare(str(item["template"]))
        if cls not in classes:
            col.drop("unknown class", at, f"template {item['template']!r} is not in labels.json")
            continue
        vid = f"ssv2-{item['id']}"
        if vid in seen:
            col.drop("duplicate id", at, f"id {item['id']} already at {seen[vid]}")
            continue
        seen[vid] = at
        listed[cls] += 1
        video = videos / f"{item['id']}.webm"
        if not video.is_file():
            col.drop("video not found", at, str(video))
            continue
        meta = {"placeholders": [str(p) for p in item["placeholders"]], "caption": str(item.get("label", ""))}
        clips.append(Clip(vid, str(video.resolve()), cls, at, meta=meta))
    return clips, listed


def build(args, col: Collector) -> dict:
    root = Path(args.root).expanduser()
    videos = Path(args.videos_dir) if args.videos_dir else root / "20bn-something-something-v2"
    labels_path = require_file(root / "labels.json", "class list (labels.json)")
    labels = load_json(labels_path)
    if not isinstance(labels, dict):
        raise BuildError(f"{labels_path}: expected an object {{template: index}}")
    names = sorted(labels, key=lambda c: int(labels[c]))
    cross_check(col, names, "ssv2", str(labels_path))
    train, train_counts = read_split(col, require_file(root / "train.json", "train.json"), set(names), videos)
    evals, _ = read_split(col, require_file(root / "validation.json", "validation.json"), set(names), videos)
    base, novel, source = base_novel(args, train_counts, names)
    add_base_to_novel(col, train, evals, base, novel, args, "ssv2", names=template_names)
    return {"base_to_novel": {"base": base, "novel": novel, "source": source, "eval": "validation.json"}}


def parser():
    p = base_parser(__doc__)
    p.add_argument("--videos-dir", help="folder of <id>.webm (default ROOT/20bn-something-something-v2)")
    add_ovar_arguments(p)
    return p


def main(argv: list[str] | None = None) -> int:
    return cli_main("ssv2", parser(), build, argv)


if __name__ == "__main__":
    sys.exit(main())
