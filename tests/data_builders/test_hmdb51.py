"""HMDB-51 builder on a fixture in the official layout: the three split files of every class, placeholder videos."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from common.class_lists import class_list, readable
from common.schema import load_records
from data_builders import hmdb51

# ViFi-CLIP's released base classes of HMDB-51 (labels/hmdb_51_base_labels.csv): with equal training counts the
# frequency rule must give exactly these
VIFI_BASE = (
    "pour pullup punch push pushup ride_bike ride_horse run shake_hands shoot_ball shoot_bow shoot_gun sit situp "
    "smile smoke somersault stand swing_baseball sword_exercise sword talk throw turn walk wave"
).split()


def make_hmdb(root: Path, classes=None, extra_train: dict | None = None) -> Path:
    """Per class and split: two train videos (1), one test video (2), one unused (0)."""
    splits = root / "testTrainMulti_7030_splits"
    splits.mkdir(parents=True)
    for cls in classes or class_list("hmdb51"):
        vids = [f"{cls}_clip_{i}_f_cm_np1_fr_med_{i}.avi" for i in range(4 + (extra_train or {}).get(cls, 0))]
        (root / "videos" / cls).mkdir(parents=True)
        for v in vids:
            (root / "videos" / cls / v).write_bytes(b"\0")
        for k in (1, 2, 3):
            tags = ["1", "1", "2", "0"] + ["1"] * (extra_train or {}).get(cls, 0)
            # rotate which video is test per split, as the official splits differ
            lines = [f"{v} {tags[(i + k) % 4] if i < 4 else tags[i]}" for i, v in enumerate(vids)]
            (splits / f"{cls}_test_split{k}.txt").write_text(" \n".join(lines) + " \n")
    return root


def run(root: Path, out: Path, *extra: str) -> int:
    return hmdb51.main(["--root", str(root), "--out", str(out), "--quiet", *extra])


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = make_hmdb(tmp_path_factory.mktemp("hmdb") / "hmdb51")
    out = tmp_path_factory.mktemp("out")
    assert run(root, out) == 0
    return root, out


def half(out: Path, kind: str) -> list[dict]:
    """The records of b2n_eval.jsonl (both halves in one file) tagged `kind` (base or novel)."""
    return [r for r in load_records(out / "b2n_eval.jsonl") if r["meta"]["base_or_novel"] == kind]


def test_records_validate_and_split_sizes(built):
    _, out = built
    sizes = {"b2n_train_base": len(load_records(out / "b2n_train_base.jsonl"))}
    sizes |= {f"b2n_eval {kind}": len(half(out, kind)) for kind in ("base", "novel")}
    # 26 base classes x 2 train videos; test: 1 video per class, base and novel together in one file
    assert sizes == {"b2n_train_base": 52, "b2n_eval base": 26, "b2n_eval novel": 25}
    assert len(load_records(out / "b2n_eval.jsonl")) == 51
    assert not (out / "b2n_eval_base.jsonl").exists() and not (out / "b2n_eval_novel.jsonl").exists()
    for k in (1, 2, 3):
        assert len(load_records(out / f"split{k}_train.jsonl")) == 102
        assert len(load_records(out / f"split{k}_test.jsonl")) == 51
    rec = half(out, "novel")[0]
    assert Path(rec["video"]).is_file() and rec["meta"]["dataset"] == "hmdb51"
    assert rec["label"] in rec["candidates"] and rec["meta"]["base_or_novel"] == "novel"


def test_base_novel_matches_vifi_clip_and_is_disjoint(built):
    _, out = built
    stats = json.loads((out / "stats.json").read_text())
    b2n = stats["protocol"]["base_to_novel"]
    assert set(b2n["base"]) == set(VIFI_BASE) and len(b2n["base"]) == 26
    assert set(b2n["novel"]) == set(class_list("hmdb51")) - set(VIFI_BASE) and len(b2n["novel"]) == 25
    base_words = {readable(c) for c in VIFI_BASE}
    for rec in load_records(out / "b2n_train_base.jsonl") + half(out, "base"):
        assert set(rec["candidates"]) == base_words  # never a novel name, not even as a candidate
    for rec in half(out, "novel"):
        assert not set(rec["candidates"]) & base_words and len(rec["candidates"]) == 25
    assert stats["outputs"]["b2n_train_base"]["records"] == 52 and stats["dropped"] == {}


def test_frequency_rule_moves_a_frequent_class_to_base(tmp_path):
    classes = ["brush_hair", "cartwheel", "catch", "chew"]
    root = make_hmdb(tmp_path / "h", classes, extra_train={"brush_hair": 2})
    assert run(root, tmp_path / "o", "--seed", "1") == 0
    b2n = json.loads((tmp_path / "o" / "stats.json").read_text())["protocol"]["base_to_novel"]
    # brush_hair has 4 train videos, the rest 2: base = brush_hair + the later of the tied ones
    assert b2n["base"] == ["brush_hair", "chew"] and b2n["novel"] == ["cartwheel", "catch"]


def test_same_inputs_give_identical_bytes_and_seed_changes_sampling(built, tmp_path):
    root, out = built
    assert run(root, tmp_path / "a", "--num-candidates", "5", "--shots", "1") == 0
    assert run(root, tmp_path / "b", "--num-candidates", "5", "--shots", "1") == 0
    assert run(root, tmp_path / "c", "--num-candidates", "5", "--shots", "1", "--seed", "7") == 0
    for name in ("b2n_train_base", "b2n_eval", "xd_eval", "stats"):
        ext = "json" if name == "stats" else "jsonl"
        a, b = (tmp_path / d / f"{name}.{ext}" for d in "ab")
        assert a.read_bytes() == b.read_bytes()
    a, c = (half(tmp_path / d, "novel") for d in "ac")
    assert [r["candidates"] for r in a] != [r["candidates"] for r in c]
    train = load_records(tmp_path / "a" / "b2n_train_base.jsonl")
    assert len(train) == 26 and all(len(r["candidates"]) == 5 for r in train)


def test_user_class_split(built, tmp_path):
    root, _ = built
    split = tmp_path / "split.json"
    split.write_text(json.dumps({"base": ["wave", "walk"], "novel": ["kiss"]}))
    assert run(root, tmp_path / "o", "--class-split", str(split)) == 0
    assert {r["label"] for r in load_records(tmp_path / "o" / "b2n_train_base.jsonl")} == {"wave", "walk"}
    split.write_text(json.dumps({"base": ["wave", "flying"], "novel": ["kiss"]}))
    assert run(root, tmp_path / "p", "--class-split", str(split)) == 2  # unknown class: refused


def test_bad_inputs_are_dropped_with_file_and_line(tmp_path, capsys):
    classes = ["brush_hair", "cartwheel", "wave", "zz_made_up"]
    root = make_hmdb(tmp_path / "h", classes)
    splits = root / "testTrainMulti_7030_splits"
    (root / "videos" / "wave" / "wave_clip_0_f_cm_np1_fr_med_0.avi").unlink()  # absent video
    (splits / "cartwheel_test_split2.txt").unlink()  # missing split file
    f = splits / "brush_hair_test_split1.txt"
    f.write_text(f.read_text() + "broken line without tag\n" + f.read_text().splitlines()[0] + "\n")  # dup id
    assert run(root, tmp_path / "o") == 0  # usable records remain
    stats = json.loads((tmp_path / "o" / "stats.json").read_text())
    assert stats["dropped"]["video not found"] == 2  # splits 1 and 2 use it (split 3 marks it unused)
    assert stats["dropped"]["missing file"] == 1
    assert stats["dropped"]["malformed line"] == 1 and stats["dropped"]["duplicate id"] == 1
    # a class gluoncv lacks is kept (its records are written) and reported as a warning, not as dropped
    assert stats["warnings"] == {"class not in the gluoncv list": 1}
    assert "class not in the gluoncv list" not in stats["dropped"]
    assert any(r["meta"]["class"] == "zz_made_up" for r in load_records(tmp_path / "o" / "split1_train.jsonl"))
    where = {p["reason"]: p["where"] for p in stats["problems"]}
    assert where["malformed line"] == f"{f}:5" and where["duplicate id"] == f"{f}:6"
    err = capsys.readouterr().err
    assert "video not found" not in err and "hmdb51 split" not in err  # --quiet: no drops, no progress bars
    assert "warning:" in err and "zz_made_up" in err  # warnings are shown even then
    assert run(root, tmp_path / "s", "--strict") == 1
    assert "--strict" in capsys.readouterr().err


def test_console_names_the_file_and_line(tmp_path, capsys):
    root = make_hmdb(tmp_path / "h", ["brush_hair", "wave"])
    (root / "videos" / "wave" / "wave_clip_1_f_cm_np1_fr_med_1.avi").unlink()
    assert hmdb51.main(["--root", str(root), "--out", str(tmp_path / "o")]) == 0
    err = capsys.readouterr().err
    assert f"{root / 'testTrainMulti_7030_splits' / 'wave_test_split1.txt'}:2: video not found" in err


def test_nothing_usable_or_no_split_folder_exits_non_zero(tmp_path):
    root = make_hmdb(tmp_path / "h", ["wave"])
    for v in (root / "videos" / "wave").iterdir():
        v.unlink()
    assert run(root, tmp_path / "o") == 1
    assert run(tmp_path / "nowhere", tmp_path / "p") == 2


def test_missing_videos_do_not_move_a_class_between_base_and_novel(tmp_path):
    classes = ["brush_hair", "cartwheel", "catch", "chew"]
    root = make_hmdb(tmp_path / "h", classes, extra_train={"brush_hair": 2})
    for v in (root / "videos" / "brush_hair").iterdir():  # none of its videos downloaded
        v.unlink()
    assert run(root, tmp_path / "o") == 0
    stats = json.loads((tmp_path / "o" / "stats.json").read_text())
    # the split file still lists 4 training videos of brush_hair (2 for the others): it stays base
    assert stats["protocol"]["base_to_novel"]["base"] == ["brush_hair", "chew"]
    # each split lists 5 of brush_hair's 6 videos (2 + 2 extra train, 1 test; 1 unused): 3 x 5 lines find no video
    assert stats["dropped"] == {"video not found": 15}


def test_progress_bars_show_without_quiet(tmp_path, capsys):
    root = make_hmdb(tmp_path / "h", ["brush_hair", "wave"])
    assert hmdb51.main(["--root", str(root), "--out", str(tmp_path / "o")]) == 0
    assert "hmdb51 split 1" in capsys.readouterr().err
