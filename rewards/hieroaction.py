"""HieroAction's rewards for action quality assessment: SAR format, temporal IoU, hierarchical action, score.

The model's last turn follows Stepwise Action Reasoning (SAR): four tagged blocks in order, the answer a JSON
object with the action class, the timed sub-actions, the difficulty and the score:

    <look> A female diver on the 10 m platform, back to the water. </look>
    <recognition> Phase: take-off, Observation: ..., Conclusion: ... </recognition>
    <assessment> Clean entry with little splash; 3.2 x 25.5 ... </assessment>
    <answer>{"action": "407C", "sub_actions": [{"name": "take off", "start": 0.0, "end": 0.4},
             {"name": "entry", "start": 1.2, "end": 1.5}], "difficulty": 3.2, "score": 81.5}</answer>

The answer rewards read the last `<answer>` whatever precedes it, so they score the Table 4 ablation's other
reply forms alike: think-then-answer (`<think> ... </think><answer>{...}</answer>`, "CoT") and the answer alone
("w/o CoT"); `sar_format` checks either with `style: cot` / `style: direct`.

They are scored against an `aqa` record (common/schema.py): `sub_actions` [{name, start, end}],
`score`, `difficulty`, `score_range` [lo, hi], and optionally `label` (the action class). Times are seconds
(any unit works if the record uses the same). Nothing here raises on any completion text; the values stay in
[0, 1].
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from rewards.helpers import edit_similarity, score_reward, temporal_iou, to_float
from rewards.registry import register
from rewards.videostar import extract_answer, labels_match, normalize_label

if TYPE_CHECKING:
    from rollout.trajectory import Trajectory

SAR_TAGS = ("look", "recognition", "assessment", "answer")
FORMAT_STYLES = {"sar": SAR_TAGS, "cot": ("think", "answer"), "direct": ("answer",)}
"""The blocks of each reply style `sar_format` checks, in order."""
REASONING_TAGS = ("think", "look", "recognition", "assessment")
MAX_ANSWER_CHARS = 200_000  # a longer answer is not a plausible SAR answer; refusing it bounds the JSON parse


@dataclass
class SubAction:
    """One predicted sub-action; `start`/`end` are None when missing or not finite numbers."""

    name: str
    start: float | None = None
    end: float | None = None


@dataclass
class SarAnswer:
    """What `parse_sar_answer` read from the JSON answer; a field is None (or empty) when missing or malformed."""

    action: str | None = None
    sub_actions: list[SubAction] = field(default_factory=list)
    difficulty: float | None = None
    score: float | None = None


def _block_gaps(text: str, tags: tuple[str, ...]) -> list[str] | None:
    """The text before, between and after the `tags` blocks when each is opened and closed exactly once, in that
    order, not nested; else None."""
    pos, gaps = 0, []
    for tag in tags:
        opening, closing = f"<{tag}>", f"</{tag}>"
        if text.count(opening) != 1 or text.count(closing) != 1:
            return None
        start, end = text.find(opening), text.find(closing)
        if start < pos or end < start:
            return None
        gaps.append(text[pos:start])
        pos = end + len(closing)
    gaps.append(text[pos:])
    return gaps


def is_sar_format(text: Any, strict: bool = False) -> bool:
    """Whether `text` holds `<look>`, `<recognition>`, `<assessment>` and `<answer>` blocks, each opened and
    closed exactly once, in that order, not nested. With `strict`, nothing but whitespace may stand before,
    between or after the blocks; otherwise any text may (the paper asks only that all four appear in order).

    >>> is_sar_format("<look>a</look> <recognition>b</recognition> <assessment>c</assessment> <answer>d</answer>")
    True
    >>> is_sar_format("<look>a</look> <assessment>c</assessment> <recognition>b</recognition> <answer>d</answer>")
    False
    """
    gaps = _block_gaps(text, SAR_TAGS) if isinstance(text, str) else None
    return gaps is not None and (not strict or not any(g.strip() for g in gaps))


def is_style_format(text: Any, style: str = "sar", strict: bool = False) -> bool:
    """Whether `text` has the reply form of a target `style` (HieroAction's Table 4 variants, `FORMAT_STYLES`):

    - "sar": the four SAR blocks (`is_sar_format`);
    - "cot" (think-then-answer): one `<think>` block, then one `<answer>` block, and no SAR reasoning tag
      (`<look>`, `<recognition>`, `<assessment>`); with `strict` only whitespace around the blocks;
    - "direct" (no reasoning): one `<answer>` block with nothing but whitespace around it, and no reasoning tag
      anywhere; `strict` changes nothing (text beside the answer would be reasoning).

    Raises ValueError for another style.

    >>> is_style_format("<think>three phases, clean entry</think> <answer>{}</answer>", "cot")
    True
    >>> is_style_format("Phases: three. <answer>{}</answer>", "direct")
    False
    """
    if style not in FORMAT_STYLES:
        raise ValueError(f"format style must be one of {', '.join(FORMAT_STYLES)}, got {style!r}")
    if style == "sar":
        return is_sar_format(text, strict=strict)
    if not isinstance(text, str):
        return False
    others = [t for t in REASONING_TAGS if t not in FORMAT_STYLES[style]]
    if any(f"<{t}>" in text or f"</{t}>" in text for t in others):
        return False
    gaps = _block_gaps(text, FORMAT_STYLES[style])
    return gaps is not None and (not (strict or style == "direct") or not any(g.strip() for g in gaps))


@register("sar_format")
def sar_format(traj: Trajectory, record: dict, strict: bool = False, style: str = "sar") -> float:
    """1.0 when `traj.final_text` has the reply form of `style` (see `is_style_format`), else 0.0: by default the
    four SAR blocks in order; `style: cot` think-then-answer, `style: direct` the answer alone (the Table 4
    ablation's "CoT" and "w/o CoT" targets of `data_builders.hieroaction_sar --style`). A bad `style` raises
    (counted as this reward's error).

    >>> from rollout.trajectory import Trajectory
    >>> text = "<look>x</look><recognition>y</recognition><assessment>z</assessment><answer>{}</answer>"
    >>> sar_format(Trajectory("a1", 0, [], [], [], [], final_text=text), {})
    1.0
    >>> sar_format(Trajectory("a1", 0, [], [], [], [], final_text=text), {}, style="cot")
    0.0
    """
    return 1.0 if is_style_format(getattr(traj, "final_text", None), style, strict=bool(strict)) else 0.0


def _json_object(content: str) -> dict | None:
    """The JSON object in `content` (optionally in a ``` fence or with text around it), or None."""
    if len(content) > MAX_ANSWER_CHARS:
        return None
    start, end = content.find("{"), content.rfind("}")
    if start < 0 or end < start:
        return None
    try:
        # NaN / Infinity literals become None instead of non-finite floats
        obj = json.loads(content[start : end + 1], parse_constant=lambda _: None)
    except (ValueError, RecursionError):  # malformed JSON, ints over Python's digit limit, absurd nesting
        return None
    return obj if isinstance(obj, dict) else None


def _sub_action(item: Any) -> SubAction | None:
    if isinstance(item, str):
        return SubAction(name=item)
    if not isinstance(item, dict):
        return None
    name = item.get("name")
    return SubAction(
        name=name if isinstance(name, str) else "",
        start=to_float(item.get("start")),
        end=to_float(item.get("end")),
    )


def parse_sar_answer(text: Any) -> SarAnswer | None:
    """The JSON object inside the last `<answer>...</answer>` of `text`, as a `SarAnswer`; None when there is no
    closed answer or it holds no JSON object. Never raises.

    Keys read: `action` (string), `sub_actions` (a list of {name, start, end}; a bare string is a name without
    times), `difficulty` and `score` (numbers, or numeric strings). A malformed field becomes None (or an empty
    name); NaN, infinities and numbers too large for a float become None. Text or a ``` fence around the object
    is ignored (the object runs from the first `{` to the last `}`).

    >>> a = parse_sar_answer('<answer>{"action": "407C", "sub_actions": [{"name": "entry", "start": 1.2, '
    ...                      '"end": 1.5}], "difficulty": 3.2, "score": "81.5"}</answer>')
    >>> a.action, a.sub_actions[0].name, a.sub_actions[0].end, a.difficulty, a.score
    ('407C', 'entry', 1.5, 3.2, 81.5)
    >>> parse_sar_answer("<answer>81.5</answer>") is None
    True
    """
    content = extract_answer(text)
    obj = _json_object(content) if content is not None else None
    if obj is None:
        return None
    action = obj.get("action")
    items = obj.get("sub_actions")
    subs = [s for s in map(_sub_action, items) if s is not None] if isinstance(items, list) else []
    return SarAnswer(
        action=action if isinstance(action, str) else None,
        sub_actions=subs,
        difficulty=to_float(obj.get("difficulty")),
        score=to_float(obj.get("score")),
    )


def _record_sub_actions(record: Any) -> list[dict] | None:
    subs = record.get("sub_actions") if isinstance(record, dict) else None
    if not isinstance(subs, list) or not all(isinstance(s, dict) for s in subs):
        return None
    return subs


@register("temporal_iou")
def temporal_iou_reward(traj: Trajectory, record: dict, mode: str = "max") -> float | None:
    """Temporal IoU between the predicted and the record's sub-action segments under the optimal one-to-one
    matching (`rewards.temporal_iou`). `mode` "max" (the default) divides the matched IoU sum by max(#pred, #gt), so
    missing and extra segments cost; "paper" is HieroAction's R_temp, the mean over the matched pairs, which gives
    1.0 to one exact segment out of three, or to a spray of segments that covers every true one.

    Reads: `sub_actions[*].start/end` of the SAR answer (see `parse_sar_answer`) and `record["sub_actions"]`.
    A predicted sub-action without valid times (missing, NaN, end < start) is a segment with IoU 0. No parsable
    answer scores 0.0; both lists empty 1.0. None when the record has no `sub_actions` list.

    >>> from rollout.trajectory import Trajectory
    >>> text = '<answer>{"sub_actions": [{"name": "a", "start": 0, "end": 2}]}</answer>'
    >>> temporal_iou_reward(Trajectory("a1", 0, [], [], [], [], final_text=text),
    ...                     {"sub_actions": [{"name": "a", "start": 1, "end": 3}]})  # overlap 1 / union 3
    0.3333333333333333
    """
    gt = _record_sub_actions(record)
    if gt is None:
        return None
    answer = parse_sar_answer(getattr(traj, "final_text", None))
    if answer is None:
        return 0.0
    pred_segments = [(s.start, s.end) for s in answer.sub_actions]
    return temporal_iou(pred_segments, [(s.get("start"), s.get("end")) for s in gt], mode=mode)


def sub_action_key(name: Any) -> str:
    """The form in which sub-action names compare, in the `hier_action` reward and in eval's SED alike:
    `normalize_label` (Unicode NFKC, case-folded, every run of punctuation, underscores, hyphens and whitespace made
    one space) with the spaces then removed, as action labels compare (`labels_match`).

    >>> sub_action_key("Take_Off"), sub_action_key(" take-off "), sub_action_key("take  off")
    ('takeoff', 'takeoff', 'takeoff')
    """
    return normalize_label(name).replace(" ", "")


@register("hier_action")
def hier_action(traj: Trajectory, record: dict, alpha: float = 0.5, label_field: str = "label") -> float | None:
    """HieroAction's hierarchical action reward: alpha * [action == label] + (1 - alpha) * edit similarity of the
    sub-action name sequences (`rewards.edit_similarity`: 1 - edit distance / max length).

    Reads: `action` and `sub_actions[*].name` of the SAR answer; `record[label_field]` (the action class, default
    `label`) and `record["sub_actions"][*].name`. Sub-action names compare as `sub_action_key`s (eval's SED
    compares them the same way), labels with `labels_match` (as `accuracy` does). When the record has no
    `label_field` the class term is left out and the value is the edit similarity alone. No parsable answer scores
    0.0. None when the record has no `sub_actions`.

    >>> from rollout.trajectory import Trajectory
    >>> text = '<answer>{"action": "407C", "sub_actions": ["take off", "twist", "entry"]}</answer>'
    >>> rec = {"label": "407c", "sub_actions": [{"name": n, "start": 0, "end": 1} for n in ("take_off", "entry")]}
    >>> round(hier_action(Trajectory("a1", 0, [], [], [], [], final_text=text), rec), 6)  # 0.5 + 0.5 * (1 - 1/3)
    0.833333
    """
    if to_float(alpha) is None or not 0.0 <= alpha <= 1.0:
        raise ValueError(f"hier_action: alpha must be in [0, 1], got {alpha!r}")
    gt = _record_sub_actions(record)
    if gt is None:
        return None
    answer = parse_sar_answer(getattr(traj, "final_text", None))
    if answer is None:
        return 0.0
    sub = edit_similarity(
        [sub_action_key(s.name) for s in answer.sub_actions], [sub_action_key(s.get("name")) for s in gt]
    )
    label = record.get(label_field)
    if not isinstance(label, str) or not label.strip():
        return sub
    cls = 1.0 if answer.action is not None and labels_match(answer.action, label) else 0.0
    return alpha * cls + (1.0 - alpha) * sub


def record_difficulty(record: Any) -> float | None:
    """The record's difficulty, or None when it has none: no finite `difficulty`, or `meta.has_difficulty` false
    (the builders of datasets without one, FineFS and LOGO, write 0.0 there because the schema wants a number).

    >>> finefs = {"difficulty": 0.0, "meta": {"has_difficulty": False}}
    >>> record_difficulty({"difficulty": 3.2}), record_difficulty(finefs)
    (3.2, None)
    """
    if not isinstance(record, dict):
        return None
    meta = record.get("meta")
    if isinstance(meta, dict) and meta.get("has_difficulty") is False:
        return None
    return to_float(record.get("difficulty"))


def _normalizer(record: dict, normalize: str, difficulty_range: Any) -> tuple[Any, Any]:
    """Two functions mapping a score and a difficulty onto the scale the reward compares them on."""
    if normalize == "none":
        return (lambda x: x), (lambda x: x)
    if normalize != "range":
        raise ValueError(f"aqa_score: normalize must be 'range' or 'none', got {normalize!r}")

    def span(lo_hi: Any, what: str) -> tuple[float, float]:
        pair = lo_hi if isinstance(lo_hi, (list, tuple)) and len(lo_hi) == 2 else (None, None)
        lo, hi = to_float(pair[0]), to_float(pair[1])
        if lo is None or hi is None or not lo < hi:
            raise ValueError(f"aqa_score: record {record.get('id', '?')!r}: {what} must be [lo, hi], lo < hi")
        return lo, hi - lo

    q_lo, q_width = span(record.get("score_range"), "field 'score_range'")
    d_lo, d_width = span(difficulty_range, "args.difficulty_range") if difficulty_range else (q_lo, q_width)
    return (lambda x: (x - q_lo) / q_width), (lambda x: (x - d_lo) / d_width)


@register("aqa_score")
def aqa_score(
    traj: Trajectory,
    record: dict,
    lam_q: float = 1.0,
    lam_d: float = 1.0,
    normalize: str = "range",
    difficulty_range: list | None = None,
    use_difficulty: bool = True,
) -> float | None:
    """HieroAction's assessment reward, exp(-lam_q (q - q*)^2 - lam_d (d - d*)^2) (`rewards.score_reward`).

    Reads: `score` and `difficulty` of the SAR answer; `record["score"]`, `record["difficulty"]`,
    `record["score_range"]`. With `normalize="range"` (default) scores become (x - lo) / (hi - lo) over the
    record's `score_range`, and so do difficulties unless `difficulty_range: [lo, hi]` is given (advisable: a
    difficulty error is tiny on a 0-100 score scale); `normalize="none"` compares raw values. The difficulty
    term is used when `use_difficulty` and the record has a difficulty (`record_difficulty`: a record whose
    `meta.has_difficulty` is false, as FineFS's and LOGO's are, has none, whatever its `difficulty` field holds);
    then a prediction without a valid difficulty scores 0.0, as does one without a valid score. Without the term
    the reward is exp(-lam_q (q - q*)^2), and a predicted difficulty is not looked at. None when the record has
    no numeric `score`.
    A record with a bad `score_range` raises (counted as that reward's error).

    >>> from rollout.trajectory import Trajectory
    >>> t = Trajectory("a1", 0, [], [], [], [], final_text='<answer>{"score": 70, "difficulty": 3.0}</answer>')
    >>> round(aqa_score(t, {"score": 80, "difficulty": 3.0, "score_range": [0, 100]}, lam_q=10), 6)  # e^-0.1
    0.904837
    """
    q_star = to_float(record.get("score")) if isinstance(record, dict) else None
    if q_star is None:
        return None
    norm_q, norm_d = _normalizer(record, normalize, difficulty_range)
    answer = parse_sar_answer(getattr(traj, "final_text", None))
    if answer is None or answer.score is None:
        return 0.0
    d_star = record_difficulty(record) if use_difficulty else None
    if d_star is None:
        return score_reward(norm_q(answer.score), norm_q(q_star), lam_q=lam_q, lam_d=lam_d)
    if answer.difficulty is None:
        return 0.0
    return score_reward(
        norm_q(answer.score), norm_q(q_star), norm_d(answer.difficulty), norm_d(d_star), lam_q=lam_q, lam_d=lam_d
    )
