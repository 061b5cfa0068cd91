"""CAP builder on a fixture in the classification release's layout: videos/<activity>/<video>.mp4 and
train_val.json, with activity names from CAP's label list."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from common.schema import load_records
from data_builders import cap

SPLITS = ("tuning", "held_in", "held_out")
ACTIVITIES = ["person_pulls_out_chair", "person_pushes_in_chair", "person_hugs_dog", "person_opens_laptop"]


def make_cap(root: Path) -> Path:
    """Per activity: videos <activity>_<i>; 0 and 1 train, 2 val (video names as in the release: hash-like ids)."""
    lists = {"train": [], "val": []}
    for a, activity in enumerate(ACTIVITIES):
        folder = root / "videos" / activity
        folder.mkdir(parents=True)
        for i in range(3):
            stem = f"{a:02d}{i}F3B9C1-D2E4-4A7B_{i}"
            (folder / f"{stem}.mp4").write_bytes(b"\0")
            lists["train" if i < 2 else "val"].append(f"{stem}.mp4" if i == 0 else stem)
    (root / "train_val.json").write_text(json.dumps(lists))
    return root


def run(root: Path, out: Path, *extra: str) -> int:
    return cap.main(["--root", str(root), "--out", str(out), "--quiet", *extra])


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = make_cap(tmp_path_factory.mktemp("cap") / "cap")
    out = tmp_path_factory.mktemp("out")
    assert run(root, out) == 0
    return root, out


def test_describe_records_per_split(built):
    _, out = built
    train, val = load_records(out / "train.jsonl"), load_records(out / "val.jsonl")
    assert len(train) == 8 and len(val) == 4
    (rec,) = [r for r in val if r["meta"]["class"] == "person_pulls_out_chair"]
    assert rec["task"] == "describe" and rec["gold_points"] == ["The person pulls out chair."]
    assert rec["id"] == "cap-002F3B9C1-D2E4-4A7B_2" and Path(rec["video"]).is_file()
    assert rec["video"].endswith("videos/person_pulls_out_chair/002F3B9C1-D2E4-4A7B_2.mp4")
    stats = json.loads((out / "stats.json").read_text())
    assert stats["dropped"] == {} and stats["protocol"]["activities"] == sorted(ACTIVITIES)


def test_category_split_gives_tuning_held_in_held_out(built, tmp_path):
    root, _ = built
    split = tmp_path / "split.json"
    split.write_text(
        json.dumps(
            {
                "tuning": ["person_pulls_out_chair", "person_pushes_in_chair", "person_hugs_dog"],
                "held_in": ["person_pulls_out_chair"],
                "held_out": ["person_opens_laptop"],
            }
        )
    )
    assert run(root, tmp_path / "o", "--category-split", str(split)) == 0
    tuning, held_in, held_out = (load_records(tmp_path / "o" / f"{n}.jsonl") for n in SPLITS)
    assert len(tuning) == 6 and {r["meta"]["split"] for r in tuning} == {"train"}
    assert [r["meta"]["class"] for r in held_in] == ["person_pulls_out_chair"]
    assert [r["meta"]["class"] for r in held_out] == ["person_opens_laptop"]
    assert held_in[0]["meta"]["base_or_novel"] == "base" and held_out[0]["meta"]["base_or_novel"] == "novel"
    # the benchmark file: held-in then held-out, as written to their own files
    assert load_records(tmp_path / "o" / "eval.jsonl") == held_in + held_out
    split.write_text(
        json.dumps({"tuning": ["person_opens_laptop"], "held_in": [], "held_out": ["person_opens_laptop"]})
    )
    assert run(root, tmp_path / "p", "--category-split", str(split)) == 2  # held-out must be unseen
    split.write_text(json.dumps({"tuning": ["person_flies"], "held_in": [], "held_out": []}))
    assert run(root, tmp_path / "q", "--category-split", str(split)) == 2  # unknown activity


def test_idempotent(built, tmp_path):
    root, out = built
    assert run(root, tmp_path / "a") == 0
    for name in ("train.jsonl", "val.jsonl", "stats.json"):
        assert (tmp_path / "a" / name).read_bytes() == (out / name).read_bytes()


def test_bad_inputs_are_reported_with_their_place(tmp_path):
    root = make_cap(tmp_path / "cap")
    lists = json.loads((root / "train_val.json").read_text())
    lists["val"] += ["NOT_ON_DISK_1", lists["train"][1]]  # absent video; listed twice
    (root / "train_val.json").write_text(json.dumps(lists))
    stray = root / "videos" / "person_hugs_dog" / "unlisted_video.mp4"
    stray.write_bytes(b"\0")
    assert run(root, tmp_path / "o") == 0
    stats = json.loads((tmp_path / "o" / "stats.json").read_text())
    assert stats["dropped"] == {"video not found": 1, "duplicate id": 1, "video not in train_val.json": 1}
    where = {p["reason"]: p["where"] for p in stats["problems"]}
    assert where["video not found"] == f"{root / 'train_val.json'}:val#4"
    assert where["duplicate id"] == f"{root / 'train_val.json'}:val#5"
    assert where["video not in train_val.json"] == str(stray.resolve())
    assert run(root, tmp_path / "s", "--strict") == 1


def test_without_split_lists_everything_goes_to_all(tmp_path):
    root = make_cap(tmp_path / "cap")
    (root / "train_val.json").unlink()
    assert run(root, tmp_path / "o") == 0
    assert len(load_records(tmp_path / "o" / "all.jsonl")) == 12
    assert run(tmp_path / "nowhere", tmp_path / "p") == 2
