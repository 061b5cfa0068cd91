"""The metrics the papers report, as pure functions over plain Python values (no model, no I/O).

Each takes per-sample values and returns a number (or a small dict); the per-sample parsing of a model's reply
lives in `eval.tasks`. The helpers shared with the rewards (edit similarity, temporal IoU, the entailment score,
label matching) come from `rewards`, so a reward and its metric never disagree.

Where a paper defines the metric:
  top-1 accuracy, base / novel / harmonic mean, mean and std over splits    Video-STAR (open-vocabulary recognition)
  action accuracy, SED, Spearman rho, relative L2 (CoRe's), mean temporal IoU,
  the LLM judge's yes rate and 0-5 score                                    HieroAction (action quality assessment)
  MCQ accuracy overall and per category, blank rate                         FineBench
  semantic entailment score on held-in, held-out and whole                  Gold Points Sniper
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

from rewards.helpers import edit_similarity, temporal_iou

NAN = float("nan")


def _mean(values: Sequence[float]) -> float:
    values = [float(v) for v in values]
    return math.fsum(values) / len(values) if values else NAN


# ------------------------------------------------------------------------------------------- recognition
def top1_accuracy(correct: Sequence[Any]) -> float:
    """Share of samples whose top-1 prediction is right (`correct[i]` truthy); NaN for no samples.

    >>> top1_accuracy([True, False, True, True])
    0.75
    """
    return _mean([1.0 if c else 0.0 for c in correct])


def harmonic_mean(base: float, novel: float) -> float:
    """HM = 2 * base * novel / (base + novel), the base-to-novel summary; 0 when both are 0, NaN if either is.

    >>> round(harmonic_mean(0.8, 0.4), 6)  # 0.64 / 1.2
    0.533333
    >>> harmonic_mean(0.0, 0.0)
    0.0
    """
    if math.isnan(base) or math.isnan(novel):
        return NAN
    return 0.0 if base + novel == 0 else 2.0 * base * novel / (base + novel)


def base_novel(correct: Sequence[Any], base_or_novel: Sequence[str]) -> dict[str, float]:
    """Top-1 accuracy on the base classes, on the novel classes, and their harmonic mean (Video-STAR, Table 1).

    `base_or_novel[i]` is "base" or "novel" (the record's `meta.base_or_novel`); other values count in neither.

    >>> base_novel([1, 0, 1, 1, 0], ["base", "base", "novel", "novel", "novel"])  # base 1/2, novel 2/3
    {'base': 0.5, 'novel': 0.6666666666666666, 'hm': 0.5714285714285715}
    """
    if len(correct) != len(base_or_novel):
        raise ValueError(f"base_novel: {len(correct)} values but {len(base_or_novel)} base/novel tags")
    base = top1_accuracy([c for c, k in zip(correct, base_or_novel) if k == "base"])
    novel = top1_accuracy([c for c, k in zip(correct, base_or_novel) if k == "novel"])
    return {"base": base, "novel": novel, "hm": harmonic_mean(base, novel)}


def mean_std(values: Sequence[float], ddof: int = 0) -> tuple[float, float]:
    """Mean and standard deviation of a metric over splits (e.g. the three HMDB-51 / UCF-101 splits of the
    cross-dataset protocol). `ddof=0` is the population std (numpy's default); `ddof=1` the sample std.

    >>> mean_std([0.5, 0.7, 0.6])  # deviations -0.1, 0.1, 0: variance 0.02 / 3
    (0.6, 0.08164965809277258)
    """
    values = [float(v) for v in values]
    if len(values) <= ddof:
        raise ValueError(f"mean_std: needs more than {ddof} values, got {len(values)}")
    mean = math.fsum(values) / len(values)
    var = math.fsum((v - mean) ** 2 for v in values) / (len(values) - ddof)
    return mean, math.sqrt(var)


def over_folds(per_fold: Mapping[Any, Mapping[str, float]]) -> dict[str, float]:
    """Each metric's mean and (population) std over the folds of a protocol with several splits, as
    `<metric>_fold_mean` and `<metric>_fold_std` (Video-STAR Table 2: mean ± std over three splits). `per_fold` is
    {fold: {metric: value}}; a metric some fold lacks counts as NaN there, which makes its mean and std NaN.

    >>> m = over_folds({1: {"top1": 0.5}, 2: {"top1": 0.7}, 3: {"top1": 0.6}})
    >>> round(m["top1_fold_mean"], 12), round(m["top1_fold_std"], 12)  # deviations -0.1, 0.1, 0: sqrt(0.02 / 3)
    (0.6, 0.081649658093)
    """
    out: dict[str, float] = {}
    keys = sorted({k for values in per_fold.values() for k in values})
    for key in keys:
        mean, std = mean_std([values.get(key, NAN) for values in per_fold.values()])
        out[f"{key}_fold_mean"], out[f"{key}_fold_std"] = mean, std
    return out


# -------------------------------------------------------------------------------------- quality assessment
def action_accuracy(predicted: Sequence[Any], labels: Sequence[str]) -> float:
    """Share of predicted action classes equal to the label after `rewards.videostar.labels_match` (case,
    spacing and punctuation do not matter); a missing prediction (None) is wrong.

    >>> action_accuracy(["407C", "back dive", None], ["407c", "forward dive", "109B"])
    0.3333333333333333
    """
    from rewards.videostar import labels_match

    if len(predicted) != len(labels):
        raise ValueError(f"action_accuracy: {len(predicted)} predictions but {len(labels)} labels")
    return _mean([1.0 if p is not None and labels_match(p, g) else 0.0 for p, g in zip(predicted, labels)])


def sed(predicted: Sequence[Sequence[str]], truth: Sequence[Sequence[str]]) -> float:
    """Sub-action sequence similarity (HieroAction's SED): the mean over samples of 1 - Levenshtein(P, G) / max(|P|,
    |G|), each sub-action name one symbol (`rewards.edit_similarity`). Names compare as
    `rewards.hieroaction.sub_action_key`s, as the `hier_action` reward compares them: "Take_Off", "take-off" and
    "take off" are one symbol.

    >>> sed([["take off", "twist", "entry"], []], [["take off", "entry"], ["entry"]])  # (1 - 1/3 + 0) / 2
    0.33333333333333337
    >>> sed([["Take_Off", "entry"]], [["take off", "entry"]])
    1.0
    """
    from rewards.hieroaction import sub_action_key

    if len(predicted) != len(truth):
        raise ValueError(f"sed: {len(predicted)} predicted sequences but {len(truth)} true ones")
    return _mean(
        [edit_similarity(list(map(sub_action_key, p)), list(map(sub_action_key, g))) for p, g in zip(predicted, truth)]
    )


def spearman(predicted: Sequence[float], truth: Sequence[float]) -> float:
    """Spearman's rank correlation rho (scipy.stats.spearmanr; ties get average ranks); NaN when fewer than two
    samples or either side is constant (rho is undefined there).

    >>> round(spearman([1, 2, 3, 4], [10, 20, 40, 30]), 12)  # ranks 1 2 3 4 vs 1 2 4 3: 1 - 6*2 / (4*15)
    0.8
    """
    if len(predicted) != len(truth):
        raise ValueError(f"spearman: {len(predicted)} predictions but {len(truth)} true values")
    if len(truth) < 2 or len(set(predicted)) < 2 or len(set(truth)) < 2:
        return NAN
    from scipy.stats import spearmanr

    return float(spearmanr(predicted, truth).statistic)


RL2_RANGES = ("set", "action")  # the first is the default
"""Whose range relative L2 divides by: "set", the evaluated set's true values (CoRe's and TSA's code, the values
HieroAction's tables quote); "action", the true values of the sample's action (`action_ranges`)."""


def action_ranges(truth: Sequence[float], actions: Sequence[str]) -> list[tuple[float, float]]:
    """Per sample, (y_min, y_max) of the true values of its action over the whole set (the per-action range; on
    FineDiving the action is the dive code). An action whose true values are all equal takes the whole set's range.

    >>> action_ranges([70, 90, 50, 60], ["a", "a", "b", "b"])
    [(70, 90), (70, 90), (50, 60), (50, 60)]
    >>> action_ranges([70, 90, 50], ["a", "a", "b"])  # "b" has one value: the whole set's range
    [(70, 90), (70, 90), (50, 90)]
    """
    if len(truth) != len(actions):
        raise ValueError(f"action_ranges: {len(truth)} values but {len(actions)} actions")
    groups: dict[str, list[float]] = {}
    for y, a in zip(truth, actions):
        groups.setdefault(a, []).append(y)
    whole = (min(truth), max(truth)) if truth else (0.0, 0.0)
    span = {a: (min(v), max(v)) if max(v) > min(v) else whole for a, v in groups.items()}
    return [span[a] for a in actions]


def relative_l2(
    predicted: Sequence[float], truth: Sequence[float], ranges: Sequence[tuple[float, float]] | None = None
) -> float:
    """Relative L2 distance, R-l2 = 1/K sum_k ((|y_k - y^_k|) / (y_max - y_min))^2. Lower is better.

    With `ranges=None` (the default) y_max and y_min are the largest and smallest true values of the evaluated set,
    as CoRe's and TSA's released code computes it (`(pred - true) / (true.max() - true.min())`, squared, averaged);
    their papers print it x100, HieroAction's tables print it as is, and so does this function. `ranges` gives a
    (y_min, y_max) per sample instead, e.g. `action_ranges` for the per-action range. NaN when the set's true values
    are all equal (no width to divide by).

    (HieroAction's extracted text lost the square; the CoRe and TSA values it quotes are the squared ones.)

    >>> relative_l2([80, 60], [70, 50])  # set range 70 - 50 = 20: ((10/20)^2 + (10/20)^2) / 2
    0.25
    >>> relative_l2([80, 60], [70, 50], [(50, 90), (50, 90)])  # ((10/40)^2 + (10/40)^2) / 2
    0.0625
    """
    if ranges is None:
        if len(predicted) != len(truth):
            raise ValueError(f"relative_l2: {len(predicted)} predictions but {len(truth)} true values")
        if not truth or max(truth) == min(truth):
            return NAN
        ranges = [(min(truth), max(truth))] * len(truth)
    if not len(predicted) == len(truth) == len(ranges):
        raise ValueError(f"relative_l2: {len(predicted)} predictions, {len(truth)} true values, {len(ranges)} ranges")
    terms = []
    for p, y, (lo, hi) in zip(predicted, truth, ranges):
        if not hi > lo:
            raise ValueError(f"relative_l2: the range ({lo}, {hi}) of a sample has no width")
        terms.append(((y - p) / (hi - lo)) ** 2)
    return _mean(terms)


def mean_temporal_iou(predicted: Sequence[Sequence[Any]], truth: Sequence[Sequence[Any]], mode: str = "max") -> float:
    """Mean over samples of the temporal IoU of predicted and true (start, end) segments under the optimal one-to-one
    matching (`rewards.temporal_iou`): with `mode="max"` (the default) each sample's matched IoU sum is divided by
    max(#predicted, #true), so missing and extra segments cost; with `mode="paper"` by the number of matched pairs
    (HieroAction's tIoU, which one exact segment out of three, or a spray of segments, drives to 1.0).

    >>> mean_temporal_iou([[(0, 2), (4, 6)], []], [[(4, 5), (0, 2)], [(1, 2)]])  # (1.5 / 2 + 0) / 2
    0.375
    >>> one_of_three = [[(0, 2)]], [[(0, 2), (4, 6), (8, 9)]]
    >>> mean_temporal_iou(*one_of_three), mean_temporal_iou(*one_of_three, mode="paper")
    (0.3333333333333333, 1.0)
    """
    if len(predicted) != len(truth):
        raise ValueError(f"mean_temporal_iou: {len(predicted)} predicted lists but {len(truth)} true ones")
    return _mean([temporal_iou(p, g, mode=mode) for p, g in zip(predicted, truth)])


# --------------------------------------------------------------------------------------------------- MCQ
def mcq_accuracy(letters: Sequence[str], answers: Sequence[str], categories: Sequence[str]) -> dict[str, Any]:
    """FineBench's accuracy: overall, per category, and the blank rate (a reply with no readable letter, "").
    A blank is wrong. Per category: {"accuracy", "blank_rate", "n"}.

    >>> m = mcq_accuracy(["A", "", "C", "B"], ["A", "B", "D", "B"], ["move", "move", "object", "object"])
    >>> m["accuracy"], m["blank_rate"], m["per_category"]["move"]
    (0.5, 0.25, {'accuracy': 0.5, 'blank_rate': 0.5, 'n': 2})
    """
    if not len(letters) == len(answers) == len(categories):
        raise ValueError(f"mcq_accuracy: {len(letters)} letters, {len(answers)} answers, {len(categories)} categories")
    correct = [1.0 if p and p == a else 0.0 for p, a in zip(letters, answers)]
    blank = [0.0 if p else 1.0 for p in letters]
    per: dict[str, Any] = {}
    for cat in sorted(set(categories)):
        idx = [i for i, c in enumerate(categories) if c == cat]
        per[cat] = {
            "accuracy": _mean([correct[i] for i in idx]),
            "blank_rate": _mean([blank[i] for i in idx]),
            "n": len(idx),
        }
    return {"accuracy": _mean(correct), "blank_rate": _mean(blank), "per_category": per}


# ----------------------------------------------------------------------------------------------- describe
def held_in_out(scores: Sequence[float], held: Sequence[str]) -> dict[str, float]:
    """GPS's semantic entailment score (already one value per sample) averaged on the held-in set, the held-out
    set and the whole benchmark. `held[i]` is "in" or "out" (categories seen in tuning or not).

    >>> held_in_out([1.0, 0.5, 0.25], ["in", "out", "out"])
    {'held_in': 1.0, 'held_out': 0.375, 'whole': 0.5833333333333334}
    """
    if len(scores) != len(held):
        raise ValueError(f"held_in_out: {len(scores)} scores but {len(held)} held tags")
    return {
        "held_in": _mean([s for s, h in zip(scores, held) if h == "in"]),
        "held_out": _mean([s for s, h in zip(scores, held) if h == "out"]),
        "whole": _mean(scores),
    }


# ------------------------------------------------------------------------------------------- LLM judge
JUDGE_PROMPT = (
    "You are an intelligent chatbot designed for evaluating the correctness of generative outputs for question-answer "
    "pairs. Your task is to compare the predicted answer with the correct answer and determine if they match "
    "meaningfully. Here's how you can accomplish the task:\n\n##INSTRUCTIONS:\n\n"
    "- Check whether the reasoning process is clear, complete, and logically structured. Well-organized step-by-step "
    "explanations are preferred over vague or disjointed answers.\n"
    "- Determine if the predicted answer semantically aligns with the reference. Synonyms, rephrasings, or partial "
    "matches are acceptable as long as the core meaning is preserved.\n"
    "- Pay attention to the accuracy of action-related details (e.g., `sub_actions`).\n\n"
    "Please evaluate the following video-based question-answer pair:\n\nQuestion: {question}\n\n"
    "Correct Answer: {answer}\n\nPredicted Answer: {prediction}\n\n"
    "Provide your evaluation only as a yes/no and score where the score is an integer value between 0 and 5, with 5 "
    "indicating the highest meaningful match.\n\n"
    "Please generate the response in the form of a Python dictionary string with keys 'pred' and 'score', where the "
    "value of 'pred' is a string of 'yes' or 'no' and the value of 'score' is an INTEGER, not a string.\n\n"
    "DO NOT PROVIDE ANY OTHER OUTPUT TEXT OR EXPLANATION. Only provide the Python dictionary string.\n\n"
    "For example, your response should look like this: {{'pred': 'yes', 'score': 4}}."
)
_PRED = re.compile(r"""['"]?pred['"]?\s*:\s*['"]?(yes|no)""", re.IGNORECASE)
_SCORE = re.compile(r"""['"]?score['"]?\s*:\s*['"]?([0-5])(?![\d.])""", re.IGNORECASE)


def judge_prompt(question: str, answer: str, prediction: str) -> str:
    """HieroAction's evaluation prompt (its Figure 4) with the three fields filled in."""
    return JUDGE_PROMPT.format(question=question, answer=answer, prediction=prediction)


def parse_judge_reply(reply: Any) -> tuple[bool | None, int | None]:
    """(yes?, score 0-5) from a judge reply like "{'pred': 'yes', 'score': 4}"; None for a part it lacks.

    >>> parse_judge_reply("{'pred': 'yes', 'score': 4}"), parse_judge_reply('{"pred": "No", "score": 0}')
    ((True, 4), (False, 0))
    >>> parse_judge_reply("I cannot tell")
    (None, None)
    """
    if not isinstance(reply, str):
        return None, None
    pred, score = _PRED.search(reply), _SCORE.search(reply)
    return (pred[1].lower() == "yes" if pred else None), (int(score[1]) if score else None)


def judge_summary(replies: Sequence[tuple[bool | None, int | None]]) -> dict[str, float]:
    """The judge's accuracy (share of "yes") and mean 0-5 score over samples; an unreadable part counts as "no" /
    0, as a wrong answer would, and is counted in `unparsed`.

    >>> judge_summary([(True, 4), (False, 1), (None, None)])
    {'judge_accuracy': 0.3333333333333333, 'judge_score': 1.6666666666666667, 'judge_unparsed': 1}
    """
    return {
        "judge_accuracy": _mean([1.0 if yes else 0.0 for yes, _ in replies]),
        "judge_score": _mean([float(s or 0) for _, s in replies]),
        "judge_unparsed": sum(1 for yes, s in replies if yes is None or s is None),
    }
