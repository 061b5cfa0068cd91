"""FineBench distractors never name something the asked-about person really does: a hand-written AVA fixture where
one person listens to and watches someone (AVA's most frequent co-occurrence) and stands, with a similarity map
that ranks "watch" first for "listen", so the old builder put a second correct option among the distractors.

Every option set below is worked out by hand from the tiers (similar actions, then the rest of the category, then
any action) minus the person's true actions; with these small lists each tier has exactly as many candidates as
it is asked for, so the sets do not depend on the seed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from common.schema import load_records
from data_builders import finebench

M, T, P = "PERSON_MOVEMENT", "OBJECT_MANIPULATION", "PERSON_INTERACTION"
STAND, SIT, WALK, BEND = "stand", "sit", "walk", "bend/bow (at the waist)"
LISTEN, WATCH, TALK = "listen to (a person)", "watch (a person)", "talk to (e.g., self, a person, a group)"
HUG, KISS = "hug (a person)", "kiss (a person)"
ACTIONS = [(1, STAND, M), (2, SIT, M), (3, WALK, M), (4, BEND, M), (10, LISTEN, P), (11, WATCH, P), (12, TALK, P)]
ACTIONS += [(13, HUG, P), (14, KISS, P), (20, "drink", T), (21, "eat", T), (22, "read", T), (23, "write", T)]
SIMILAR = {LISTEN: [WATCH, TALK], WATCH: [LISTEN, HUG, KISS]}
# person 1 stands, listens and watches; person 2 talks (true of person 2, so a fair distractor for person 1)
ROWS = [
    "vid01,0902,0.100,0.100,0.400,0.900,1,1",
    "vid01,0902,0.100,0.100,0.400,0.900,10,1",
    "vid01,0902,0.100,0.100,0.400,0.900,11,1",
    "vid01,0902,0.600,0.100,0.900,0.900,12,2",
]


@pytest.fixture(scope="module")
def records(tmp_path_factory) -> dict[str, dict]:
    root = tmp_path_factory.mktemp("ava")
    (root / "videos").mkdir()
    (root / "videos" / "vid01.mp4").write_bytes(b"\0")
    pbtxt = "".join(f'label {{\n  name: "{n}"\n  label_id: {i}\n  label_type: {t}\n}}\n' for i, n, t in ACTIONS)
    (root / "ava_action_list_v2.2.pbtxt").write_text(pbtxt)
    (root / "ava_train_v2.2.csv").write_text("\n".join(ROWS) + "\n")
    (root / "sim.json").write_text(json.dumps(SIMILAR))
    out = root / "out"
    args = ["--root", str(root), "--out", str(out), "--similarity-map", str(root / "sim.json"), "--quiet"]
    assert finebench.main(args) == 0
    return {r["id"]: r for r in load_records(Path(out) / "train.jsonl")}


def options(rec: dict) -> set[str]:
    return set(rec["options"].values())


def test_single_questions_leave_the_persons_other_actions_out(records):
    listen = records["finebench-vid01-0902-p1-a10"]
    # similar to listen: watch (true: barred), talk -> talk; then the category: hug, kiss (listen, watch barred)
    assert options(listen) == {LISTEN, TALK, HUG, KISS}
    assert listen["options"][listen["answer"]] == LISTEN
    assert listen["meta"]["distractor_sources"] == ["similar", "category", "category"]
    watch = records["finebench-vid01-0902-p1-a11"]
    # similar to watch: listen (barred), hug, kiss; then the category: talk
    assert options(watch) == {WATCH, HUG, KISS, TALK}
    assert watch["meta"]["distractor_sources"] == ["similar", "similar", "category"]
    stand = records["finebench-vid01-0902-p1-a1"]  # no similar list: the other three movement actions
    assert options(stand) == {STAND, SIT, WALK, BEND}


def test_combined_question_swaps_in_only_actions_the_person_does_not_do(records):
    both = records["finebench-vid01-0902-p1-a10+11"]
    # swap listen for a similar action not done (talk), or watch for one (hug, kiss): exactly three distractors
    assert options(both) == {
        f"{LISTEN} and {WATCH}",
        f"{TALK} and {WATCH}",
        f"{LISTEN} and {HUG}",
        f"{LISTEN} and {KISS}",
    }
    assert both["options"][both["answer"]] == f"{LISTEN} and {WATCH}"
    assert both["meta"]["distractor_sources"] == ["similar"] * 3


def test_another_persons_action_is_a_fair_distractor(records):
    talk = records["finebench-vid01-0902-p2-a12"]
    # person 2 only talks: three of the four other interaction actions, listen and watch included
    assert len(options(talk) - {TALK}) == 3 and options(talk) <= {TALK, LISTEN, WATCH, HUG, KISS}


def test_pick_distractors_bars_true_actions_even_from_the_last_tier():
    import numpy as np

    # a one-action category: the swaps come from "any" action, and the person's other true action is not one
    got = finebench.pick_distractors(
        ("swim",), {}, ["swim"], ["swim", "listen", "watch", "eat", "read"], np.random.default_rng(1), {"listen"}
    )
    assert {d for (d,), _ in got} == {"watch", "eat", "read"} and {s for _, s in got} == {"any"}
