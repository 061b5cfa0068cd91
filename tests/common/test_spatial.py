"""FineBench's spatial descriptors read back: the phrase the builder writes for a person points the detector
localizer's rule at that same person; and the rule's cases worked out by hand."""

from __future__ import annotations

import pytest

from common.spatial import pick_person, referred_position, spatial_descriptors


@pytest.mark.parametrize("n", range(1, 13))
def test_every_phrase_the_builder_writes_points_back_at_its_person(n):
    # n people with boxes of different sizes, in a shuffled order of ids, so that neither the id nor the size says
    # where a person stands: only the left-to-right order does
    xs = [0.07 * k for k in range(n)]
    ids = [(k * 5) % 13 for k in range(n)]
    boxes = {pid: [x, 0.1, x + 0.05, 0.3 + 0.05 * ((k * 7) % n)] for k, (pid, x) in enumerate(zip(ids, xs))}
    phrases = spatial_descriptors(boxes)
    order = list(boxes)
    for pid, phrase in phrases.items():
        picked = pick_person([boxes[p] for p in order], f"What is {phrase} doing?", frame_width=1.0)
        if phrase == "the only person":
            assert n == 1
        assert order[picked] == pid, (n, phrase)


@pytest.mark.parametrize(
    "question, expected",
    [
        ("How would you describe the movement of the person on the left?", ("left", 1)),
        ("What is the leftmost person doing with an object?", ("left", 1)),
        ("What is the rightmost person doing?", ("right", 1)),
        ("What is the third person from the left doing?", ("left", 3)),
        ("What is the 12th person from the right doing?", ("right", 12)),
        ("What is The Person In The Center doing?", ("center", 0)),
        ("What is the only person doing?", ("only", 0)),
        ("What is the person doing?", None),
        ("", None),
        # the first phrase counts (an option text could mention a place too)
        ("What is the person on the right doing?\nA. wave to the person on the left", ("right", 1)),
    ],
)
def test_referred_position(question, expected):
    assert referred_position(question) == expected


# detected boxes in pixels of a 400 px wide frame; centres x: 350, 50, 200, 120
BOXES = [[300, 0, 400, 200], [0, 0, 100, 100], [150, 0, 250, 300], [100, 50, 140, 90]]


@pytest.mark.parametrize(
    "question, expected",
    [
        ("the leftmost person", 1),
        ("the person on the left", 1),
        ("the second person from the left", 3),
        ("the second person from the right", 2),
        ("the rightmost person", 0),
        ("the fifth person from the left", 0),  # only four found: the last on that side
        ("the fifth person from the right", 1),
        # four found: the two middle ones are at x 120 and 200; 200 is nearer the centre (200)
        ("the person in the center", 2),
        ("the only person", 2),  # the largest box: 100 x 300
        ("What is happening?", 2),  # no descriptor: the largest
    ],
)
def test_pick_person_by_hand(question, expected):
    assert pick_person(BOXES, question, frame_width=400) == expected


def test_pick_person_with_nobody_and_ties():
    assert pick_person([], "the leftmost person") is None
    # two boxes of the same size: the one nearer the centre of a 100 px frame
    assert pick_person([[0, 0, 10, 10], [40, 0, 50, 10]], "the only person", frame_width=100) == 1
