"""UCF-101 builder on a fixture in the official layout: classInd.txt, three train/test lists, placeholder videos."""

from __future__ import annotations

import json
from pathlib import Path

from common.class_lists import class_list
from common.schema import load_records
from data_builders import ucf101


def make_ucf(root: Path, classes, train_per_class=None) -> Path:
    lists = root / "ucfTrainTestlist"
    lists.mkdir(parents=True)
    (lists / "classInd.txt").write_text("".join(f"{i} {c}\r\n" for i, c in enumerate(classes, 1)))
    for k in (1, 2, 3):
        train, test = [], []
        for i, c in enumerate(classes, 1):
            n = (train_per_class or {}).get(c, 2)
            for g in range(n + 1):
                rel = f"{c}/v_{c}_g{g + 10 * k:02d}_c01.avi"
                (root / "UCF-101" / c).mkdir(parents=True, exist_ok=True)
                (root / "UCF-101" / rel).write_bytes(b"\0")
                (train.append(f"{rel} {i}") if g < n else test.append(rel))
        (lists / f"trainlist0{k}.txt").write_text("\r\n".join(train) + "\r\n")
        (lists / f"testlist0{k}.txt").write_text("\r\n".join(test) + "\r\n")
    return root


def run(root, out, *extra):
    return ucf101.main(["--root", str(root), "--out", str(out), "--quiet", *extra])


def test_full_vocabulary_split_sizes_and_disjoint_halves(tmp_path):
    classes = list(class_list("ucf101"))
    # five classes get more training videos: they must be among the 51 base classes
    frequent = classes[:5]
    root = make_ucf(tmp_path / "ucf", classes, {c: 3 for c in frequent})
    assert run(root, tmp_path / "o") == 0
    stats = json.loads((tmp_path / "o" / "stats.json").read_text())
    b2n = stats["protocol"]["base_to_novel"]
    assert len(b2n["base"]) == 51 and len(b2n["novel"]) == 50 and not set(b2n["base"]) & set(b2n["novel"])
    assert set(frequent) <= set(b2n["base"])
    train = load_records(tmp_path / "o" / "b2n_train_base.jsonl")
    assert len(train) == 5 * 3 + 46 * 2
    evals = load_records(tmp_path / "o" / "b2n_eval.jsonl")
    novel = [r for r in evals if r["meta"]["base_or_novel"] == "novel"]
    base = [r for r in evals if r["meta"]["base_or_novel"] == "base"]
    assert len(evals) == 101 and {r["meta"]["class"] for r in base} == set(b2n["base"])
    assert len(novel) == 50 and {r["meta"]["class"] for r in novel} == set(b2n["novel"])
    assert len(load_records(tmp_path / "o" / "split2_test.jsonl")) == 101
    rec = next(r for r in novel if r["meta"]["class"] == "YoYo") if "YoYo" in b2n["novel"] else novel[0]
    assert rec["label"] in rec["candidates"] and len(rec["candidates"]) == 50
    assert stats["dropped"] == {}


def test_bad_lines_and_missing_lists(tmp_path):
    root = make_ucf(tmp_path / "ucf", ["ApplyEyeMakeup", "Archery", "YoYo"])
    lists = root / "ucfTrainTestlist"
    (lists / "testlist03.txt").unlink()
    with (lists / "trainlist01.txt").open("a") as f:
        f.write("Archery/v_Archery_g99_c01.avi 2\r\n")  # absent video
        f.write("Archery/v_Archery_g10_c01.avi 3\r\n")  # label index says YoYo, folder says Archery
        f.write("ApplyEyeMakeup/v_ApplyEyeMakeup_g10_c01.avi 1\r\n")  # repeated
    (lists / "testlist02.txt").write_text("Unicycling/v_Unicycling_g01_c01.avi\r\n")
    assert run(root, tmp_path / "o") == 0
    stats = json.loads((tmp_path / "o" / "stats.json").read_text())
    assert stats["dropped"] == {"duplicate id": 1, "missing file": 1, "unknown class": 2, "video not found": 1}
    lines = {p["reason"]: p["where"] for p in stats["problems"]}
    assert lines["video not found"] == f"{lists / 'trainlist01.txt'}:7"
    (lists / "classInd.txt").unlink()
    assert run(root, tmp_path / "p") == 2


def test_missing_videos_do_not_move_a_class_between_base_and_novel(tmp_path):
    classes = ["ApplyEyeMakeup", "Archery", "YoYo", "Biking"]
    root = make_ucf(tmp_path / "ucf", classes, {"Archery": 4})
    for v in (root / "UCF-101" / "Archery").iterdir():
        v.unlink()
    assert run(root, tmp_path / "o") == 0
    b2n = json.loads((tmp_path / "o" / "stats.json").read_text())["protocol"]["base_to_novel"]
    # trainlist01 lists 4 Archery videos, 2 of each other class: Archery and the last of the tied (Biking) are base
    assert b2n["base"] == ["Archery", "Biking"] and b2n["novel"] == ["ApplyEyeMakeup", "YoYo"]
