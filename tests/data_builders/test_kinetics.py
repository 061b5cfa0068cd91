"""Kinetics builders on fixtures in the official CSV layout: K-400 base-to-novel, K-600's 220 novel classes."""

from __future__ import annotations

import json
from pathlib import Path

from common.class_lists import class_list, readable
from common.schema import load_records
from data_builders import kinetics

HEADER = "label,youtube_id,time_start,time_end,split\n"


def make_kinetics(root: Path, rows: dict[str, list[tuple[str, str]]]) -> Path:
    """rows: {csv split: [(label, youtube_id)]}; clips of 10 s from 5 s, videos in <split folder>/<label>/."""
    (root / "annotations").mkdir(parents=True)
    folder = {"train": "train", "validate": "val"}
    for split, items in rows.items():
        lines = [f'"{label}",{yt},5,15,{split}\n' for label, yt in items]
        (root / "annotations" / f"{split}.csv").write_text(HEADER + "".join(lines))
        for label, yt in items:
            d = root / folder[split] / label
            d.mkdir(parents=True, exist_ok=True)
            (d / f"{yt}_000005_000015.mp4").write_bytes(b"\0")
    return root


def test_k400_base_to_novel(tmp_path):
    names = [readable(c) for c in class_list("kinetics400")[:6]]
    train = [(c, f"tr{i}{j}") for i, c in enumerate(names) for j in range(2 + (i == 0))]
    val = [(c, f"va{i}") for i, c in enumerate(names)] + [("not a class", "zz")]
    root = make_kinetics(tmp_path / "k400", {"train": train, "validate": val})
    out = tmp_path / "o"
    assert kinetics.main(["--version", "400", "--root", str(root), "--out", str(out), "--quiet"]) == 0
    b2n = json.loads((out / "stats.json").read_text())["protocol"]["base_to_novel"]
    assert names[0] in b2n["base"] and len(b2n["base"]) == 3 and not set(b2n["base"]) & set(b2n["novel"])
    assert len(load_records(out / "b2n_train_base.jsonl")) == 7  # 3 + 2 + 2
    novel = [r for r in load_records(out / "b2n_eval.jsonl") if r["meta"]["base_or_novel"] == "novel"]
    assert {r["label"] for r in novel} == set(b2n["novel"]) and all(len(r["candidates"]) == 3 for r in novel)
    stats = json.loads((out / "stats.json").read_text())
    assert stats["dropped"] == {"unknown class": 1}
    assert stats["problems"][0]["where"] == f"{root / 'annotations' / 'validate.csv'}:8"


def test_k600_three_splits_of_160_among_the_220_new_classes(tmp_path):
    old = [readable(c) for c in class_list("kinetics400")[:380]]
    new = [f"new action {i:03d}" for i in range(220)]
    val = [(c, f"v{i:04d}") for i, c in enumerate(old + new)]
    root = make_kinetics(tmp_path / "k600", {"validate": val})
    (root / "val" / "new action 000" / "v0380_000005_000015.mp4").unlink()  # absent video
    args = ["--version", "600", "--root", str(root), "--quiet"]
    assert kinetics.main([*args, "--out", str(tmp_path / "a")]) == 0
    assert kinetics.main([*args, "--out", str(tmp_path / "b")]) == 0
    assert kinetics.main([*args, "--out", str(tmp_path / "c"), "--seed", "3"]) == 0
    stats = json.loads((tmp_path / "a" / "stats.json").read_text())
    splits = stats["protocol"]["zero_shot_splits"]
    assert sorted(stats["protocol"]["novel_classes"]) == new
    assert [len(s) for s in splits] == [160, 160, 160] and len({tuple(s) for s in splits}) == 3
    assert all(set(s) <= set(new) for s in splits)
    for k in (1, 2, 3):
        recs = load_records(tmp_path / "a" / f"zs_split{k}.jsonl")
        expected = 160 - ("new action 000" in splits[k - 1])
        assert len(recs) == expected and all(r["meta"]["base_or_novel"] == "novel" for r in recs)
        assert (tmp_path / "a" / f"zs_split{k}.jsonl").read_bytes() == (
            tmp_path / "b" / f"zs_split{k}.jsonl"
        ).read_bytes()
    other = json.loads((tmp_path / "c" / "stats.json").read_text())["protocol"]["zero_shot_splits"]
    assert other != splits
    assert stats["dropped"]["video not found"] == 1


def test_renamed_column_is_refused_with_the_file(tmp_path, capsys):
    root = make_kinetics(tmp_path / "k", {"train": [("abseiling", "a")], "validate": [("abseiling", "b")]})
    csv = root / "annotations" / "train.csv"
    csv.write_text(csv.read_text().replace("youtube_id", "video_id", 1))
    assert kinetics.main(["--version", "400", "--root", str(root), "--out", str(tmp_path / "o")]) == 2
    assert f"{csv}:1: missing column(s) ['youtube_id']" in capsys.readouterr().err
