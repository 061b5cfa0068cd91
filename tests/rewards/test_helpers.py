"""The shared pure helpers: hand-worked tables, and hypothesis properties (bounds, symmetry, order invariance)."""

from __future__ import annotations

import doctest
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import rewards
from rewards import (
    edit_similarity,
    entailment_score,
    parse_mcq_letter,
    score_reward,
    submotion_weights,
    temporal_iou,
)
from rewards.helpers import segment_iou, to_float

INF, NAN = float("inf"), float("nan")


@pytest.mark.parametrize(
    "a, b, expected",
    [
        ((0, 2), (1, 3), 1 / 3),  # overlap [1,2] = 1, union [0,3] = 3
        ((0, 4), (1, 2), 1 / 4),  # inside: 1 / 4
        ((0, 1), (2, 3), 0.0),  # disjoint
        ((0, 1), (1, 2), 0.0),  # touching: overlap 0
        ((-3, -1), (-2, 0), 1 / 3),  # negative times are plain numbers: overlap 1, union 3
        ((2, 2), (2, 2), 1.0),  # the same point
        ((2, 2), (0, 4), 0.0),  # a point inside a segment: overlap 0
        ((3, 1), (1, 3), 0.0),  # reversed: malformed
        ((NAN, 1), (0, 1), 0.0),
        ((0, INF), (0, 1), 0.0),
        ((0,), (0, 1), 0.0),
        ("ab", (0, 1), 0.0),
        (None, (0, 1), 0.0),
    ],
)
def test_segment_iou(a, b, expected):
    assert segment_iou(a, b) == pytest.approx(expected)


@pytest.mark.parametrize(
    "pred, gt, mode, expected",
    [
        ([], [], "paper", 1.0),
        ([], [(0, 1)], "paper", 0.0),
        ([(0, 1)], [], "max", 0.0),
        ([(0, 2), (4, 6)], [(4, 5), (0, 2)], "paper", 0.75),  # (1 + 1/2) / 2
        # one pred, two gt: best pair (0,2)-(0,2) = 1; paper: 1/1, max: 1/2
        ([(0, 2)], [(0, 2), (4, 6)], "paper", 1.0),
        ([(0, 2)], [(0, 2), (4, 6)], "max", 0.5),
        # pred a=(0,2), b=(1,3); gt x=(1,3), y=(0,2): a-y 1, b-x 1, a-x 1/3, b-y 1/3 -> a-y + b-x = 2, mean 1
        ([(0, 2), (1, 3)], [(1, 3), (0, 2)], "paper", 1.0),
        # pred a=(0,4), b=(0,2); gt x=(0,2), y=(2,4): a-x 1/2, a-y 1/2, b-x 1, b-y 0 -> b-x + a-y = 1.5, mean 0.75
        ([(0, 4), (0, 2)], [(0, 2), (2, 4)], "paper", 0.75),
        # a malformed predicted segment still counts as a segment: with "max" it dilutes, with "paper" it is
        # left unmatched when there are fewer gt segments: pairs (0,1)-(0,1) = 1 -> paper 1/1, max 1/2
        ([(0, 1), (5, 2)], [(0, 1)], "paper", 1.0),
        ([(0, 1), (5, 2)], [(0, 1)], "max", 0.5),
        # a reversed segment alone: IoU 0
        ([(5, 2)], [(0, 1)], "paper", 0.0),
    ],
)
def test_temporal_iou(pred, gt, mode, expected):
    assert temporal_iou(pred, gt, mode=mode) == pytest.approx(expected)


def test_temporal_iou_hungarian_beats_greedy():
    # pred a=(0,6), b=(0,4); gt x=(0,5), y=(4,6).
    # a-x 5/6, a-y 2/6, b-x 4/5, b-y 0. Greedy takes a-x (5/6), then b-y (0): 0.833.
    # Optimal: a-y + b-x = 1/3 + 4/5 = 17/15 = 1.1333 -> mean 17/30.
    assert temporal_iou([(0, 6), (0, 4)], [(0, 5), (4, 6)]) == pytest.approx(17 / 30)
    assert temporal_iou([(0, 6), (0, 4)], [(0, 5), (4, 6)], mode="paper") == pytest.approx(17 / 30)


def test_temporal_iou_rejects_unknown_mode():
    with pytest.raises(ValueError, match="mode must be one of"):
        temporal_iou([(0, 1)], [(0, 1)], mode="matched")


TRUE_PHASES = [(0, 2), (2, 6), (6, 8)]


def test_temporal_iou_gaming_examples():
    # one exact segment out of three: the paper's 1/|M| gives 1/1, the default 1 / max(1, 3)
    assert temporal_iou([(2, 6)], TRUE_PHASES, mode="paper") == 1.0
    assert temporal_iou([(2, 6)], TRUE_PHASES) == pytest.approx(1 / 3)
    # a spray: every segment with integer ends in [0, 8], C(9, 2) = 36 of them, holds the three true ones exactly;
    # the matching takes those three (IoU 1 each): paper 3/3, default 3/36
    spray = [(i, j) for i in range(9) for j in range(i + 1, 9)]
    assert len(spray) == 36
    assert temporal_iou(spray, TRUE_PHASES, mode="paper") == 1.0
    assert temporal_iou(spray, TRUE_PHASES) == pytest.approx(3 / 36)
    # 75 segments: the three true ones and 72 one-second segments after them: paper 1, default 3/75
    spray75 = TRUE_PHASES + [(10 + k, 11 + k) for k in range(72)]
    assert temporal_iou(spray75, TRUE_PHASES, mode="paper") == 1.0
    assert temporal_iou(spray75, TRUE_PHASES) == pytest.approx(0.04)


SEG = st.tuples(st.floats(-50, 50, allow_nan=False), st.floats(0, 30, allow_nan=False)).map(
    lambda t: (t[0], t[0] + t[1])
)
ANY_SEG = st.one_of(SEG, st.tuples(st.floats(allow_nan=True, allow_infinity=True), st.floats(allow_nan=True)))


@settings(max_examples=200, deadline=None)
@given(pred=st.lists(ANY_SEG, max_size=6), gt=st.lists(ANY_SEG, max_size=6), mode=st.sampled_from(["paper", "max"]))
def test_temporal_iou_bounds_and_symmetry(pred, gt, mode):
    value = temporal_iou(pred, gt, mode=mode)
    assert 0.0 <= value <= 1.0 and not math.isnan(value)
    assert temporal_iou(gt, pred, mode=mode) == pytest.approx(value)


@settings(max_examples=200, deadline=None)
@given(pred=st.lists(SEG, max_size=6), gt=st.lists(SEG, max_size=6), data=st.data())
def test_temporal_iou_order_invariant_and_max_below_paper(pred, gt, data):
    shuffled_pred = data.draw(st.permutations(pred))
    shuffled_gt = data.draw(st.permutations(gt))
    paper = temporal_iou(pred, gt, mode="paper")
    assert temporal_iou(shuffled_pred, shuffled_gt, mode="paper") == pytest.approx(paper)
    assert temporal_iou(shuffled_pred, shuffled_gt) == pytest.approx(temporal_iou(pred, gt))
    assert temporal_iou(pred, gt) <= paper + 1e-12
    assert temporal_iou(pred, pred) == pytest.approx(1.0)


@pytest.mark.parametrize(
    "pred, gt, expected",
    [
        ([], [], 1.0),
        (["a"], [], 0.0),  # 1 insertion / 1
        (["take off", "twist", "entry"], ["take off", "twist", "entry"], 1.0),
        (["take off", "twist", "entry"], ["take off", "somersault", "entry"], 1 - 1 / 3),  # 1 substitution
        (["take off", "entry"], ["take off", "twist", "entry"], 1 - 1 / 3),  # 1 deletion / max 3
        (["b", "a"], ["a", "b"], 0.0),  # 2 substitutions / 2 (Levenshtein: no transpositions)
        (["ab", "c"], ["a", "bc"], 0.0),  # strings are symbols, not characters
        (["x", "a", "b", "c"], ["a", "b", "c", "y"], 0.5),  # insert x, delete y: 2 / 4
    ],
)
def test_edit_similarity(pred, gt, expected):
    assert edit_similarity(pred, gt) == pytest.approx(expected)


@settings(max_examples=200, deadline=None)
@given(a=st.lists(st.sampled_from("abcd"), max_size=8), b=st.lists(st.sampled_from("abcd"), max_size=8))
def test_edit_similarity_bounds_and_symmetry(a, b):
    value = edit_similarity(a, b)
    assert 0.0 <= value <= 1.0
    assert edit_similarity(b, a) == pytest.approx(value)
    assert (value == 1.0) == (a == b)


@pytest.mark.parametrize(
    "args, kwargs, expected",
    [
        ((0.8, 0.8), {}, 1.0),
        ((0.8, 0.6), {}, math.exp(-0.04)),  # (0.2)^2 = 0.04
        ((0.8, 0.6), {"lam_q": 10}, math.exp(-0.4)),
        ((70, 80), {"d": 3.0, "d_star": 3.5, "lam_q": 0.01, "lam_d": 2}, math.exp(-1.0 - 0.5)),  # 0.01*100, 2*0.25
        ((70, 80), {"d": 3.0, "lam_q": 0.01}, math.exp(-1.0)),  # no d_star: difficulty left out
        ((70, 80), {"lam_q": 0}, 1.0),
        ((NAN, 80), {}, 0.0),
        ((INF, 80), {}, 0.0),
        (("x", 80), {}, 0.0),
        ((1e200, 0.0), {}, 0.0),  # (1e200)^2 overflows to inf: exp(-inf) = 0
        ((10**400, 0.0), {}, 0.0),  # too large for a float
        ((80, 80), {"d": NAN, "d_star": 3.0}, 0.0),  # a bad predicted difficulty
        (("75.5", 75.5), {}, 1.0),  # numeric strings are read
    ],
)
def test_score_reward(args, kwargs, expected):
    assert score_reward(*args, **kwargs) == pytest.approx(expected)


@pytest.mark.parametrize(
    "kwargs, match",
    [({"lam_q": -1}, "lam_q"), ({"lam_d": NAN}, "lam_d"), ({"q_star": NAN}, "references")],
)
def test_score_reward_rejects_bad_config(kwargs, match):
    with pytest.raises(ValueError, match=match):
        score_reward(**({"q": 1.0, "q_star": 1.0} | kwargs))


@pytest.mark.parametrize(
    "labels, expected",
    [
        ([2, 2, 2], 1.0),
        ([1, 1], 0.5),
        ([0], 0.0),
        ([2, 2, 1, 0], 0.625),  # Ne=2, Nc=1, K=4: (1/4 + 1) / 2
        ([2, 0], 0.5),  # (0/2 + 1) / 2
        ([0, 0, 1], 1 / 6),  # (-2/3 + 1) / 2
    ],
)
def test_entailment_score(labels, expected):
    assert entailment_score(labels) == pytest.approx(expected)


@pytest.mark.parametrize("labels", [[], [3], [-1], [True], ["2"]])
def test_entailment_score_rejects_bad_labels(labels):
    with pytest.raises(ValueError, match="entailment_score"):
        entailment_score(labels)


@pytest.mark.parametrize(
    "n, scheme, expected",
    [
        (0, "linear", []),
        (1, "linear", [1.0]),
        (3, "linear", [3 / 6, 2 / 6, 1 / 6]),
        (4, "linear", [0.4, 0.3, 0.2, 0.1]),  # 4,3,2,1 over 10
        (1, "exponential", [1.0]),
        (3, "exponential", [4 / 7, 2 / 7, 1 / 7]),  # 1, 1/2, 1/4 over 7/4
        (4, "exponential", [8 / 15, 4 / 15, 2 / 15, 1 / 15]),
    ],
)
def test_submotion_weights(n, scheme, expected):
    assert submotion_weights(n, scheme) == pytest.approx(expected)


@settings(max_examples=50, deadline=None)
@given(n=st.integers(1, 2000), scheme=st.sampled_from(["linear", "exponential"]))
def test_submotion_weights_sum_to_one_and_decrease(n, scheme):
    w = submotion_weights(n, scheme)
    assert len(w) == n and math.fsum(w) == pytest.approx(1.0)
    assert all(a >= b >= 0.0 for a, b in zip(w, w[1:]))


@pytest.mark.parametrize("n, scheme", [(-1, "linear"), (1.5, "linear"), (True, "linear"), (2, "quadratic")])
def test_submotion_weights_rejects_bad_arguments(n, scheme):
    with pytest.raises(ValueError, match="submotion_weights"):
        submotion_weights(n, scheme)


@pytest.mark.parametrize(
    "x, expected",
    [(1, 1.0), (2.5, 2.5), ("3", 3.0), (NAN, None), (INF, None), (True, None), (None, None), ([1], None)],
)
def test_to_float(x, expected):
    assert to_float(x) == expected


def test_public_names():
    for name in ("temporal_iou", "edit_similarity", "score_reward", "entailment_score", "submotion_weights"):
        assert getattr(rewards, name) is getattr(rewards.helpers, name)
    assert rewards.parse_mcq_letter is parse_mcq_letter


def test_docstring_examples():
    assert doctest.testmod(rewards.helpers).failed == 0
