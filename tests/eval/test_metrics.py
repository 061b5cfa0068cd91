"""Every eval metric against values worked out by hand, and against scipy / numpy where they compute the same."""

from __future__ import annotations

import doctest
import math

import numpy as np
import pytest

from eval import metrics as M

NAN = float("nan")


def close(a: float, b: float) -> bool:
    return (math.isnan(a) and math.isnan(b)) or math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)


def test_doctests():
    import eval.actor
    import eval.metrics
    import eval.report

    assert doctest.testmod(eval.metrics).failed == 0
    assert doctest.testmod(eval.actor).failed == 0
    assert doctest.testmod(eval.report).failed == 0


@pytest.mark.parametrize(
    "correct, expected",
    [([1, 0, 0, 1, 1], 0.6), ([True], 1.0), ([False, False], 0.0), ([], NAN)],
)
def test_top1(correct, expected):
    assert close(M.top1_accuracy(correct), expected)


@pytest.mark.parametrize(
    "base, novel, expected",
    [(0.9, 0.6, 0.72), (1.0, 0.0, 0.0), (0.0, 0.0, 0.0), (0.5, 0.5, 0.5), (NAN, 0.5, NAN)],  # 2*.54/1.5 = .72
)
def test_harmonic_mean(base, novel, expected):
    assert close(M.harmonic_mean(base, novel), expected)


def test_base_novel_by_hand():
    # base: 1 1 0 -> 2/3; novel: 0 1 0 -> 1/3; HM = 2 (2/9) / 1 = 4/9; the "" sample counts in neither
    out = M.base_novel([1, 1, 0, 0, 1, 0, 1], ["base", "base", "base", "novel", "novel", "novel", ""])
    assert close(out["base"], 2 / 3) and close(out["novel"], 1 / 3) and close(out["hm"], 4 / 9)
    with pytest.raises(ValueError, match="base/novel"):
        M.base_novel([1], [])


def test_mean_std_by_hand_and_numpy():
    mean, std = M.mean_std([0.8, 0.6, 0.7])  # deviations .1, -.1, 0: population variance .02 / 3
    assert close(mean, 0.7) and close(std, math.sqrt(0.02 / 3))
    assert close(M.mean_std([0.8, 0.6, 0.7], ddof=1)[1], 0.1)  # sample variance .02 / 2
    values = np.random.default_rng(0).random(7)
    assert close(M.mean_std(values)[1], float(np.std(values)))
    assert close(M.mean_std(values, 1)[1], float(np.std(values, ddof=1)))
    with pytest.raises(ValueError):
        M.mean_std([0.5], ddof=1)


def test_action_accuracy():
    # "Forward_Dive" matches "forward dive" (labels compare normalised); None and "407B" are wrong
    predicted, labels = ["Forward_Dive", None, "407B", "squat"], ["forward dive", "x", "407C", "squat"]
    assert close(M.action_accuracy(predicted, labels), 0.5)


def test_sed_by_hand():
    # [a b c d] vs [a c d]: one deletion over 4 -> 0.75; [x] vs [y z]: substitution + insertion over 2 -> 0
    assert close(M.sed([["a", "b", "c", "d"], ["x"]], [["a", "c", "d"], ["y", "z"]]), 0.375)
    assert close(M.sed([[]], [[]]), 1.0)


@pytest.mark.parametrize(
    "pred, truth, expected",
    [
        ([3, 1, 2], [30, 10, 20], 1.0),
        ([1, 2, 3], [3, 2, 1], -1.0),
        # ties: ranks (1.5 1.5 3 4) vs (1 2 3 4): cov 4.5, var 4.5 and 5 -> 4.5 / sqrt(22.5)
        ([1, 1, 2, 3], [1, 2, 3, 4], 4.5 / math.sqrt(22.5)),
        ([1, 1, 1], [1, 2, 3], NAN),  # constant prediction: undefined
        ([1], [2], NAN),
    ],
)
def test_spearman_by_hand(pred, truth, expected):
    assert close(M.spearman(pred, truth), expected)


def test_spearman_against_scipy():
    from scipy.stats import spearmanr

    rng = np.random.default_rng(1)
    for _ in range(5):
        truth = rng.normal(70, 10, size=12).round(1).tolist()
        pred = (np.array(truth) + rng.normal(0, 8, size=12)).round(0).tolist()  # rounding makes ties
        assert close(M.spearman(pred, truth), float(spearmanr(pred, truth).statistic))


def test_relative_l2_by_hand():
    truth, pred, actions = [80, 90, 50], [85, 70, 40], ["a", "a", "b"]
    ranges = M.action_ranges(truth, actions)
    assert ranges == [(80, 90), (80, 90), (50, 90)]  # "b" has one sample: the whole set's range
    # ((80-85)/10)^2 = .25, ((90-70)/10)^2 = 4, ((50-40)/40)^2 = .0625 -> 4.3125 / 3
    assert close(M.relative_l2(pred, truth, ranges), 4.3125 / 3)
    # the same with numpy, per-sample widths
    widths = np.array([hi - lo for lo, hi in ranges])
    assert close(M.relative_l2(pred, truth, ranges), float(np.mean(((np.array(truth) - pred) / widths) ** 2)))
    with pytest.raises(ValueError, match="no width"):
        M.relative_l2([1], [1], [(2, 2)])


def test_mean_temporal_iou_by_hand():
    # (0,4) vs (2,6): overlap 2, union 6 -> 1/3; [(0,1),(2,3)] vs [(2,3)]: the matched pair has IoU 1 -> 1
    assert close(M.mean_temporal_iou([[(0, 4)], [(0, 1), (2, 3)]], [[(2, 6)], [(2, 3)]]), 2 / 3)


def test_mcq_accuracy_by_hand():
    m = M.mcq_accuracy(["A", "B", "", "D", "C"], ["A", "C", "B", "D", "C"], ["mv", "mv", "int", "int", "obj"])
    assert close(m["accuracy"], 0.6) and close(m["blank_rate"], 0.2)
    assert m["per_category"] == {
        "int": {"accuracy": 0.5, "blank_rate": 0.5, "n": 2},
        "mv": {"accuracy": 0.5, "blank_rate": 0.0, "n": 2},
        "obj": {"accuracy": 1.0, "blank_rate": 0.0, "n": 1},
    }


def test_held_in_out_by_hand():
    out = M.held_in_out([1.0, 0.5, 0.75, 0.0], ["in", "in", "out", "out"])
    assert out == {"held_in": 0.75, "held_out": 0.375, "whole": 0.5625}


@pytest.mark.parametrize(
    "reply, expected",
    [
        ("{'pred': 'yes', 'score': 4}", (True, 4)),
        ('{"pred": "NO", "score": 0}', (False, 0)),
        ("```python\n{'pred': 'no', 'score': '2'}\n```", (False, 2)),
        ("{'pred': 'maybe', 'score': 9}", (None, None)),  # not yes/no, not 0-5
        ("{'pred': 'yes', 'score': 4.5}", (True, None)),
        (None, (None, None)),
    ],
)
def test_parse_judge_reply(reply, expected):
    assert M.parse_judge_reply(reply) == expected


def test_judge_summary_and_prompt():
    out = M.judge_summary([(True, 5), (True, 3), (False, 1), (None, 2)])
    assert close(out["judge_accuracy"], 0.5) and close(out["judge_score"], 11 / 4) and out["judge_unparsed"] == 1
    prompt = M.judge_prompt("Q?", "the answer", "my guess")
    assert "Question: Q?" in prompt and "Correct Answer: the answer" in prompt
    assert "Predicted Answer: my guess" in prompt
    assert "{'pred': 'yes', 'score': 4}" in prompt  # the example survives formatting
