"""FineDiving entries with a wrong-typed or missing field: dropped and counted, the file, entry and field named."""

from __future__ import annotations

import json
import pickle
import re
from pathlib import Path

import numpy as np
import pytest

from data_builders import finediving
from data_builders.safe_pickle import load_pickle
from tests.data_builders.test_finediving import make_finediving

KEY = ("FINADivingWorldCup2021_Men3m_final_r1", 1)  # the second train entry
COARSE, FINE = "FineDiving_coarse_annotation.pkl", "FineDiving_fine-grained_annotation.pkl"


def set_coarse(name, value):
    return lambda ann: ann[COARSE][KEY].__setitem__(name, value)


def set_fine(name, value):
    return lambda ann: ann[FINE][KEY].__setitem__(name, value)


def set_split_entry(value):
    return lambda ann: ann["train_split.pkl"].__setitem__(1, value)


# (change, reason, file named in the detail, what the detail says after the file)
CASES = [
    (set_coarse("dive_score", "high"), "bad field", COARSE, "field 'dive_score': expected a finite number, got str"),
    (set_coarse("dive_score", float("nan")), "bad field", COARSE, "field 'dive_score': expected a finite number"),
    (set_coarse("difficulty", [3.0]), "bad field", COARSE, "field 'difficulty': expected a finite number, got list"),
    (set_coarse("start_frame", None), "bad field", COARSE, "field 'start_frame': expected a finite number, got None"),
    (set_coarse("start_frame", 150.5), "bad field", COARSE, "field 'start_frame': expected a whole number"),
    (set_coarse("end_frame", 10), "bad field", COARSE, "end_frame 10 is before start_frame 150"),
    (set_coarse("judge_scores", "8,8,7"), "bad field", COARSE, "field 'judge_scores': expected a sequence"),
    (set_coarse("judge_scores", [8.0, "x"]), "bad field", COARSE, "field 'judge_scores': expected a finite number"),
    (set_coarse("action_type", ["107B"]), "bad field", COARSE, "field 'action_type': expected a dive code"),
    (set_fine("frames_labels", 5), "bad field", FINE, "field 'frames_labels': expected a sequence of per-frame"),
    (set_fine("frames_labels", np.ones((2, 3))), "bad field", FINE, r"field 'frames_labels': .*shape \(2, 3\)"),
    (set_fine("frames_labels", np.array([1.5, 2.0])), "bad field", FINE, "field 'frames_labels': expected a whole"),
    (set_fine("frames_labels", []), "bad field", FINE, "field 'frames_labels': expected a label per frame"),
    (set_fine("sub-action_types", ["Forward"]), "bad field", FINE, "field 'sub-action_types': expected a dict"),
    (set_fine("sub-action_types", {1: 3}), "bad field", FINE, "field 'sub-action_types': sub-action 1: expected a"),
    (set_fine("sub-action_types", {"x": "Entry"}), "bad field", FINE, "field 'sub-action_types': expected a finite"),
    (lambda ann: ann[COARSE].__setitem__(KEY, [1, 2]), "bad entry", COARSE, "expected a dict of fields, got list"),
    (lambda ann: ann[FINE][KEY].pop("frames_labels"), "missing field", FINE, "no field 'frames_labels'$"),
    (lambda ann: ann[COARSE][KEY].pop("dive_score"), "missing field", COARSE, "no field 'dive_score'$"),
    (lambda ann: ann[FINE].pop(KEY), "missing annotation", None, f"is not in .*{FINE}"),
    (set_split_entry("FINADivingWorldCup2021_Men3m_final_r1"), "bad key", None, "expected a .* pair, got str"),
    (set_split_entry((KEY[0], "one")), "bad key", None, "expected a .* pair"),
    (set_split_entry(("../../etc/passwd", 1)), "bad key", None, "expected a .* pair"),
    (set_split_entry({"video": KEY[0]}), "bad key", None, "expected a .* pair, got dict"),
    (set_split_entry((KEY[0], 1, 2)), "bad key", None, "expected a .* pair, got tuple"),
]


@pytest.mark.parametrize("change, reason, file, detail", CASES)
def test_bad_field_is_dropped_with_file_entry_and_field(tmp_path, change, reason, file, detail):
    ann_dir = make_finediving(tmp_path / "fd") / "Annotations"
    ann = {p.name: load_pickle(p) for p in ann_dir.glob("*.pkl")}
    change(ann)
    for name, value in ann.items():
        (ann_dir / name).write_bytes(pickle.dumps(value, protocol=4))
    assert finediving.main(["--root", str(tmp_path / "fd"), "--out", str(tmp_path / "o"), "--quiet"]) == 0
    stats = json.loads((tmp_path / "o" / "stats.json").read_text())
    assert stats["dropped"] == {reason: 1}
    assert sum(out["records"] for out in stats["outputs"].values()) == 5  # the other entries are kept
    (problem,) = stats["problems"]
    assert problem["where"] == f"{ann_dir / 'train_split.pkl'}:#1"
    if file:  # the annotation file, then the entry, then what is wrong with which field
        assert problem["detail"].startswith(f"{ann_dir / file}: {KEY!r}: "), problem
    assert re.search(detail, problem["detail"]), problem


@pytest.mark.parametrize(
    "name, value, message",
    [
        ("train_split.pkl", {"a": 1}, r"train_split\.pkl: expected a list of \(video, instance\) pairs, got dict"),
        (COARSE, [1, 2], r"coarse_annotation\.pkl: expected a dict keyed by \(video, instance\), got list"),
        (FINE, b"truncated", r"fine-grained_annotation\.pkl: not a readable pickle"),
    ],
)
def test_unusable_annotation_file_stops_the_build_with_its_name(tmp_path, capsys, name, value, message):
    ann_dir = make_finediving(tmp_path / "fd") / "Annotations"
    data = value if isinstance(value, bytes) else pickle.dumps(value)
    (ann_dir / name).write_bytes(data)
    assert finediving.main(["--root", str(tmp_path / "fd"), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert re.search(message, err) and "Traceback" not in err, err
    assert str(Path(ann_dir / name)) in err
