"""ViFi-CLIP's label files: K-600 zero-shot splits (`ZS_split{k}_K600.csv`) and base-label CSVs for --class-split,
on small fixtures written by hand in their format (header `id,name`, ids from 0, names quoted when they hold a
comma), read by the Kinetics-600 and HMDB-51 builders."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from common.class_lists import class_list, readable
from common.schema import load_records
from data_builders import hmdb51, kinetics
from data_builders.builder import BuildError
from data_builders.label_files import read_class_split, read_id_name_csv
from tests.data_builders.test_hmdb51 import make_hmdb
from tests.data_builders.test_kinetics import make_kinetics

NEW = ["acting in play", "adjusting glasses", "arguing", "backflip (human)", "base jumping"]
# three splits of three of the five new classes, as ViFi-CLIP writes its files (a quoted name in split 2)
SPLITS = {
    1: "id,name\n0,acting in play\n1,arguing\n2,backflip (human)\n",
    2: 'id,name\n0,adjusting glasses\n1,"base jumping"\n2,acting in play\n',
    3: "id,name\n0,base jumping\n1,arguing\n2,adjusting glasses\n",
}
EXPECTED = {
    1: ["acting in play", "arguing", "backflip (human)"],
    2: ["adjusting glasses", "base jumping", "acting in play"],
    3: ["base jumping", "arguing", "adjusting glasses"],
}


def write_splits(folder: Path, splits: dict[int, str]) -> Path:
    folder.mkdir(parents=True)
    for k, text in splits.items():
        (folder / f"ZS_split{k}_K600.csv").write_text(text)
    return folder


@pytest.fixture
def k600(tmp_path) -> Path:
    """A Kinetics-600 validation set: 3 Kinetics-400 classes and the 5 new ones, one video each."""
    old = [readable(c) for c in class_list("kinetics400")[:3]]
    return make_kinetics(tmp_path / "k600", {"validate": [(c, f"v{i}") for i, c in enumerate(old + NEW)]})


def run_600(root: Path, out: Path, *extra: str) -> int:
    return kinetics.main(["--version", "600", "--root", str(root), "--out", str(out), "--quiet", *extra])


def test_id_name_csv_rows_keep_a_quoted_comma(tmp_path):
    path = tmp_path / "labels.csv"
    path.write_text(
        'id,name\n0,Pouring something into something\n\n5,"Removing something, revealing something behind"\n'
    )
    assert read_id_name_csv(path) == [
        (2, "Pouring something into something"),
        (4, "Removing something, revealing something behind"),
    ]


def test_vificlip_k600_splits_define_the_three_folds(k600, tmp_path):
    labels = write_splits(tmp_path / "ViFi-CLIP" / "labels", SPLITS)
    assert run_600(k600, tmp_path / "o", "--vificlip-splits", str(labels.parent)) == 0  # a clone: DIR/labels/ found
    stats = json.loads((tmp_path / "o" / "stats.json").read_text())
    assert stats["protocol"]["zero_shot_splits"] == [EXPECTED[k] for k in (1, 2, 3)]
    assert stats["protocol"]["source"].startswith("ViFi-CLIP split files")
    # kept and reported: 5 new classes, not 220; and each split's 3 classes, not 160
    assert stats["warnings"] == {"unexpected class count": 4}
    assert [p["where"] for p in stats["problems"]][1:] == [str(labels / f"ZS_split{k}_K600.csv") for k in (1, 2, 3)]
    for k in (1, 2, 3):
        recs = load_records(tmp_path / "o" / f"zs_split{k}.jsonl")
        assert sorted(r["label"] for r in recs) == sorted(EXPECTED[k])
        assert all(r["candidates"] == EXPECTED[k] for r in recs)  # the file's order, as words
    folds = load_records(tmp_path / "o" / "xd_eval.jsonl")
    assert [r["meta"]["fold"] for r in folds] == [1] * 3 + [2] * 3 + [3] * 3
    assert {r["id"] for r in folds if r["label"] == "arguing"} == {
        "k600-v5_000005_000015-fold1",
        "k600-v5_000005_000015-fold3",
    }
    assert all(r["candidates"] == EXPECTED[r["meta"]["fold"]] for r in folds)


def test_vificlip_splits_refuse_a_bad_row_or_a_missing_file(k600, tmp_path, capsys):
    bad = write_splits(tmp_path / "bad", {**SPLITS, 2: "id,name\n0,adjusting glasses\nx,arguing\n"})
    assert run_600(k600, tmp_path / "o", "--vificlip-splits", str(bad)) == 2
    assert f"{bad / 'ZS_split2_K600.csv'}:3: expected 'id,name', got 'x,arguing'" in capsys.readouterr().err
    partial = write_splits(tmp_path / "partial", {1: SPLITS[1], 2: SPLITS[2]})
    assert run_600(k600, tmp_path / "p", "--vificlip-splits", str(partial)) == 2
    assert f"{partial / 'ZS_split3_K600.csv'}: missing ViFi-CLIP split file" in capsys.readouterr().err
    unknown = write_splits(tmp_path / "unknown", {**SPLITS, 3: "id,name\n0,juggling chainsaws\n"})
    assert run_600(k600, tmp_path / "q", "--vificlip-splits", str(unknown)) == 2
    assert f"{unknown / 'ZS_split3_K600.csv'}:2: unknown class 'juggling chainsaws'" in capsys.readouterr().err
    assert run_600(k600, tmp_path / "r", "--vificlip-splits", str(bad), "--split-files", "a", "b", "c") == 2


def test_class_split_reads_a_vificlip_base_label_csv(tmp_path):
    classes = ["brush_hair", "kiss", "ride_bike", "wave"]
    root = make_hmdb(tmp_path / "h", classes)
    base_csv = tmp_path / "hmdb_51_base_labels.csv"
    base_csv.write_text("id,name\n0,ride bike\n1,wave\n")  # ViFi-CLIP writes names as words
    assert (
        hmdb51.main(["--root", str(root), "--out", str(tmp_path / "o"), "--quiet", "--class-split", str(base_csv)])
        == 0
    )
    b2n = json.loads((tmp_path / "o" / "stats.json").read_text())["protocol"]["base_to_novel"]
    assert (b2n["base"], b2n["novel"]) == (["ride_bike", "wave"], ["brush_hair", "kiss"])
    evals = load_records(tmp_path / "o" / "b2n_eval.jsonl")
    assert {r["meta"]["class"]: r["meta"]["base_or_novel"] for r in evals} == {
        "ride_bike": "base",
        "wave": "base",
        "brush_hair": "novel",
        "kiss": "novel",
    }


def test_base_label_csv_with_a_quoted_comma_and_its_refusals(tmp_path):
    classes = ["Removing something, revealing something behind", "Folding something", "Opening something"]
    path = tmp_path / "ssv2_174_base_labels.csv"
    path.write_text('id,name\n0,"Removing something, revealing something behind"\n1,Opening something\n')
    assert read_class_split(path, classes) == (
        ["Removing something, revealing something behind", "Opening something"],
        ["Folding something"],
    )
    path.write_text("id,name\n0,Opening something\n1,opening something\n")
    with pytest.raises(BuildError, match=r"base_labels\.csv:3: class 'opening something' already listed at line 2"):
        read_class_split(path, classes)
