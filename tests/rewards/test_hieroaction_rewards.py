"""HieroAction's rewards (sar_format, temporal_iou, hier_action, aqa_score): hand-worked tables against aqa records,
never-raise properties on adversarial answers, speed on huge ones."""

from __future__ import annotations

import doctest
import json
import math
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import rewards.hieroaction as hiero
from rewards.hieroaction import (
    aqa_score,
    hier_action,
    is_sar_format,
    parse_sar_answer,
    sar_format,
    temporal_iou_reward,
)
from rollout.trajectory import Trajectory

RECORD = {
    "id": "a1",
    "task": "aqa",
    "label": "407C",
    "answer": "81.5",
    "score": 80.0,
    "difficulty": 3.0,
    "score_range": [0, 100],
    "sub_actions": [
        {"name": "take off", "start": 0.0, "end": 2.0},
        {"name": "twist", "start": 2.0, "end": 6.0},
        {"name": "entry", "start": 6.0, "end": 8.0},
    ],
}
SAR = "<look>diver</look>\n<recognition>r</recognition>\n<assessment>a</assessment>\n<answer>{}</answer>"


def traj(text: str) -> Trajectory:
    return Trajectory("a1", 0, [], [], [], [], final_text=text)


def answer(**obj) -> str:
    return SAR.format(json.dumps(obj))


def subs(*triples) -> list[dict]:
    return [{"name": n, "start": s, "end": e} for n, s, e in triples]


@pytest.mark.parametrize(
    "text, strict, expected",
    [
        ("<look>a</look><recognition>b</recognition><assessment>c</assessment><answer>d</answer>", False, True),
        (SAR.format("{}"), True, True),  # newlines between blocks are whitespace
        (
            "Sure! <look>a</look> then <recognition>b</recognition><assessment>c</assessment><answer>d</answer>",
            False,
            True,
        ),
        (
            "Sure! <look>a</look> then <recognition>b</recognition><assessment>c</assessment><answer>d</answer>",
            True,
            False,
        ),
        ("<look></look><recognition></recognition><assessment></assessment><answer></answer>", True, True),  # empty ok
        ("<recognition>b</recognition><look>a</look><assessment>c</assessment><answer>d</answer>", False, False),
        ("<look>a</look><recognition>b</recognition><answer>d</answer>", False, False),  # assessment missing
        ("<look>a</look><recognition>b</recognition><assessment>c</assessment><answer>d", False, False),  # unclosed
        ("<look>a<recognition>b</recognition></look><assessment>c</assessment><answer>d</answer>", False, False),
        (
            "<look>a</look><look>a</look><recognition>b</recognition><assessment>c</assessment><answer>d</answer>",
            False,
            False,
        ),
        ("</look><look><recognition>b</recognition><assessment>c</assessment><answer>d</answer>", False, False),
        ("", False, False),
    ],
)
def test_sar_format(text, strict, expected):
    assert is_sar_format(text, strict=strict) is expected
    assert sar_format(traj(text), {}, strict=strict) == (1.0 if expected else 0.0)


THINK = "<think>three phases, a clean entry</think>\n<answer>{}</answer>"
ONLY = "<answer>{}</answer>"


@pytest.mark.parametrize(
    "text, style, strict, expected",
    [
        # cot: one <think>, then one <answer>
        (THINK, "cot", True, True),
        ("Sure. <think>t</think> so <answer>{}</answer>", "cot", False, True),  # text around: not strict only
        ("Sure. <think>t</think> so <answer>{}</answer>", "cot", True, False),
        ("<answer>{}</answer><think>t</think>", "cot", False, False),  # answer first
        (ONLY, "cot", False, False),  # no think block
        ("<think>a</think><think>b</think><answer>{}</answer>", "cot", False, False),  # two think blocks
        ("<think>t<answer>{}</answer>", "cot", False, False),  # think not closed
        ("<think><look>a</look> t</think><answer>{}</answer>", "cot", False, False),  # an SAR block inside
        ("<think>t</think><assessment>a</assessment><answer>{}</answer>", "cot", False, False),  # an SAR block
        (SAR.format("{}"), "cot", False, False),
        # direct: the answer alone, with nothing but whitespace around it, strict or not
        (ONLY, "direct", True, True),
        ("\n " + ONLY + "\n", "direct", False, True),
        ("The score is high. " + ONLY, "direct", False, False),
        (THINK, "direct", False, False),
        ("<answer>{}</answer><answer>{}</answer>", "direct", False, False),
        ("<answer>{}", "direct", False, False),
        ("<answer>{}</answer></look>", "direct", False, False),  # a stray reasoning tag
        ("", "direct", False, False),
        # sar, named: the default's answers
        (SAR.format("{}"), "sar", True, True),
        (THINK, "sar", False, False),
        (ONLY, "sar", False, False),
    ],
)
def test_format_per_style(text, style, strict, expected):
    assert hiero.is_style_format(text, style, strict=strict) is expected
    assert sar_format(traj(text), {}, strict=strict, style=style) == (1.0 if expected else 0.0)


@pytest.mark.parametrize(
    "text",
    [
        THINK,
        ONLY,
        SAR.format("{}"),
        "Sure. <think>t</think> so <answer>{}</answer>",
        "<answer>{}</answer><think>t</think>",
        " <think></think>\n<answer></answer> ",
        "<think>a</think><think>b</think><answer>{}</answer>",
        "<think>t<answer>{}</answer>",
    ],
)
def test_strict_cot_format_agrees_with_videostars_think_then_answer_check(text):
    """A second implementation: Video-STAR's `format` reward checks the same form (it alone lets SAR tags stand
    inside <think>, which none of these texts has)."""
    from rewards.videostar import is_think_then_answer

    assert hiero.is_style_format(text, "cot", strict=True) is is_think_then_answer(text)


def test_format_style_default_and_a_bad_style():
    for text in (SAR.format("{}"), "<look>a</look>", THINK, ONLY, "", None):
        assert sar_format(traj(text), {}) == sar_format(traj(text), {}, style="sar")
    with pytest.raises(ValueError, match="format style must be one of sar, cot, direct, got 'think'"):
        sar_format(traj(THINK), {}, style="think")


@pytest.mark.parametrize(
    "text, expected",
    [
        (
            answer(action="407C", sub_actions=subs(("entry", 1, 2)), difficulty=3.2, score=81.5),
            ("407C", [("entry", 1.0, 2.0)], 3.2, 81.5),
        ),
        # fenced JSON with text around it; numeric strings
        ('<answer>Final: ```json\n{"score": "70", "difficulty": "2.8"}\n```</answer>', (None, [], 2.8, 70.0)),
        # NaN / Infinity literals, a bool, a huge int and a list become None
        ('<answer>{"score": NaN, "difficulty": Infinity, "action": 5}</answer>', (None, [], None, None)),
        ('<answer>{"score": true, "difficulty": [1]}</answer>', (None, [], None, None)),
        ('<answer>{"score": 1' + "0" * 400 + "}</answer>", (None, [], None, None)),
        # sub-actions: bare names, missing and malformed times, non-dict items dropped
        (
            '<answer>{"sub_actions": ["take off", {"name": "twist", "start": "x"}, 7, {"start": 1, "end": 2}]}'
            "</answer>",
            (None, [("take off", None, None), ("twist", None, None), ("", 1.0, 2.0)], None, None),
        ),
        ('<answer>{"sub_actions": {"name": "entry"}}</answer>', (None, [], None, None)),  # not a list
    ],
)
def test_parse_sar_answer(text, expected):
    got = parse_sar_answer(text)
    action, segments, difficulty, score = expected
    assert got.action == action and got.difficulty == difficulty and got.score == score
    assert [(s.name, s.start, s.end) for s in got.sub_actions] == segments


@pytest.mark.parametrize(
    "text",
    [
        "no answer",
        "<answer>81.5</answer>",  # not an object
        "<answer>[1, 2]</answer>",
        '<answer>{"score": 81.5</answer>',  # broken JSON
        '<answer>{"score": 81.5}',  # unclosed tag
        "<answer>" + "[" * 100_000 + "]" * 100_000 + "</answer>",  # no object
        "<answer>{" + '"a":{' * 50_000 + "}" * 50_001 + "</answer>",  # absurd nesting
        "<answer>{" + " " * (hiero.MAX_ANSWER_CHARS + 1) + "}</answer>",  # too long
        '<answer>{"score": 1' + "0" * 5000 + "}</answer>",  # past Python's int digit limit: json raises, caught
        None,
    ],
)
def test_parse_sar_answer_none(text):
    assert parse_sar_answer(text) is None


@pytest.mark.parametrize(
    "pred, mode, expected",
    [
        (subs(("take off", 0, 2), ("twist", 2, 6), ("entry", 6, 8)), "paper", 1.0),
        # shifted by 1 s: (0,2)-(1,3) 1/3, (2,6)-(3,7) 3/5, (6,8)-(7,9) 1/3 -> (1/3 + 3/5 + 1/3) / 3 = 19/45
        (subs(("a", 1, 3), ("b", 3, 7), ("c", 7, 9)), "paper", 19 / 45),
        # only the middle one, exactly: paper 1/1, max 1/3
        (subs(("twist", 2, 6)), "paper", 1.0),
        (subs(("twist", 2, 6)), "max", 1 / 3),
        # order of predicted segments does not matter
        (subs(("entry", 6, 8), ("take off", 0, 2), ("twist", 2, 6)), "paper", 1.0),
        # reversed and NaN times are segments with IoU 0: paper (1 + 0) / 2 with the best pairing
        (subs(("take off", 0, 2), ("twist", 6, 2)), "paper", 0.5),
        ([{"name": "x", "start": 0, "end": 2}, {"name": "y", "start": math.nan, "end": 3}], "max", 1 / 3),
        ([], "paper", 0.0),  # the record has three segments
    ],
)
def test_temporal_iou_reward(pred, mode, expected):
    assert temporal_iou_reward(traj(answer(sub_actions=pred)), RECORD, mode=mode) == pytest.approx(expected)


def test_temporal_iou_reward_default_cannot_be_gamed():
    # RECORD's phases are (0,2) (2,6) (6,8). One exact phase: the paper's form 1.0, the default 1/3.
    one = traj(answer(sub_actions=subs(("twist", 2, 6))))
    assert temporal_iou_reward(one, RECORD, mode="paper") == 1.0
    assert temporal_iou_reward(one, RECORD) == pytest.approx(1 / 3)
    # a spray of 75 segments holding the three phases: the paper's form 1.0, the default 3/75
    spray = subs(("a", 0, 2), ("b", 2, 6), ("c", 6, 8)) + subs(*[("x", 10 + k, 11 + k) for k in range(72)])
    assert temporal_iou_reward(traj(answer(sub_actions=spray)), RECORD, mode="paper") == 1.0
    assert temporal_iou_reward(traj(answer(sub_actions=spray)), RECORD) == pytest.approx(0.04)


def test_temporal_iou_reward_edge_cases():
    assert temporal_iou_reward(traj("no answer"), RECORD) == 0.0
    assert temporal_iou_reward(traj(answer(sub_actions=[])), RECORD | {"sub_actions": []}) == 1.0
    assert temporal_iou_reward(traj(answer(sub_actions=[])), {"score": 1}) is None


@pytest.mark.parametrize(
    "obj, record_changes, kwargs, expected",
    [
        ({"action": "407C", "sub_actions": ["take off", "twist", "entry"]}, {}, {}, 1.0),
        # right class; "somersault" for "twist": 1 substitution / 3 -> 0.5 * 1 + 0.5 * 2/3
        ({"action": "407c", "sub_actions": ["Take_Off", "somersault", "entry"]}, {}, {}, 0.5 + 0.5 * 2 / 3),
        # wrong class; one of three missing: 0.5 * 0 + 0.5 * (1 - 1/3)
        ({"action": "405B", "sub_actions": ["take off", "entry"]}, {}, {}, 0.5 * 2 / 3),
        # alpha 0.8: 0.8 * 1 + 0.2 * 0 (no sub-actions: 3 insertions / 3)
        ({"action": "407C", "sub_actions": []}, {}, {"alpha": 0.8}, 0.8),
        # no action key: class 0; sequence exact
        ({"sub_actions": ["take off", "twist", "entry"]}, {}, {}, 0.5),
        # the record has no label: the edit similarity alone, 2/3
        ({"action": "x", "sub_actions": ["take off", "entry"]}, {"label": None}, {}, 2 / 3),
        # another label field
        (
            {"action": "back dive", "sub_actions": ["take off", "twist", "entry"]},
            {"name": "Back-Dive"},
            {"label_field": "name"},
            1.0,
        ),
    ],
)
def test_hier_action(obj, record_changes, kwargs, expected):
    record = {k: v for k, v in (RECORD | record_changes).items() if v is not None}
    assert hier_action(traj(answer(**obj)), record, **kwargs) == pytest.approx(expected)


def test_hier_action_edge_cases():
    assert hier_action(traj("<answer>not json</answer>"), RECORD) == 0.0
    assert hier_action(traj(answer(action="407C")), {"label": "407C"}) is None
    with pytest.raises(ValueError, match="alpha"):
        hier_action(traj(answer(action="407C")), RECORD, alpha=1.5)


@pytest.mark.parametrize(
    "obj, kwargs, expected",
    [
        ({"score": 80, "difficulty": 3.0}, {}, 1.0),
        # range [0, 100]: q 0.7 vs 0.8 -> (0.1)^2 = 0.01; d 3.0 vs 3.0 -> 0: exp(-0.01)
        ({"score": 70, "difficulty": 3.0}, {}, math.exp(-0.01)),
        ({"score": 70, "difficulty": 3.0}, {"lam_q": 10}, math.exp(-0.1)),
        # difficulty 3.5 on the score range: (0.005)^2 = 2.5e-5 -> exp(-0.01 - 2.5e-5)
        ({"score": 70, "difficulty": 3.5}, {}, math.exp(-0.01 - 2.5e-5)),
        # difficulty range [1, 5]: d 0.625 vs 0.5 -> (0.125)^2 = 0.015625, lam_d 4 -> 0.0625
        ({"score": 80, "difficulty": 3.5}, {"difficulty_range": [1, 5], "lam_d": 4}, math.exp(-0.0625)),
        # raw values: (70-80)^2 = 100 * 0.01 = 1; (3.5-3)^2 = 0.25 * 2 = 0.5
        ({"score": 70, "difficulty": 3.5}, {"normalize": "none", "lam_q": 0.01, "lam_d": 2}, math.exp(-1.5)),
        # no difficulty term: only the score
        ({"score": 70}, {"use_difficulty": False}, math.exp(-0.01)),
        ({"score": 70}, {}, 0.0),  # the record has a difficulty and the prediction none
        ({"difficulty": 3.0}, {}, 0.0),  # no score
        ({"score": 1e308, "difficulty": 3.0}, {}, 0.0),  # huge: exp(-inf)
        ({"score": -1e308, "difficulty": 3.0}, {"normalize": "none"}, 0.0),
    ],
)
def test_aqa_score(obj, kwargs, expected):
    assert aqa_score(traj(answer(**obj)), RECORD, **kwargs) == pytest.approx(expected)


FINEFS_RECORD = RECORD | {"difficulty": 0.0, "meta": {"dataset": "finefs", "has_difficulty": False}}


@pytest.mark.parametrize(
    "obj, kwargs, expected",
    [
        # q 0.7 vs 0.8 on [0, 100]: exp(-(0.1)^2); the record's 0.0 is no difficulty, so none is compared
        ({"score": 70}, {}, math.exp(-0.01)),  # the old behaviour: 0.0 (a difficulty was expected)
        ({"score": 70, "difficulty": 3.0}, {}, math.exp(-0.01)),  # old: exp(-0.01 - (0.03)^2)
        # with difficulty_range [1, 4] the old value was exp(-0.01 - 10 * ((3-1)/3 - (0-1)/3)^2) = exp(-10.01)
        ({"score": 70, "difficulty": 3.0}, {"difficulty_range": [1, 4], "lam_d": 10}, math.exp(-0.01)),
        ({"score": 80, "difficulty": "n/a"}, {"lam_q": 10}, 1.0),
        ({"difficulty": 0.0}, {}, 0.0),  # a score is still needed
    ],
)
def test_aqa_score_leaves_out_a_difficulty_the_record_does_not_have(obj, kwargs, expected):
    assert aqa_score(traj(answer(**obj)), FINEFS_RECORD, **kwargs) == pytest.approx(expected)


def test_record_difficulty():
    assert hiero.record_difficulty(RECORD) == 3.0
    assert hiero.record_difficulty(FINEFS_RECORD) is None
    assert hiero.record_difficulty(RECORD | {"meta": {"has_difficulty": True}}) == 3.0
    assert hiero.record_difficulty({"score": 1}) is None and hiero.record_difficulty(None) is None


def test_aqa_score_edge_cases():
    assert aqa_score(traj(answer(score=1)), {"label": "x"}) is None  # not an aqa record
    assert aqa_score(traj("<answer>80</answer>"), RECORD) == 0.0
    with pytest.raises(ValueError, match="record 'a1': field 'score_range'"):
        aqa_score(traj(answer(score=1)), RECORD | {"score_range": [5, 5]})
    with pytest.raises(ValueError, match="normalize"):
        aqa_score(traj(answer(score=1)), RECORD, normalize="zscore")


PIECES = [
    "<look>",
    "</look>",
    "<recognition>",
    "</recognition>",
    "<assessment>",
    "</assessment>",
    "<answer>",
    "</answer>",
    "{",
    "}",
    "[",
    "]",
    '"score":',
    '"difficulty":',
    '"sub_actions":',
    '"action":',
    '"name":',
    '"start":',
    '"end":',
    ",",
    ":",
    "NaN",
    "-Infinity",
    "1e999",
    "-3",
    "2.5",
    "1" * 30,
    '"x"',
    "null",
    " ",
]
TAGGY = st.lists(st.sampled_from(PIECES), max_size=80).map("".join)
NUM = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-(10**30), 10**30), st.text(max_size=5))
SUB = st.fixed_dictionaries({"name": st.one_of(st.text(max_size=8), st.none()), "start": NUM, "end": NUM})
JSONY = st.fixed_dictionaries(
    {
        "action": st.one_of(st.text(max_size=8), NUM),
        "sub_actions": st.lists(SUB, max_size=6),
        "score": NUM,
        "difficulty": NUM,
    }
).map(lambda o: SAR.format(json.dumps(o)))


@settings(max_examples=300, deadline=None)
@given(text=st.one_of(st.text(max_size=300), TAGGY, JSONY))
def test_rewards_never_raise_and_stay_in_bounds(text):
    t = traj(text)
    calls = [
        (sar_format, {}),
        (sar_format, {"strict": True}),
        (temporal_iou_reward, {}),
        (hier_action, {}),
        (temporal_iou_reward, {"mode": "paper"}),
        (aqa_score, {}),
        (aqa_score, {"normalize": "none"}),
    ]
    for fn, kwargs in calls:
        v = fn(t, RECORD, **kwargs)
        assert isinstance(v, float) and not math.isnan(v) and 0.0 <= v <= 1.0, (fn.__name__, v)


@pytest.mark.parametrize(
    "text",
    [
        SAR.format("{}") * 10_000,  # 10k repeated blocks
        "<answer>" * 10_000 + "{}" + "</answer>" * 10_000,
        "<look>" * 10_000 + "</look>" * 10_000,
        answer(sub_actions=subs(*[("x", i, i + 1) for i in range(5_000)]), score=1, difficulty=1),
        "<answer>{" + '"score": 1, ' * 20_000 + '"end": 0}</answer>',
        "<look>" + "x" * 1_000_000,
    ],
)
def test_adversarial_input_is_fast(text):
    t = traj(text)
    start = time.perf_counter()
    for fn in (sar_format, temporal_iou_reward, hier_action, aqa_score):
        v = fn(t, RECORD)
        assert 0.0 <= v <= 1.0
    assert time.perf_counter() - start < 2.0


def test_docstring_examples():
    assert doctest.testmod(hiero).failed == 0


@pytest.mark.parametrize("difficulty_range", [[4, 1], [1], "1-4", [1, math.nan]])
def test_aqa_score_rejects_a_bad_difficulty_range(difficulty_range):
    with pytest.raises(ValueError, match=r"record 'a1': args.difficulty_range must be \[lo, hi\]"):
        aqa_score(traj(answer(score=1, difficulty=1)), RECORD, difficulty_range=difficulty_range)
