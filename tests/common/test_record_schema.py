"""The sample-record schema: table-driven valid and invalid records with the exact error text, and JSONL loading."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from common.schema import RecordError, load_records, validate_record, write_records

COMMON = {"video": "videos/a.mp4", "prompt": "What is happening?"}
VALID = {
    "ovar": COMMON | {"id": "o1", "task": "ovar", "answer": "wave", "label": "wave", "candidates": ["run", "wave"]},
    "aqa": COMMON
    | {
        "id": "a1",
        "task": "aqa",
        "answer": "81.5",
        "score": 81.5,
        "difficulty": 3.2,
        "score_range": [0, 100],
        "sub_actions": [{"name": "take off", "start": 0.0, "end": 0.4}, {"name": "entry", "start": 1.2, "end": 1.5}],
    },
    "mcq": COMMON
    | {
        "id": "m1",
        "task": "mcq",
        "answer": "C",
        "category": "person movement",
        "options": {"A": "sit", "B": "stand", "C": "walk", "D": "run"},
    },
    "describe": COMMON | {"id": "d1", "task": "describe", "answer": "A man waves.", "gold_points": ["a man waves"]},
}


def _with(kind: str, /, **changes) -> dict:
    """A valid record of task `kind` with fields replaced; a value of None deletes the field."""
    rec = json.loads(json.dumps(VALID[kind]))
    for k, v in changes.items():
        if v is None:
            rec.pop(k)
        else:
            rec[k] = v
    return rec


@pytest.mark.parametrize("task", sorted(VALID))
def test_valid_records_have_no_errors(task):
    assert validate_record(VALID[task]) == []
    assert validate_record(_with("ovar", sub_motions=["arm rises", "hand waves"])) == []
    assert validate_record(_with(task, clip=[1.0, 2.5], meta={"dataset": "x", "split": "train"})) == []
    assert validate_record(_with(task, meta={"base_or_novel": "novel", "fold": 3})) == []


SUBS_ERROR = "field 'sub_motions' must be a non-empty list of non-empty strings (leave it out when unknown)"
INVALID = [
    # (record, the exact list of errors)
    (_with("ovar", id=None), ["missing field 'id'"]),
    (_with("ovar", prompt=None, answer=None), ["missing field 'prompt'", "missing field 'answer'"]),
    (_with("ovar", video=3), ["field 'video' must be str, got int"]),
    (_with("ovar", task="caption"), ["field 'task' must be one of ovar, aqa, mcq, describe, got 'caption'"]),
    (_with("ovar", label=None), ["missing field 'label'"]),
    (_with("ovar", candidates="wave"), ["field 'candidates' must be list, got str"]),
    (_with("ovar", candidates=[]), ["field 'candidates' must be a non-empty list of strings"]),
    (_with("ovar", candidates=["wave", 2]), ["field 'candidates' must be a non-empty list of strings"]),
    (_with("ovar", label="kick"), ["field 'label' ('kick') is not among 'candidates'"]),
    (_with("ovar", clip=[2.0, 1.0]), ["field 'clip' must be [start_s, end_s] with start_s < end_s"]),
    (_with("ovar", clip=[0.0]), ["field 'clip' must be [start_s, end_s] with start_s < end_s"]),
    (_with("ovar", clip=[0.0, float("inf")]), ["field 'clip' must be [start_s, end_s] with start_s < end_s"]),
    (_with("ovar", meta=["x"]), ["field 'meta' must be an object"]),
    (
        _with("ovar", meta={"base_or_novel": "held-out"}),
        ["field 'meta.base_or_novel' must be 'base' or 'novel', got 'held-out'"],
    ),
    *[
        (_with("ovar", meta={"fold": bad}), [f"field 'meta.fold' must be an integer >= 1, got {bad!r}"])
        for bad in (0, "1", 1.0, True)
    ],
    *[
        (_with("ovar", sub_motions=bad), [SUBS_ERROR])
        for bad in ("arm rises", [], ["arm rises", ""], ["arm rises", 3], ["  "])
    ],
    (_with("aqa", score="81.5"), ["field 'score' must be int or float, got str"]),
    (_with("aqa", score=True), ["field 'score' must be int or float, got bool"]),
    (_with("aqa", score_range=[100, 0]), ["field 'score_range' must be [lo, hi] with lo < hi"]),
    (_with("aqa", score_range=[0, 50, 100]), ["field 'score_range' must be [lo, hi] with lo < hi"]),
    (_with("aqa", score=float("nan")), ["fields 'score' and 'difficulty' must be finite numbers"]),
    (_with("aqa", sub_actions=[{"name": "entry", "start": 1.0}]), ["sub_actions[0] must have name, start, end"]),
    (
        _with("aqa", sub_actions=[{"name": "a", "start": 0, "end": 1}, {"name": "b", "start": 2, "end": 1}]),
        ["sub_actions[1] needs finite start <= end"],
    ),
    (_with("mcq", options={"A": "x", "B": "y", "C": "z"}), ["field 'options' must have exactly the keys A, B, C, D"]),
    (_with("mcq", answer="walk"), ["field 'answer' ('walk') must be one of A-D"]),
    (_with("mcq", category=None), ["missing field 'category'"]),
    (_with("describe", gold_points=[]), ["field 'gold_points' must be a non-empty list of strings"]),
    (_with("describe", gold_points=None), ["missing field 'gold_points'"]),
    (["not", "an", "object"], ["a record must be a JSON object, got list"]),
]


@pytest.mark.parametrize("rec,errors", INVALID, ids=[f"{i}-{e[0][:40]}" for i, (_, e) in enumerate(INVALID)])
def test_invalid_records_name_the_problem(rec, errors):
    assert validate_record(rec) == errors


def _write_lines(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_bad_record_in_the_middle_names_file_and_line(tmp_path):
    bad = _with("ovar", id="o2", label="kick")
    path = _write_lines(
        tmp_path / "train.jsonl", [json.dumps(VALID["ovar"]), "", json.dumps(VALID["mcq"]), json.dumps(bad)]
    )
    # line 2 is blank and still counts, so the bad record is on line 4
    with pytest.raises(RecordError) as err:
        load_records(path)
    assert str(err.value) == f"{path}:4: record 'o2': field 'label' ('kick') is not among 'candidates'"


def test_invalid_json_names_file_and_line(tmp_path):
    path = _write_lines(
        tmp_path / "x.jsonl", [json.dumps(VALID["ovar"]), '{"id": "broken",', json.dumps(VALID["aqa"])]
    )
    with pytest.raises(RecordError, match=r"x\.jsonl:2: not valid JSON"):
        load_records(path)


def test_duplicate_ids_are_rejected_with_both_lines(tmp_path):
    dup = _with("describe", id="o1")
    path = _write_lines(tmp_path / "d.jsonl", [json.dumps(VALID["ovar"]), json.dumps(VALID["aqa"]), json.dumps(dup)])
    with pytest.raises(RecordError) as err:
        load_records(path)
    assert str(err.value) == f"{path}:3: duplicate id 'o1' (first at line 1)"


def test_relative_videos_resolve_against_the_records_folder(tmp_path, monkeypatch):
    folder = tmp_path / "data" / "sample"
    folder.mkdir(parents=True)
    absolute = str(tmp_path / "elsewhere" / "b.mp4")
    path = _write_lines(
        folder / "eval.jsonl",
        [
            json.dumps(VALID["ovar"]),
            json.dumps(_with("mcq", video=absolute)),
            json.dumps(_with("aqa", video="../c.mp4")),
        ],
    )
    monkeypatch.chdir(tmp_path)  # the working directory must not matter
    recs = load_records(path)
    assert [r["video"] for r in recs] == [
        str(tmp_path / "data" / "sample" / "videos" / "a.mp4"),
        absolute,
        str(tmp_path / "data" / "c.mp4"),
    ]
    assert [r["video"] for r in load_records(path, resolve_videos=False)] == ["videos/a.mp4", absolute, "../c.mp4"]


def test_write_then_load_round_trips_and_write_rejects_bad_records(tmp_path):
    path = tmp_path / "out" / "all.jsonl"
    assert write_records(path, VALID.values()) == 4
    loaded = load_records(path, resolve_videos=False)
    assert loaded == list(VALID.values())
    with pytest.raises(RecordError, match=r"record 'a1' for .*bad\.jsonl: field 'score_range' must be"):
        write_records(tmp_path / "bad.jsonl", [_with("aqa", score_range=[1, 1])])


def test_missing_records_file_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="records file not found"):
        load_records(tmp_path / "nope.jsonl")
