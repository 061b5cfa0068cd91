"""Video-STAR's sub-motion reward: parsing the ranked list, hand-worked weights with text matching, embedding
matching with the real all-MiniLM-L6-v2, and never-raise properties."""

from __future__ import annotations

import doctest
import json
import math
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import rewards.submotion as sm
from rewards.submotion import parse_submotions, submotion
from rollout.trajectory import Trajectory

RECORD = {"answer": "shoot ball", "sub_motions": ["leg bending", "torso jumping", "arm extending"]}


def traj(text: str) -> Trajectory:
    return Trajectory("v1", 0, [], [], [], [], final_text=text)


def reply(listing: str, answer: str = "shoot ball") -> str:
    return f"<think>{listing}\nSo the action is a shot.</think> <answer>{answer}</answer>"


@pytest.mark.parametrize(
    "text, expected",
    [
        (
            reply("Sub-motions: leg bending → torso jumping → arm extending."),
            ["leg bending", "torso jumping", "arm extending"],
        ),
        # a line with an arrow splits at arrows only (an item may hold a comma); without, at ; and ,
        (reply("sub-motions: a -> b; c, d"), ["a", "b; c, d"]),
        (reply("sub-motions: a; b, c"), ["a", "b", "c"]),
        (
            reply("Sub-motions:\n1. leg bending\n2) torso jumping\n3. arm extending"),
            ["leg bending", "torso jumping", "arm extending"],
        ),
        (reply("Submotions:\n\n- leg bending\n* arm extending\nThen ..."), ["leg bending", "arm extending"]),
        (reply("Sub motions : x → → y"), ["x", "y"]),  # empty items dropped
        (reply("First, Sub-motions: a → b. Later, sub-motions: c → d"), ["c", "d"]),  # the last marker wins
        (reply("no list here"), []),
        (reply("Sub-motions:\nnone"), []),  # the lines after are not a list
        # outside <think> only when there is no closed think block
        ("<think>x</think> Sub-motions: a → b <answer>shoot ball</answer>", []),
        ("Sub-motions: a → b <answer>shoot ball</answer>", ["a", "b"]),  # a tag ends the one-line form
        ("Sub-motions: " + " → ".join(str(i) for i in range(100)), [str(i) for i in range(32)]),  # at most 32
        (None, []),
    ],
)
def test_parse_submotions(text, expected):
    assert parse_submotions(text) == expected


@pytest.mark.parametrize(
    "listing, kwargs, expected",
    [
        # all three, in the true order: 3/6 + 2/6 + 1/6
        ("Sub-motions: leg bending → torso jumping → arm extending", {}, 1.0),
        # ranks 1 and 3 of 3 match (wave does not): linear 3/6 + 1/6
        ("Sub-motions: Leg-Bending → wave → arm_extending", {}, 4 / 6),
        # exponential: (1 + 1/4) / (1 + 1/2 + 1/4) = 5/7
        ("Sub-motions: leg bending → wave → arm extending", {"scheme": "exponential"}, 5 / 7),
        # ranks 2 and 4 of 4 match: linear (3 + 1) / 10
        ("Sub-motions: wave → torso jumping → run → arm extending", {}, 0.4),
        # a duplicate gets no second credit (one-to-one): rank 1 of 2 only, 2/3
        ("Sub-motions: leg bending → leg bending", {}, 2 / 3),
        ("Sub-motions: wave → run", {}, 0.0),
        ("no list", {}, 0.0),
        # one listed, right: 1
        ("Sub-motions: torso jumping", {}, 1.0),
    ],
)
def test_submotion_text_matching(listing, kwargs, expected):
    assert submotion(traj(reply(listing)), RECORD, **kwargs) == pytest.approx(expected)


def test_submotion_only_when_the_answer_is_right():
    listing = "Sub-motions: leg bending → torso jumping"
    assert submotion(traj(reply(listing, answer="dribble")), RECORD) == 0.0
    assert submotion(traj(reply(listing, answer="Shoot_Ball")), RECORD) == 1.0
    assert submotion(traj(reply(listing)), {"answer": "shoot ball"}) is None  # no sub_motions in the record
    assert submotion(traj(reply(listing)), {"sub_motions": ["leg bending"]}) is None  # no answer
    assert submotion(traj(reply(listing)), RECORD | {"sub_motions": "leg bending"}) is None
    with pytest.raises(ValueError, match="match must be one of"):
        submotion(traj(reply(listing)), RECORD, match="fuzzy")
    with pytest.raises(ValueError, match="scheme"):
        submotion(traj(reply(listing)), RECORD, scheme="quadratic")


@pytest.fixture(scope="module")
def minilm():
    return sm.embedder()


def test_embedding_matching_with_minilm(minilm):
    # paraphrases of the true sub-motions score high, an unrelated phrase low (checked against the model below)
    listing = "Sub-motions: bending of the legs → eating soup → extending the arms"
    value = submotion(traj(reply(listing)), RECORD, match="embedding", threshold=0.7)
    # second method: cosine similarities straight from the model
    from sentence_transformers.util import cos_sim

    listed = ["bending of the legs", "eating soup", "extending the arms"]
    sims = cos_sim(minilm.encode(listed), minilm.encode(RECORD["sub_motions"])).numpy()
    assert sims[0].max() >= 0.7 and sims[2].max() >= 0.7 and sims[1].max() < 0.7
    assert sims[0].argmax() != sims[2].argmax()
    assert value == pytest.approx(3 / 6 + 1 / 6)  # ranks 1 and 3 of 3
    # the same text that matches exactly matches with embeddings too; threshold 1.01 matches nothing
    exact = "Sub-motions: leg bending → torso jumping → arm extending"
    assert submotion(traj(reply(exact)), RECORD, match="embedding") == pytest.approx(1.0)
    assert submotion(traj(reply(exact)), RECORD, match="embedding", threshold=1.01) == 0.0
    assert sm.embedder() is minilm  # loaded once per process


PIECES = [
    "<think>",
    "</think>",
    "<answer>",
    "</answer>",
    "Sub-motions:",
    "sub motions :",
    "→",
    "->",
    ";",
    ",",
    "\n",
    "1.",
    "2)",
    "- ",
    "leg bending",
    "torso jumping",
    "shoot ball",
    " ",
    "x",
]
TAGGY = st.lists(st.sampled_from(PIECES), max_size=60).map("".join)


@settings(max_examples=300, deadline=None)
@given(text=st.one_of(st.text(max_size=300), TAGGY), scheme=st.sampled_from(["linear", "exponential"]))
def test_never_raises_and_stays_in_bounds(text, scheme):
    items = parse_submotions(text)
    assert len(items) <= sm.MAX_ITEMS and all(item and len(item) <= sm.MAX_ITEM_CHARS for item in items)
    v = submotion(traj(text), RECORD, scheme=scheme)
    assert isinstance(v, float) and not math.isnan(v) and 0.0 <= v <= 1.0


@pytest.mark.parametrize(
    "text",
    [
        reply("Sub-motions: " * 10_000),
        reply("Sub-motions:\n" + "1. leg bending\n" * 10_000),
        reply("Sub-motions: " + " → " * 100_000),
        "<think>" * 10_000 + "Sub-motions: leg bending" + "</think>" * 10_000 + "<answer>shoot ball</answer>",
        reply("Sub-motions: " + "x" * 1_000_000),
    ],
)
def test_adversarial_input_is_fast(text):
    start = time.perf_counter()
    v = submotion(traj(text), RECORD)
    assert 0.0 <= v <= 1.0
    assert time.perf_counter() - start < 1.0


def test_docstring_examples():
    assert doctest.testmod(sm).failed == 0


def test_definitions_file_for_records_without_sub_motions(tmp_path):
    path = tmp_path / "definitions.json"
    path.write_text(json.dumps({"Shoot Ball": ["leg bending", "arm extending"], "dribble": ["hand bouncing"]}))
    record = {"answer": "shoot_ball"}
    listing = "Sub-motions: arm extending → wave"
    # ranks 1 of 2 matches: linear 2/3
    assert submotion(traj(reply(listing)), record, definitions=str(path)) == pytest.approx(2 / 3)
    assert submotion(traj(reply(listing)), record) is None  # no definitions: not applicable
    assert submotion(traj(reply(listing)), {"answer": "run"}, definitions=str(path)) is None  # not defined
    # the record's own sub_motions win over the file: "wave" at rank 2 -> 1/3
    assert submotion(traj(reply(listing)), record | {"sub_motions": ["wave"]}, definitions=str(path)) == (
        pytest.approx(1 / 3)
    )
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"shoot ball": "leg bending"}))
    with pytest.raises(ValueError, match=r"bad\.json: 'shoot ball' must map to a list of strings"):
        submotion(traj(reply(listing)), record, definitions=str(bad))
    with pytest.raises(ValueError, match="cannot read definitions file"):
        submotion(traj(reply(listing)), record, definitions=str(tmp_path / "missing.json"))
