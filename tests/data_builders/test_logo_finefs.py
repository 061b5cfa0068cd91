"""LOGO and FineFS builders on fixtures in their release layouts (LOGO: pickles; FineFS: per-sample JSON)."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np

from common.schema import load_records
from data_builders import finefs, logo


def make_logo(root: Path) -> Path:
    root.mkdir(parents=True)
    anno, keys = {}, []
    for e, event in enumerate(("WorldChampionship2019_free_final", "WorldChampionship2022_tech_final")):
        for idx in range(2):
            key = (event, idx)
            keys.append(key)
            frames = np.array([12] * 25 + [3] * 50 + [12] * 25)  # 4 s at 25 fps
            anno[key] = ["free" if e == 0 else "tech", 80.0 + 5 * idx + e, 0.0, [24, 74, 99], frames]
            (root / "videos" / event).mkdir(parents=True, exist_ok=True)
            (root / "videos" / event / f"{idx}.mp4").write_bytes(b"\0")
    (root / "anno_dict.pkl").write_bytes(pickle.dumps(anno, protocol=2))
    (root / "train_split3.pkl").write_bytes(pickle.dumps(keys[:3]))
    (root / "test_split3.pkl").write_bytes(pickle.dumps(keys[3:]))
    (root / "action_names.json").write_text(json.dumps({"12": "None", "3": "Acrobatic"}))
    return root


def test_logo_records(tmp_path):
    root = make_logo(tmp_path / "logo")
    assert logo.main(["--root", str(root), "--out", str(tmp_path / "o"), "--quiet"]) == 0
    train, test = (load_records(tmp_path / "o" / f"{s}.jsonl") for s in ("train", "test"))
    assert len(train) == 3 and len(test) == 1
    rec = test[0]
    assert rec["label"] == "technical routine" and rec["score"] == 86.0 and rec["score_range"] == [80.0, 86.0]
    assert rec["sub_actions"] == [
        {"name": "None", "start": 0.0, "end": 1.0},
        {"name": "Acrobatic", "start": 1.0, "end": 3.0},
        {"name": "None", "start": 3.0, "end": 4.0},
    ]
    assert rec["meta"]["has_difficulty"] is False


def test_logo_bad_inputs(tmp_path):
    root = make_logo(tmp_path / "logo")
    anno = pickle.loads((root / "anno_dict.pkl").read_bytes())
    anno[("WorldChampionship2019_free_final", 0)][0] = "duet"
    (root / "anno_dict.pkl").write_bytes(pickle.dumps(anno))
    (root / "videos" / "WorldChampionship2019_free_final" / "1.mp4").unlink()
    assert logo.main(["--root", str(root), "--out", str(tmp_path / "o"), "--quiet"]) == 0
    stats = json.loads((tmp_path / "o" / "stats.json").read_text())
    assert stats["dropped"] == {"unknown class": 1, "video not found": 1}
    assert stats["problems"][0]["where"] == f"{root / 'train_split3.pkl'}:#0"


def make_finefs(root: Path, numbers=(0, 1, 2, 3, 4, 729, 730, 731)) -> Path:
    (root / "data" / "annotation").mkdir(parents=True)
    (root / "data" / "video").mkdir()
    for n in numbers:
        ann = {
            "executed_element": {
                "1": {"element": "3Lz+3T", "coarse_class": "jump", "start_frame": 250, "end_frame": 374},
                "2": {"element": "FCSp4", "coarse_class": "spin", "start_frame": 1000, "end_frame": 1249},
            },
            "total_element_score": 40.0 + n % 10,
            "total_program_component_score(factored)": 35.5,
            "total_segment_score": 75.5 + n % 10,
        }
        (root / "data" / "annotation" / f"{n}.json").write_text(json.dumps(ann))
        (root / "data" / "video" / f"{n}.mp4").write_bytes(b"\0")
    return root


def test_finefs_records_and_seeded_split(tmp_path):
    root = make_finefs(tmp_path / "fs")
    for d, seed in (("a", "0"), ("b", "0"), ("c", "5")):
        assert finefs.main(["--root", str(root), "--out", str(tmp_path / d), "--quiet", "--seed", seed]) == 0
    train, test = (load_records(tmp_path / "a" / f"{s}.jsonl") for s in ("train", "test"))
    # 5 short programs -> round(5 * 146/729) = 1 test; 3 free -> round(3 * 88/438) = 1 test
    assert len(test) == 2 and len(train) == 6
    assert {r["label"] for r in test} == {"short program", "free skating"}
    rec = next(r for r in train + test if r["id"] == "finefs-729")
    assert rec["sub_actions"] == [
        {"name": "3Lz+3T", "start": 10.0, "end": 15.0},
        {"name": "FCSp4", "start": 40.0, "end": 50.0},
    ]
    assert rec["score"] == 84.5 and rec["meta"]["tes"] == 49.0 and rec["score_range"] == [75.0, 85.0]
    assert (tmp_path / "a" / "test.jsonl").read_bytes() == (tmp_path / "b" / "test.jsonl").read_bytes()


def test_finefs_split_files_and_renamed_key(tmp_path):
    root = make_finefs(tmp_path / "fs")
    (root / "data" / "train_split.txt").write_text("0\n1\n2\n729\n")
    (root / "data" / "test_split.txt").write_text("3\n730\n731\n")
    path = root / "data" / "annotation" / "1.json"
    path.write_text(path.read_text().replace("total_segment_score", "TSS"))
    assert finefs.main(["--root", str(root), "--out", str(tmp_path / "o"), "--quiet"]) == 0
    stats = json.loads((tmp_path / "o" / "stats.json").read_text())
    assert stats["outputs"]["train"]["records"] == 3 and stats["outputs"]["test"]["records"] == 3
    assert stats["dropped"] == {"missing field": 1, "not in a split": 1}  # 1.json renamed; 4.json unlisted
    assert {p["where"] for p in stats["problems"]} == {str(path), str(root / "data" / "annotation" / "4.json")}
