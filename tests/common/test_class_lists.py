"""The gluoncv class lists: sizes are the datasets' published class counts, names as the datasets spell them."""

import pytest

from common.class_lists import class_list, readable


@pytest.mark.parametrize(
    "dataset,count,member",
    [
        ("hmdb51", 51, "climb_stairs"),
        ("ucf101", 101, "ApplyEyeMakeup"),
        ("kinetics400", 400, "abseiling"),
        ("kinetics700", 700, "alligator_wrestling"),
        ("ssv2", 174, "Approaching something with your camera"),
    ],
)
def test_class_list_sizes_and_members(dataset, count, member):
    names = class_list(dataset)
    assert len(names) == count
    assert len(set(names)) == count
    assert member in names


def test_unknown_dataset_is_refused():
    with pytest.raises(KeyError, match="kinetics400"):
        class_list("kinetics9000")


@pytest.mark.parametrize(
    "raw,words",
    [("climb_stairs", "climb stairs"), ("ApplyEyeMakeup", "apply eye makeup"), ("YoYo", "yo yo"), ("hug", "hug")],
)
def test_readable(raw, words):
    assert readable(raw) == words
