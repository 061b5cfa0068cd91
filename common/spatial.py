"""FineBench's spatial descriptors, both ways: the phrase naming each person at a keyframe from everyone's boxes
(the question builder, `data_builders.finebench`), and the person a question's phrase points to among detected
boxes (FineAgent's detector localizer, `eval.fineagent`).

Boxes are [x1, y1, x2, y2] in any one unit (pixels, or fractions of the frame). People are ordered left to right
by box centre, equal centres top to bottom, so both directions use the same order.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

ORDINALS = ("first", "second", "third", "fourth", "fifth", "sixth", "seventh", "eighth", "ninth", "tenth")
_ORDINAL = r"(?P<n>" + "|".join(ORDINALS) + r"|\d+(?:st|nd|rd|th))"
# the phrases `spatial_descriptors` writes, as a question carries them
_PHRASES = (
    ("only", re.compile(r"\bthe only person\b", re.IGNORECASE)),
    ("center", re.compile(r"\bthe person in the (?:center|centre|middle)\b", re.IGNORECASE)),
    ("left", re.compile(r"\bthe (?:person on the left|leftmost person)\b", re.IGNORECASE)),
    ("right", re.compile(r"\bthe (?:person on the right|rightmost person)\b", re.IGNORECASE)),
    ("left", re.compile(r"\bthe " + _ORDINAL + r" person from the left\b", re.IGNORECASE)),
    ("right", re.compile(r"\bthe " + _ORDINAL + r" person from the right\b", re.IGNORECASE)),
)


def ordinal(n: int) -> str:
    """'first', 'second', ... for 1..10, then '11th', '12th', '21st', ...

    >>> ordinal(2), ordinal(11), ordinal(22)
    ('second', '11th', '22nd')
    """
    if n <= len(ORDINALS):
        return ORDINALS[n - 1]
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def _centre(box: Sequence[float]) -> tuple[float, float]:
    return (box[0] + box[2]) / 2, (box[1] + box[3]) / 2


def spatial_descriptors(boxes: Mapping[int, Sequence[float]]) -> dict[int, str]:
    """A phrase naming each person (by id) from the boxes [x1, y1, x2, y2] of everyone at one keyframe.

    People are ordered left to right by box centre; equal centres are ordered top to bottom, then by id, so the
    phrases are deterministic. One person: "the only person"; two: "the person on the left/right"; three or more:
    "the leftmost person", "the rightmost person", the middle one of an odd count "the person in the center", the
    others "the second person from the left" (or from the right, counting from the nearer side).

    >>> spatial_descriptors({7: [0.6, 0, 0.9, 1], 3: [0.1, 0, 0.3, 1]})
    {3: 'the person on the left', 7: 'the person on the right'}
    >>> d = spatial_descriptors({1: [0.0, 0, 0.1, 1], 2: [0.2, 0, 0.3, 1], 3: [0.4, 0, 0.5, 1], 4: [0.8, 0, 0.9, 1]})
    >>> [d[i] for i in (1, 2, 3, 4)]
    ['the leftmost person', 'the second person from the left', 'the second person from the right', \
'the rightmost person']
    """
    order = sorted(boxes, key=lambda p: (*_centre(boxes[p]), p))
    n = len(order)
    if n == 1:
        return {order[0]: "the only person"}
    if n == 2:
        return {order[0]: "the person on the left", order[1]: "the person on the right"}
    out = {}
    for i, pid in enumerate(order):
        if i == 0:
            out[pid] = "the leftmost person"
        elif i == n - 1:
            out[pid] = "the rightmost person"
        elif n % 2 == 1 and i == n // 2:
            out[pid] = "the person in the center"
        elif i < n / 2:
            out[pid] = f"the {ordinal(i + 1)} person from the left"
        else:
            out[pid] = f"the {ordinal(n - i)} person from the right"
    return out


def referred_position(question: str) -> tuple[str, int] | None:
    """Where the question's spatial descriptor puts the person: ("left", k) for the k-th from the left (the person
    on the left and the leftmost person are k = 1), ("right", k), ("center", 0), ("only", 0); None without one.
    The first phrase in the question counts.

    >>> referred_position("What is the second person from the right doing?"), referred_position("Who waves?")
    (('right', 2), None)
    >>> referred_position("How is the leftmost person interacting with the object?")
    ('left', 1)
    """
    found = []
    for kind, pattern in _PHRASES:
        m = pattern.search(question or "")
        if m:
            n = m.groupdict().get("n")
            rank = 0 if kind in ("only", "center") else 1
            if n:
                rank = ORDINALS.index(n.lower()) + 1 if n.lower() in ORDINALS else int(re.match(r"\d+", n)[0])
            found.append((m.start(), (kind, rank)))
    return min(found)[1] if found else None


def pick_person(boxes: Sequence[Sequence[float]], question: str, frame_width: float | None = None) -> int | None:
    """The index in `boxes` of the person the question's spatial descriptor points to (None when there are none).

    The boxes are put in the builder's left-to-right order, then: the k-th from the left or right (the last one
    on that side when fewer were found); "in the center" the middle one (of an even count, the one of the two
    middle ones whose centre is nearer the frame's centre, `frame_width` wide, else the left one); "the only
    person", or a question without a descriptor, the largest box (ties: the one nearer the frame's centre).

    >>> boxes = [[300, 0, 400, 200], [0, 0, 100, 200], [150, 0, 250, 100]]
    >>> pick_person(boxes, "What is the leftmost person doing?"), pick_person(boxes, "the person on the right")
    (1, 0)
    >>> pick_person(boxes, "the person in the center"), pick_person(boxes, "What is the only person doing?")
    (2, 1)
    """
    if not boxes:
        return None
    order = sorted(range(len(boxes)), key=lambda i: (*_centre(boxes[i]), i))
    where = referred_position(question)
    mid = frame_width / 2 if frame_width else None
    if where is None or where[0] == "only":
        area = [(b[2] - b[0]) * (b[3] - b[1]) for b in boxes]
        return min(order, key=lambda i: (-area[i], abs(_centre(boxes[i])[0] - mid) if mid else 0.0))
    kind, rank = where
    n = len(order)
    if kind == "left":
        return order[min(rank, n) - 1]
    if kind == "right":
        return order[n - min(rank, n)]
    middle = [order[n // 2]] if n % 2 else [order[n // 2 - 1], order[n // 2]]
    return min(middle, key=lambda i: abs(_centre(boxes[i])[0] - mid) if mid else 0.0)
