"""The action-recognition builders' `--sub-motions`: ranked sub-motions from the template knowledge base, a knowledge
base JSONL or a definitions file, on small HMDB-51 and SSv2 fixtures; what a record without an entry gets; and a
built record's template-teacher chain scored by the sub-motion reward."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from common.action_kb import template_entry
from common.schema import load_records
from data_builders import hmdb51, ssv2
from tests.data_builders.test_hmdb51 import make_hmdb
from tests.data_builders.test_ssv2 import make_ssv2

CLASSES = ["brush_hair", "cartwheel", "catch", "kiss", "wave"]
# the template knowledge base's phases (common.action_kb.VERB_PHASES), the object filling "{x}"; "catch" has no
# object, so "track {x} with the eyes" reads "track with the eyes"; "cartwheel" and "kiss" start with no
# templated verb
KB_EXPECTED = {
    "brush_hair": ["hold the brush", "move it back and forth over hair", "put it down"],
    "catch": ["track with the eyes", "reach out the hands toward it", "close the hands and absorb its motion"],
    "wave": ["raise the hand", "move the hand side to side", "lower the hand"],
}
OUTPUTS = ("b2n_train_base", "b2n_eval", "split1_train", "split2_test", "split3_test", "xd_eval")


@pytest.fixture(scope="module")
def hmdb_root(tmp_path_factory):
    return make_hmdb(tmp_path_factory.mktemp("hmdb") / "hmdb51", CLASSES)


def build(root: Path, out: Path, *extra: str) -> tuple[dict[str, list[str] | None], dict]:
    """{class: the sub_motions of its records} over every output (checked to agree), and stats.json."""
    assert hmdb51.main(["--root", str(root), "--out", str(out), "--quiet", *extra]) == 0
    seen: dict[str, list[str] | None] = {}
    for name in OUTPUTS:
        for rec in load_records(out / f"{name}.jsonl"):
            subs = rec.get("sub_motions")
            assert seen.setdefault(rec["meta"]["class"], subs) == subs
    assert set(seen) == set(CLASSES)
    return seen, json.loads((out / "stats.json").read_text())


def test_default_is_the_template_knowledge_base(hmdb_root, tmp_path):
    got, stats = build(hmdb_root, tmp_path / "o")
    assert got == {c: KB_EXPECTED.get(c) for c in CLASSES}
    assert stats["protocol"]["sub_motions"] == {
        "source": "kb (template verb phases, common.action_kb)",
        "classes_with": 3,
        "classes_without": ["cartwheel", "kiss"],
    }


def test_a_definitions_file_replaces_the_knowledge_base(hmdb_root, tmp_path):
    defs = tmp_path / "defs.json"
    brush = ["hand lifts the brush", "brush strokes, top to bottom"]
    defs.write_text(json.dumps({"Brush Hair": brush, "KISS": ["lean in", "lips touch"]}))
    got, stats = build(hmdb_root, tmp_path / "o", "--sub-motions", str(defs))
    expected = {"brush_hair": brush, "kiss": ["lean in", "lips touch"]}
    assert got == {c: expected.get(c) for c in CLASSES}
    assert stats["protocol"]["sub_motions"]["classes_without"] == ["cartwheel", "catch", "wave"]


def test_a_knowledge_base_file_gives_its_phases_but_not_generic_ones(hmdb_root, tmp_path):
    cartwheel = ["hands reach to the floor", "legs swing over the body", "feet land one after the other"]
    entries = [
        {"action": "cartwheel", "label": "cartwheel", "definition": "d", "phases": cartwheel, "writer": "llm:m"},
        {"action": "brush hair", "label": "brush_hair", "definition": "d", "phases": ["comb"], "writer": "records"},
        template_entry("kiss"),  # the generic get-ready / main movement / finish: not sub-motions
        template_entry("wave"),
    ]
    kb = tmp_path / "kb.jsonl"
    kb.write_text("".join(json.dumps(e) + "\n" for e in entries))
    got, stats = build(hmdb_root, tmp_path / "o", "--sub-motions", str(kb))
    expected = {"cartwheel": cartwheel, "brush_hair": ["comb"], "wave": KB_EXPECTED["wave"]}
    assert got == {c: expected.get(c) for c in CLASSES}
    assert stats["protocol"]["sub_motions"]["classes_without"] == ["catch", "kiss"]


def test_none_writes_no_sub_motions(hmdb_root, tmp_path):
    got, stats = build(hmdb_root, tmp_path / "o", "--sub-motions", "none")
    assert got == dict.fromkeys(CLASSES) and "sub_motions" not in stats["protocol"]


def test_unreadable_sources_are_refused_naming_the_file(hmdb_root, tmp_path, capsys):
    missing = tmp_path / "nope.json"
    with pytest.raises(SystemExit) as exc:
        hmdb51.main(["--root", str(hmdb_root), "--out", str(tmp_path / "o"), "--sub-motions", str(missing)])
    assert exc.value.code == 2 and f"{missing}: no such file" in capsys.readouterr().err
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"kiss": "lean in"}))
    with pytest.raises(SystemExit) as exc:
        hmdb51.main(["--root", str(hmdb_root), "--out", str(tmp_path / "o"), "--sub-motions", str(bad)])
    assert exc.value.code == 2 and "bad.json: 'kiss' must map to a list of strings" in capsys.readouterr().err


def test_ssv2_looks_up_the_template(tmp_path):
    root = make_ssv2(tmp_path / "ssv2")
    assert ssv2.main(["--root", str(root), "--out", str(tmp_path / "o"), "--quiet"]) == 0
    by_class = {}
    for name in ("b2n_train_base", "b2n_eval"):
        for rec in load_records(tmp_path / "o" / f"{name}.jsonl"):
            by_class[rec["meta"]["class"]] = rec.get("sub_motions")
    # "Pushing" and "Putting" have verb templates, the object being the template's own "something"; "Holding" and
    # "Approaching" have none
    assert by_class == {
        "Approaching something with your camera": None,
        "Holding something next to something": None,
        "Pushing something from left to right": [
            "place the hands against something from left to right",
            "extend the arms and lean forward",
            "move something from left to right away from the body",
        ],
        "Putting something on a surface": ["hold something on a surface", "move it to the place", "release it"],
    }


def test_a_built_records_teacher_chain_scores_on_the_sub_motion_reward(hmdb_root, tmp_path):
    from data_builders.template_teacher import template_reasoning
    from rewards.submotion import submotion
    from rollout.trajectory import Trajectory

    build(hmdb_root, tmp_path / "o")
    recs = {r["meta"]["class"]: r for r in load_records(tmp_path / "o" / "split1_train.jsonl")}
    pose = "frame 2 (t=0.25s): 1 person\nframe 6 (t=0.75s): 1 person"

    def score(rec: dict, teacher_rec: dict) -> float | None:
        return submotion(Trajectory("v", 0, [], [], [], [], final_text=template_reasoning(teacher_rec, pose)), rec)

    wave, brush = recs["wave"], recs["brush_hair"]
    assert score(wave, wave) == pytest.approx(1.0)  # all three knowledge-base phases, in order
    # the brush's phases with the answer "wave": none of wave's sub-motions, 0
    assert score(wave, {**wave, "sub_motions": brush["sub_motions"]}) == 0.0
    # a class without an entry: the record has no sub_motions, so the reward is not applicable
    assert "sub_motions" not in recs["kiss"] and score(recs["kiss"], recs["kiss"]) is None
