"""FineDiving builder on a fixture of real pickles in the official structure, and the pickle reader refusing code."""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import numpy as np
import pytest

from common.schema import load_records
from data_builders import finediving
from data_builders.safe_pickle import UnsafePickleError, load_pickle

SUBS = {1: "Forward", 10: "2.5 Soms.Pike", 22: "Entry"}


def make_finediving(root: Path, protocol: int = 4) -> Path:
    ann = root / "Annotations"
    ann.mkdir(parents=True)
    (root / "Untrimmed_Videos").mkdir()
    coarse, fine, keys = {}, {}, []
    for v, video in enumerate(("FINADivingWorldCup2021_Men3m_final_r1", "FullMenSynchronised10mPlatform_Tokyo2020")):
        (root / "Untrimmed_Videos" / f"{video}.mp4").write_bytes(b"\0")
        for inst in range(3):
            key = (video, inst)
            keys.append(key)
            start = 100 * inst + 50
            labels = np.array([1] * 5 + [10] * 10 + [22] * 5, dtype=np.int64)  # 20 frames
            score = np.float64(60.0 + 10 * inst + v)
            coarse[key] = {
                "action_type": "107B" if inst % 2 else "5253B",
                "dive_score": score,
                "difficulty": 3.0 + 0.1 * inst,
                "judge_scores": [8.0, 8.5, 7.5],
                "start_frame": start,
                "end_frame": start + 19,
            }
            fine[key] = {
                "action_type": coarse[key]["action_type"],
                "dive_score": score,
                "frames_labels": labels,
                "steps_transit_frames": np.array([5, 15]),
                "sub-action_types": dict(SUBS),
            }
    for name, obj in (
        ("FineDiving_coarse_annotation.pkl", coarse),
        ("FineDiving_fine-grained_annotation.pkl", fine),
        ("train_split.pkl", keys[:4]),
        ("test_split.pkl", keys[4:]),
    ):
        (ann / name).write_bytes(pickle.dumps(obj, protocol=protocol))
    return root


@pytest.mark.parametrize("protocol", [2, 5])
def test_records_times_and_scores(tmp_path, protocol):
    root = make_finediving(tmp_path / "fd", protocol)
    assert finediving.main(["--root", str(root), "--out", str(tmp_path / "o"), "--quiet"]) == 0
    train, test = (load_records(tmp_path / "o" / f"{s}.jsonl") for s in ("train", "test"))
    assert len(train) == 4 and len(test) == 2
    rec = next(r for r in train if r["id"] == "finediving-FINADivingWorldCup2021_Men3m_final_r1-1")
    # frames 150..169 at 25 fps; runs of 5, 10, 5 frames
    assert rec["clip"] == [6.0, 6.8] and rec["label"] == "107B"
    assert rec["sub_actions"] == [
        {"name": "Forward", "start": 0.0, "end": 0.2},
        {"name": "2.5 Soms.Pike", "start": 0.2, "end": 0.6},
        {"name": "Entry", "start": 0.6, "end": 0.8},
    ]
    assert rec["score"] == 70.0 and rec["difficulty"] == pytest.approx(3.1)
    assert rec["score_range"] == [60.0, 81.0]  # scores 60..81 over both splits
    assert json.loads(rec["answer"])["score"] == 70.0 and rec["meta"]["judge_scores"] == [8.0, 8.5, 7.5]


def test_absent_video_unknown_sub_action_duplicate(tmp_path):
    root = make_finediving(tmp_path / "fd")
    ann = root / "Annotations"
    fine = load_pickle(ann / "FineDiving_fine-grained_annotation.pkl")
    fine[("FINADivingWorldCup2021_Men3m_final_r1", 0)]["frames_labels"][-1] = 99
    (ann / "FineDiving_fine-grained_annotation.pkl").write_bytes(pickle.dumps(fine))
    keys = load_pickle(ann / "test_split.pkl")
    (ann / "test_split.pkl").write_bytes(pickle.dumps([*keys, keys[0], ("NoSuchVideo", 0)]))
    (root / "Untrimmed_Videos" / "FullMenSynchronised10mPlatform_Tokyo2020.mp4").unlink()
    assert finediving.main(["--root", str(root), "--out", str(tmp_path / "o"), "--quiet"]) == 0
    stats = json.loads((tmp_path / "o" / "stats.json").read_text())
    expected = {"duplicate id": 1, "missing annotation": 1, "unknown sub-action": 1, "video not found": 3}
    assert stats["dropped"] == expected
    assert stats["outputs"]["train"]["records"] == 2 and "test" not in stats["outputs"]


class Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def test_restricted_unpickler_refuses_code(tmp_path, capsys):
    root = make_finediving(tmp_path / "fd")
    path = root / "Annotations" / "train_split.pkl"
    path.write_bytes(pickle.dumps([("FINADivingWorldCup2021_Men3m_final_r1", 0), Evil()]))
    with pytest.raises(UnsafePickleError, match=r"train_split\.pkl: refused to load (posix|os)\.system"):
        load_pickle(path)
    assert finediving.main(["--root", str(root), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr()
    assert "refused to load" in err.err and str(path) in err.err and "pwned" not in err.out
    path.write_bytes(b"not a pickle")
    with pytest.raises(pickle.UnpicklingError, match="not a readable pickle"):
        load_pickle(path)
