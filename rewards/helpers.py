"""Pure helpers shared by the built-in rewards and the eval metrics: segment IoU with optimal matching, sequence
edit similarity, the HieroAction score term, the GPS entailment score, Video-STAR's sub-motion weights and
FineBench's option-letter readers (ours, and the released evaluator's for comparison).

All are exported from `rewards` under these names. They take plain Python values, import nothing heavy, and
validate their arguments (ValueError naming the argument); the rewards built on them never raise.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

TIOU_MODES = ("max", "paper")  # the first is the default
SCHEMES = ("linear", "exponential")
# Said before the letter of a multiple-choice reply ("Answer: C", "The correct answer is (B)"): removed from the
# start, in this order (longer first), case-insensitive, repeatedly. It holds every prefix of FineBench's released
# evaluator and of the VideoMME reader it derives from, plus the shorter forms models write.
MCQ_ANSWER_PREFIXES = (
    "The best answer is",
    "The correct answer is",
    "The answer is",
    "The best option is",
    "The correct option is",
    "The correct answer",
    "The correct option",
    "The answer",
    "Best answer:",
    "Best option:",
    "Correct answer:",
    "My answer is",
    "Answer is",
    "Answer:",
    "Answer",
    "Option:",
    "Option",
)
# The released evaluator's list, as its code spells it: two missing commas glue "The best option is" to "The
# correct option is" and "Best answer:" to "Best option:", so those four are never removed there.
RELEASED_MCQ_PREFIXES = (
    "The best answer is",
    "The correct answer is",
    "The answer is",
    "The answer",
    "The best option isThe correct option is",
    "Best answer:Best option:",
    "Answer:",
    "Option:",
)
_PREFIX = re.compile("|".join(re.escape(p) for p in MCQ_ANSWER_PREFIXES), re.IGNORECASE)
_OPENERS = " \t\n:*#([{\"'"  # markdown, brackets and quotes before the letter: "**(C)**", "[B]"
_TOKEN_PUNCT = re.compile(r"[.()\[\],:;!*#{}\"'`<>/]")  # VLMEvalKit's token separators, quotes, tags, slashes


def to_float(x: Any) -> float | None:
    """`x` as a finite float, or None (bools, non-numbers, NaN, infinities and ints too large for a float).

    >>> to_float(3), to_float("2.5"), to_float(float("nan")), to_float(True), to_float(10**400)
    (3.0, 2.5, None, None, None)
    """
    if isinstance(x, bool) or not isinstance(x, (int, float, str, np.integer, np.floating)):
        return None
    try:
        value = float(x)
    except (ValueError, OverflowError):
        return None
    return value if math.isfinite(value) else None


def segment_iou(a: Sequence[Any], b: Sequence[Any]) -> float:
    """IoU of two time segments (start, end). A segment that is not two finite numbers with start <= end (reversed,
    NaN, missing) has IoU 0 with everything. Two zero-length segments have IoU 1 when equal, else 0.

    >>> segment_iou((0, 2), (1, 3))  # overlap 1, union 3
    0.3333333333333333
    """
    sa, sb = _segment(a), _segment(b)
    if sa is None or sb is None:
        return 0.0
    inter = min(sa[1], sb[1]) - max(sa[0], sb[0])
    union = max(sa[1], sb[1]) - min(sa[0], sb[0])
    if union <= 0.0:  # both are the same point, or two points
        return 1.0 if sa == sb else 0.0
    iou = max(0.0, inter) / union
    return iou if math.isfinite(iou) else 0.0  # inf - inf on segments near the float limit


def _segment(seg: Any) -> tuple[float, float] | None:
    try:
        if isinstance(seg, (str, bytes)) or len(seg) != 2:
            return None
        start, end = to_float(seg[0]), to_float(seg[1])
    except TypeError:
        return None
    if start is None or end is None or start > end:
        return None
    return start, end


def temporal_iou(pred: Sequence[Any], gt: Sequence[Any], mode: str = "max") -> float:
    """Temporal IoU between predicted and ground-truth segments under the optimal one-to-one matching.

    Segments are (start, end) pairs; the matching maximises the total IoU (Hungarian, scipy's
    `linear_sum_assignment`). `mode="max"` (the default) divides the total by max(#pred, #gt), so a missing or
    an extra segment costs; `mode="paper"` divides it by the number of matched pairs, min(#pred, #gt)
    (HieroAction's R_temp, 1/|M| over the matched pairs). The paper's form can be gamed: one exact segment out
    of three true ones, or a spray of many segments that covers every true one, scores 1.0 there (1/3 and
    #gt/#pred with "max"). 1.0 when both lists are empty, 0.0 when exactly one is. Malformed segments (see
    `segment_iou`) take part in the matching with IoU 0. In [0, 1]; symmetric in (pred, gt); independent of the
    order of segments.

    >>> temporal_iou([(0, 2), (4, 6)], [(4, 5), (0, 2)])  # pairs: (0,2)-(0,2) IoU 1, (4,6)-(4,5) IoU 1/2
    0.75
    >>> temporal_iou([(0, 2)], [(0, 2), (4, 6)]), temporal_iou([(0, 2)], [(0, 2), (4, 6)], mode="paper")
    (0.5, 1.0)
    """
    if mode not in TIOU_MODES:
        raise ValueError(f"temporal_iou: mode must be one of {TIOU_MODES}, got {mode!r}")
    pred, gt = list(pred), list(gt)
    if not pred and not gt:
        return 1.0
    if not pred or not gt:
        return 0.0
    from scipy.optimize import linear_sum_assignment

    ious = np.array([[segment_iou(p, g) for g in gt] for p in pred], dtype=np.float64)
    rows, cols = linear_sum_assignment(ious, maximize=True)
    total = float(ious[rows, cols].sum())
    denom = len(rows) if mode == "paper" else max(len(pred), len(gt))
    return min(1.0, max(0.0, total / denom))


def edit_similarity(pred_seq: Sequence[str], gt_seq: Sequence[str]) -> float:
    """1 - Levenshtein distance / max length, over sequences of strings (each string is one symbol, compared
    exactly; normalise them first if needed). 1.0 when both are empty. In [0, 1].

    >>> edit_similarity(["take off", "twist", "entry"], ["take off", "somersault", "entry"])  # 1 substitution
    0.6666666666666667
    >>> edit_similarity([], [])
    1.0
    """
    from rapidfuzz.distance import Levenshtein

    pred_seq, gt_seq = [str(s) for s in pred_seq], [str(s) for s in gt_seq]
    longest = max(len(pred_seq), len(gt_seq))
    if longest == 0:
        return 1.0
    return 1.0 - Levenshtein.distance(pred_seq, gt_seq) / longest


def score_reward(
    q: Any,
    q_star: Any,
    d: Any = None,
    d_star: Any = None,
    lam_q: float = 1.0,
    lam_d: float = 1.0,
) -> float:
    """HieroAction's assessment reward, exp(-lam_q (q - q*)^2 - lam_d (d - d*)^2), in [0, 1].

    The difficulty term is left out when `d` or `d_star` is None. Values are used as given (normalise them
    before calling if wanted). A prediction that is not a finite number (`q`, or `d` when `d_star` is given)
    scores 0.0; a non-finite reference or a negative lam raises ValueError.

    >>> round(score_reward(0.8, 0.6), 6)  # exp(-0.04)
    0.960789
    >>> round(score_reward(0.8, 0.6, d=3.0, d_star=3.5, lam_q=10, lam_d=2), 6)  # exp(-0.4 - 0.5)
    0.40657
    """
    for name, lam in (("lam_q", lam_q), ("lam_d", lam_d)):
        if to_float(lam) is None or lam < 0:
            raise ValueError(f"score_reward: {name} must be a finite number >= 0, got {lam!r}")
    if to_float(q_star) is None or (d_star is not None and to_float(d_star) is None):
        raise ValueError(f"score_reward: the references must be finite numbers, got q*={q_star!r}, d*={d_star!r}")
    qf = to_float(q)
    if qf is None:
        return 0.0
    dq = qf - float(q_star)
    exponent = lam_q * (dq * dq)  # x * x, not x ** 2: a huge x gives inf instead of OverflowError
    if d is not None and d_star is not None:
        df = to_float(d)
        if df is None:
            return 0.0
        dd = df - float(d_star)
        exponent += lam_d * (dd * dd)
    if math.isnan(exponent):  # 0 * inf
        return 0.0
    return min(1.0, math.exp(-exponent))


def entailment_score(labels: Sequence[int]) -> float:
    """GPS's semantic entailment score of K labels (2 entail, 1 neutral, 0 contradict): ((Ne - Nc)/K + 1)/2.

    In [0, 1]: all entailed 1.0, all neutral 0.5, all contradicted 0.0. Raises ValueError on an empty list or a
    label outside {0, 1, 2}.

    >>> entailment_score([2, 2, 1, 0])  # Ne=2, Nc=1, K=4: (1/4 + 1)/2
    0.625
    """
    labels = list(labels)
    if not labels:
        raise ValueError("entailment_score: needs at least one label")
    bad = [x for x in labels if isinstance(x, bool) or x not in (0, 1, 2)]
    if bad:
        raise ValueError(f"entailment_score: labels must be 0, 1 or 2, got {bad[0]!r}")
    entailed, contradicted = labels.count(2), labels.count(0)
    return ((entailed - contradicted) / len(labels) + 1.0) / 2.0


def submotion_weights(n: int, scheme: str = "linear") -> list[float]:
    """Weights of n ranked sub-motions (rank 1 first), summing to 1 (an empty list for n = 0).

    `linear` (Video-STAR's released code): the k-th weighs (n - k + 1) / (1 + 2 + ... + n).
    `exponential` (the paper's prose): the k-th weighs 2^-(k-1), divided by the sum over k = 1..n.

    >>> submotion_weights(3)  # 3/6, 2/6, 1/6
    [0.5, 0.3333333333333333, 0.16666666666666666]
    >>> submotion_weights(3, "exponential")  # 1, 1/2, 1/4 over 7/4
    [0.5714285714285714, 0.2857142857142857, 0.14285714285714285]
    """
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
        raise ValueError(f"submotion_weights: n must be an int >= 0, got {n!r}")
    if scheme not in SCHEMES:
        raise ValueError(f"submotion_weights: scheme must be one of {SCHEMES}, got {scheme!r}")
    if scheme == "linear":
        total = n * (n + 1) / 2
        return [(n - k + 1) / total for k in range(1, n + 1)]
    raw = [math.ldexp(1.0, -(k - 1)) for k in range(1, n + 1)]  # 2^-(k-1), exact; underflows to 0 far down
    total = math.fsum(raw)
    return [w / total for w in raw]


def parse_mcq_letter(text: Any, options: Mapping[str, Any] | None = None) -> str:
    """The option letter of a multiple-choice reply, or "" when it names none (a blank). In order:

    1. the answer prefixes (`MCQ_ANSWER_PREFIXES`: "Answer:", "The answer is", "Option", ...) and any opening
       bracket, quote or markdown are removed from the start, then a capital letter at the start that stands
       alone ("C", "C.", "C)", "(C)", "C: walk", "C walk") is the answer;
    2. else the one letter that stands alone as a word anywhere ("I think B.", "..., so the answer is (D)");
       several different ones ("B or C") are no answer;
    3. else, with `options` {letter: text}, the option whose text the reply is (compared lower case with
       punctuation and repeated spaces removed), else the one option whose text the reply contains as whole
       words; none or several: "".

    The letters are the keys of `options` (A-D in FineBench's records), A-E without options. Lower-case letters
    are never read ("c" is blank), and a capital inside a word never counts ("Bend/bow" is not B), where
    FineBench's released evaluator reads the first capital A-D anywhere (`released_mcq_letter`); "A man walks"
    still reads as A in both: prompt for a bare letter.

    >>> parse_mcq_letter("Answer: C"), parse_mcq_letter("The answer is (B) stand"), parse_mcq_letter("I think D.")
    ('C', 'B', 'D')
    >>> opts = {"A": "sit", "B": "stand", "C": "walk", "D": "bend/bow (at the waist)"}
    >>> parse_mcq_letter("Bend/bow (at the waist).", opts), parse_mcq_letter("they walk or stand", opts)
    ('D', '')
    """
    if not isinstance(text, str):
        return ""
    letters = _option_letters(options)
    rest = text.strip()
    while True:  # "Answer: Option (C)": every prefix, in any order
        rest = rest.lstrip(_OPENERS)
        m = _PREFIX.match(rest)
        if not m:
            break
        rest = rest[m.end() :]
    if rest[:1] in letters and (len(rest) == 1 or not rest[1].isalnum()):
        return rest[0]
    alone = {t for t in _TOKEN_PUNCT.sub(" ", text).split() if t in letters}
    if len(alone) == 1:
        return alone.pop()
    return option_text_letter(text, options) if options else ""


def _option_letters(options: Mapping[str, Any] | None) -> frozenset[str]:
    if isinstance(options, Mapping) and options:
        return frozenset(k for k in options if isinstance(k, str) and len(k) == 1 and k.isupper())
    return frozenset("ABCDE")


def _normalize(text: str) -> str:
    """Lower case, every run of non-alphanumerics one space: "Bend/bow (at the waist)." -> "bend bow at the waist"."""
    return " ".join(re.sub(r"[^0-9a-z]+", " ", text.lower()).split())


def option_text_letter(text: Any, options: Mapping[str, Any] | None) -> str:
    """The letter of the option a reply names by its text: the one option equal to the reply, else the one option
    contained in it as whole words, both after `_normalize`; "" when none or several match.

    >>> opts = {"A": "sit", "B": "walk"}
    >>> option_text_letter("Walk.", opts), option_text_letter("they walk", opts), option_text_letter("sit, walk", opts)
    ('B', 'B', '')
    """
    if not isinstance(text, str) or not isinstance(options, Mapping):
        return ""
    reply = _normalize(text)
    texts = {k: _normalize(str(v)) for k, v in options.items() if _normalize(str(v))}
    if not reply:
        return ""
    found = [k for k, v in texts.items() if v == reply] or [k for k, v in texts.items() if f" {v} " in f" {reply} "]
    return found[0] if len(found) == 1 else ""


def released_mcq_letter(text: Any, options: Mapping[str, Any] | None = None) -> str:
    """The letter FineBench's released evaluator (`joslefaure/FineBench_eval`, a VLMEvalKit fork) reads, for
    comparing with the paper's numbers: remove `RELEASED_MCQ_PREFIXES` wherever they occur, take the first capital
    A-D anywhere; without one, VLMEvalKit's exact-matching fallback: the one letter A-D standing alone as a word,
    else the one option whose lower-cased text occurs in the lower-cased reply; else "".

    >>> released_mcq_letter("Answer: C"), released_mcq_letter("Best option: C"), released_mcq_letter("A man walks")
    ('C', 'B', 'A')
    >>> released_mcq_letter("Bend/bow (at the waist)", {"B": "stand", "D": "bend/bow (at the waist)"})
    'B'
    """
    if not isinstance(text, str):
        return ""
    rest = text.strip()
    for prefix in RELEASED_MCQ_PREFIXES:
        rest = rest.replace(prefix, "")
    first = re.search(r"[ABCD]", rest)
    if first:
        return first[0]
    # (VLMEvalKit's next step, a letter standing alone, cannot find one here: there is no capital A-D left)
    found = [k for k, v in (options or {}).items() if str(v).lower() in text.lower()]
    return found[0] if len(found) == 1 else ""
