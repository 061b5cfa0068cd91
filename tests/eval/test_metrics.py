"""Every eval metric against values worked out by hand, and against scipy / numpy where they compute the same."""

from __future__ import annotations

import doctest
import json
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


def test_sed_and_the_hier_action_reward_compare_names_alike():
    from rewards.hieroaction import hier_action
    from rollout.trajectory import Trajectory

    def reward(names: list[str], true_names: list[str]) -> float:
        text = "<answer>" + json.dumps({"sub_actions": names}) + "</answer>"
        record = {"sub_actions": [{"name": n, "start": 0, "end": 1} for n in true_names]}  # no label: R_sub alone
        return hier_action(Trajectory("a", 0, [], [], [], [], final_text=text), record)

    # "take_off" is "take off": one symbol, both sides 1.0 (the eval used to say 0.0 here)
    assert M.sed([["take_off"]], [["take off"]]) == 1.0 == reward(["take_off"], ["take off"])
    # [Take-Off, TWIST, entry] vs [take off, entry]: "TWIST" is one insertion over 3 -> 2/3 both ways
    pred, truth = ["Take-Off", "TWIST", "entry"], ["take off", "entry"]
    assert close(M.sed([pred], [truth]), 2 / 3) and close(reward(pred, truth), 2 / 3)
    # a different word stays different: "pike" for "tuck" is one substitution over 2 -> 1/2 both ways
    assert close(M.sed([["take  off", "pike"]], [["take off", "tuck"]]), 0.5)
    assert close(reward(["take  off", "pike"], ["take off", "tuck"]), 0.5)


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


def test_relative_l2_set_range_by_hand():
    # CoRe's and TSA's code: one range for the whole evaluated set, max - min of the true scores = 90 - 50 = 40
    truth, pred = [80, 90, 50], [85, 70, 40]
    # ((80-85)/40)^2 = 1/64, ((90-70)/40)^2 = 1/4, ((50-40)/40)^2 = 1/16 -> (1 + 16 + 4) / 64 / 3 = 21/192
    assert close(M.relative_l2(pred, truth), 21 / 192)
    # the released code's expression, in numpy
    t, p = np.array(truth, dtype=float), np.array(pred, dtype=float)
    assert close(M.relative_l2(pred, truth), float(np.power((p - t) / (t.max() - t.min()), 2).sum() / t.shape[0]))
    # a set whose true scores are all equal has no range: NaN
    assert math.isnan(M.relative_l2([1, 2], [5, 5]))
    with pytest.raises(ValueError, match="2 predictions but 1 true"):
        M.relative_l2([1, 2], [1])


def test_relative_l2_per_action_range_by_hand():
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


def test_relative_l2_on_dive_codes_set_range_is_smaller():
    # FineDiving-like: two dive codes, each with a narrow score range inside the set's 40-point range. Dividing by
    # the dive code's range (10) instead of the set's (40) makes every term 16 times larger.
    truth, pred, codes = [50, 60, 80, 90], [55, 55, 85, 85], ["107B", "107B", "5253B", "5253B"]
    assert close(M.relative_l2(pred, truth), (5 / 40) ** 2)  # every error is 5
    assert close(M.relative_l2(pred, truth, M.action_ranges(truth, codes)), (5 / 10) ** 2)


PHASES = [(0, 2), (2, 6), (6, 8)]


def test_mean_temporal_iou_by_hand():
    # (0,4) vs (2,6): overlap 2, union 6 -> 1/3; [(0,1),(2,3)] vs [(2,3)]: one pair of IoU 1 and one extra segment:
    # default 1 / max(2, 1) = 1/2 -> (1/3 + 1/2) / 2 = 5/12; paper 1 / 1 matched pair -> (1/3 + 1) / 2 = 2/3
    pred, truth = [[(0, 4)], [(0, 1), (2, 3)]], [[(2, 6)], [(2, 3)]]
    assert close(M.mean_temporal_iou(pred, truth), 5 / 12)
    assert close(M.mean_temporal_iou(pred, truth, mode="paper"), 2 / 3)


def test_mean_temporal_iou_gaming_examples():
    # one exact phase out of three, and a spray of 75 segments that holds the three: the paper's form gives 1.0 to
    # both; the default divides the matched IoU sum (1, then 3) by max(#pred, #true) (3, then 75)
    spray = PHASES + [(10 + k, 11 + k) for k in range(72)]
    assert close(M.mean_temporal_iou([[(2, 6)], spray], [PHASES, PHASES], mode="paper"), 1.0)
    assert close(M.mean_temporal_iou([[(2, 6)]], [PHASES]), 1 / 3)
    assert close(M.mean_temporal_iou([spray], [PHASES]), 3 / 75)
    assert close(M.mean_temporal_iou([[(2, 6)], spray], [PHASES, PHASES]), (1 / 3 + 3 / 75) / 2)


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
