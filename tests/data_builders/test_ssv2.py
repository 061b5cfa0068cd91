"""SSv2 builder on a fixture in the official layout: labels.json, train.json, validation.json, .webm files."""

from __future__ import annotations

import json
from pathlib import Path

from common.schema import load_records
from data_builders import ssv2

TEMPLATES = [
    "Approaching [something] with your camera",
    "Holding [something] next to [something]",
    "Pushing [something] from left to right",
    "Putting [something] on a surface",
]


def make_ssv2(root: Path) -> Path:
    root.mkdir(parents=True)
    (root / "labels.json").write_text(
        json.dumps({t.replace("[", "").replace("]", ""): str(i) for i, t in enumerate(TEMPLATES)})
    )
    items = {"train": [], "validation": []}
    n = 0
    for i, t in enumerate(TEMPLATES):
        for split, count in (("train", 2 + (i % 2)), ("validation", 1)):
            for _ in range(count):
                objs = ["potato", "vicks vaporub bottle"][: t.count("[")]
                items[split].append(
                    {
                        "id": str(1000 + n),
                        "label": t.replace("[something]", "{}").format(*objs),
                        "template": t,
                        "placeholders": objs,
                    }
                )
                n += 1
    videos = root / "20bn-something-something-v2"
    videos.mkdir()
    for split, lst in items.items():
        (root / f"{split}.json").write_text(json.dumps(lst, indent=1))
        for it in lst:
            (videos / f"{it['id']}.webm").write_bytes(b"\0")
    return root


def test_template_names_without_the_objects_and_base_novel(tmp_path):
    root = make_ssv2(tmp_path / "ssv2")
    assert ssv2.main(["--root", str(root), "--out", str(tmp_path / "o"), "--quiet"]) == 0
    stats = json.loads((tmp_path / "o" / "stats.json").read_text())
    b2n = stats["protocol"]["base_to_novel"]
    # templates 1 and 3 have 3 training videos, 0 and 2 have 2
    assert b2n["base"] == ["Holding something next to something", "Putting something on a surface"]
    train = load_records(tmp_path / "o" / "b2n_train_base.jsonl")
    assert len(train) == 6
    rec = next(r for r in train if r["meta"]["class"] == "Holding something next to something")
    # the template's text with "something" as is (Video-STAR / ViFi-CLIP): the annotators' objects stay in meta
    assert rec["label"] == "Holding something next to something" == rec["answer"]
    assert rec["candidates"] == ["Holding something next to something", "Putting something on a surface"]
    assert rec["prompt"] == (
        "What action is the person performing? Choose one of: "
        "Holding something next to something, Putting something on a surface."
    )
    assert rec["meta"]["caption"] == "Holding potato next to vicks vaporub bottle"
    evals = load_records(tmp_path / "o" / "b2n_eval.jsonl")
    novel = [r for r in evals if r["meta"]["base_or_novel"] == "novel"]
    assert [r["label"] for r in novel] == [
        "Approaching something with your camera",
        "Pushing something from left to right",
    ]
    assert all(r["candidates"] == [r["label"] for r in novel] for r in novel)
    assert not any("potato" in r["prompt"] or "vaporub" in r["prompt"] for r in train + evals)
    assert stats["dropped"] == {}


def test_unknown_template_missing_field_and_duplicate(tmp_path):
    root = make_ssv2(tmp_path / "ssv2")
    items = json.loads((root / "train.json").read_text())
    items.append({"id": "9", "label": "x", "template": "Spinning [something] around", "placeholders": ["x"]})
    items.append({"id": "10", "label": "x", "placeholders": []})
    items.append(dict(items[0]))
    (root / "train.json").write_text(json.dumps(items))
    assert ssv2.main(["--root", str(root), "--out", str(tmp_path / "o"), "--quiet"]) == 0
    stats = json.loads((tmp_path / "o" / "stats.json").read_text())
    assert stats["dropped"] == {"duplicate id": 1, "missing field": 1, "unknown class": 1}
    assert {p["where"] for p in stats["problems"]} == {f"{root / 'train.json'}:#{i}" for i in (10, 11, 12)}


def test_missing_videos_do_not_move_a_class_between_base_and_novel(tmp_path):
    root = make_ssv2(tmp_path / "ssv2")
    train = json.loads((root / "train.json").read_text())
    holding = [it["id"] for it in train if it["template"].startswith("Holding")]
    for vid in holding:  # none of the 3 training videos of "Holding ..." on disk
        (root / "20bn-something-something-v2" / f"{vid}.webm").unlink()
    assert ssv2.main(["--root", str(root), "--out", str(tmp_path / "o"), "--quiet"]) == 0
    stats = json.loads((tmp_path / "o" / "stats.json").read_text())
    # train.json still lists 3 videos of templates 1 and 3, 2 of templates 0 and 2
    assert stats["protocol"]["base_to_novel"]["base"] == [
        "Holding something next to something",
        "Putting something on a surface",
    ]
    assert stats["dropped"] == {"video not found": 3}
