"""Video-STAR's accuracy, format and tool-usage rewards: hand-worked tables, properties on arbitrary text, speed on
adversarial input."""

from __future__ import annotations

import doctest
import math
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rewards.videostar import (
    accuracy,
    extract_answer,
    format_reward,
    is_think_then_answer,
    labels_match,
    normalize_label,
    tool_usage,
)
from rollout.trajectory import ToolCall, Trajectory, Turn


def traj(final_text: str, calls: list[ToolCall] | None = None) -> Trajectory:
    turns = [Turn(text="<tool_call>...</tool_call>", tool_calls=calls)] if calls else []
    return Trajectory("s", 0, [], [], [], [], turns=turns + [Turn(text=final_text)], final_text=final_text)


def call(ok: bool) -> ToolCall:
    return ToolCall(name="pose_estimation", arguments={}, ok=ok, response="" if ok else "error: bad_json")


@pytest.mark.parametrize(
    "text, expected",
    [
        ("<answer>run</answer>", "run"),
        ("<answer>  run \n</answer>", "run"),
        ("<think>t</think><answer>a</answer><answer>b</answer>", "b"),  # repeated: last wins
        ("<answer>a<answer>b</answer></answer>", "b"),  # nested: the last opening tag and its closing tag
        ("<answer>a</answer> then <answer>b", None),  # last one unclosed: no answer
        ("<answer>unclosed", None),
        ("no tags at all", None),
        ("</answer>reversed<answer>", None),
        ("<answer></answer>", ""),
        ("<ANSWER>run</ANSWER>", None),  # tags are lower case
        ("", None),
    ],
)
def test_extract_answer(text, expected):
    assert extract_answer(text) == expected


def test_extract_answer_non_string_is_none():
    assert extract_answer(None) is None
    assert extract_answer(42) is None


@pytest.mark.parametrize(
    "text, expected",
    [
        ("Brush_Hair", "brush hair"),
        ("  playing   GUITAR.  ", "playing guitar"),
        ("push-ups (in gym)!", "push ups in gym"),
        ("Rubik's cube", "rubik s cube"),
        ("ＡＢＣ", "abc"),  # full-width letters: NFKC
        ("__--..", ""),
        ("", ""),
    ],
)
def test_normalize_label(text, expected):
    assert normalize_label(text) == expected


@pytest.mark.parametrize(
    "pred, label, expected",
    [
        ("brush hair", "brush_hair", True),
        ("Push-Ups", "pushups", True),
        ("ApplyEyeMakeup", "apply eye makeup", True),
        ("run.", "Run", True),
        ("run", "running", False),
        ("", "run", False),
        ("...", "run", False),
    ],
)
def test_labels_match(pred, label, expected):
    assert labels_match(pred, label) is expected


@pytest.mark.parametrize(
    "final_text, answer, expected",
    [
        ("<think>legs</think><answer>Brush_Hair</answer>", "brush hair", 1.0),
        ("<answer>climb</answer>", "climb stairs", 0.0),
        ("<answer>walk</answer><answer>climb stairs</answer>", "climb stairs", 1.0),
        ("<answer>climb stairs</answer><answer>walk</answer>", "climb stairs", 0.0),
        ("<answer>climb stairs</answer><answer>climb", "climb stairs", 0.0),  # last unclosed
        ("climb stairs", "climb stairs", 0.0),  # no tag, no answer
        ("<answer>climb stairs</answer>", None, None),  # no answer in the record: not applicable
        ("<answer>climb stairs</answer>", "  ", None),
    ],
)
def test_accuracy(final_text, answer, expected):
    record = {} if answer is None else {"answer": answer}
    assert accuracy(traj(final_text), record) == expected


@pytest.mark.parametrize(
    "final_text, expected",
    [
        ("<think>a</think><answer>b</answer>", 1.0),
        ("  \n<think>a\nb</think>\n\n<answer> b </answer>\n", 1.0),
        ("<think></think><answer></answer>", 1.0),  # empty contents are allowed, as in the paper's regex
        ("<answer>b</answer>", 0.0),  # no think
        ("<think>a</think>", 0.0),  # no answer
        ("<answer>b</answer><think>a</think>", 0.0),  # wrong order
        ("<think>a</think> so <answer>b</answer>", 0.0),  # text between
        ("<think>a</think><answer>b</answer> done", 0.0),  # text after
        ("pre <think>a</think><answer>b</answer>", 0.0),  # text before
        ("<think>a</think><answer>b</answer><answer>c</answer>", 0.0),  # two answers
        ("<think>a<think>b</think><answer>c</answer>", 0.0),  # two think openings
        ("<think>a</think></think><answer>c</answer>", 0.0),
        ("<think>a</think><answer>b<answer>c</answer>", 0.0),
        ("<think>a</think><answer>b", 0.0),
        ("", 0.0),
    ],
)
def test_format(final_text, expected):
    assert format_reward(traj(final_text), {}) == expected


@pytest.mark.parametrize(
    "final_text, calls, expected",
    [
        ("<answer>squat</answer>", [call(True)], 1.0),
        ("<answer>squat</answer>", [call(False), call(True)], 1.0),
        ("<answer>squat</answer>", [call(False)], 0.0),  # only failed calls
        ("<answer>squat</answer>", [], 0.0),  # right answer, no tool
        ("<answer>lunge</answer>", [call(True)], 0.0),  # tool used, wrong answer
    ],
)
def test_tool_usage(final_text, calls, expected):
    assert tool_usage(traj(final_text, calls), {"answer": "squat"}) == expected


def test_tool_usage_not_applicable_without_answer():
    assert tool_usage(traj("<answer>squat</answer>", [call(True)]), {}) is None


PIECES = ["<answer>", "</answer>", "<think>", "</think>", "a", "b", " ", "_", "-", "\n", "<", ">", "/"]
TAGGY = st.lists(st.sampled_from(PIECES), max_size=60).map("".join)
ANY_TEXT = st.one_of(st.text(max_size=300), TAGGY)


@settings(max_examples=300, deadline=None)
@given(text=ANY_TEXT, answer=st.text(max_size=30))
def test_rewards_never_raise_and_stay_in_bounds(text, answer):
    t = traj(text, [call(True)])
    for fn in (accuracy, format_reward, tool_usage):
        v = fn(t, {"answer": answer})
        assert v is None or (isinstance(v, float) and not math.isnan(v) and 0.0 <= v <= 1.0)
    assert format_reward(t, {}) in (0.0, 1.0)
    acc, tool = accuracy(t, {"answer": answer}), tool_usage(t, {"answer": answer})
    assert (acc is None) == (tool is None)
    assert acc is None or tool == acc  # the trajectory made one successful call: the tool bonus follows accuracy


@settings(max_examples=200, deadline=None)
@given(text=ANY_TEXT)
def test_helpers_never_raise(text):
    got = extract_answer(text)
    assert got is None or got in text
    assert isinstance(normalize_label(text), str)
    assert isinstance(is_think_then_answer(text), bool)


@settings(max_examples=100, deadline=None)
@given(think=st.text(max_size=50), answer=st.text(max_size=50), ws=st.sampled_from(["", " ", "\n", " \t\n"]))
def test_format_accepts_every_well_formed_reply(think, answer, ws):
    tags = ("<think>", "</think>", "<answer>", "</answer>")
    if any(tag in think or tag in answer for tag in tags):
        return
    text = f"{ws}<think>{think}</think>{ws}<answer>{answer}</answer>{ws}"
    assert is_think_then_answer(text)
    assert extract_answer(text) == answer.strip()


@pytest.mark.parametrize(
    "text",
    [
        "<answer>" * 10_000 + "</answer>" * 10_000,
        "<think>" * 10_000 + "</think>" * 10_000 + "<answer>x</answer>",
        "<answer>" + "a " * 500_000,
        "<think>" + "x" * 1_000_000 + "</think> " + "\t" * 100_000 + "<answer>" + "_-" * 200_000 + "</answer>",
        "!" * 1_000_000,
    ],
)
def test_adversarial_input_is_fast(text):
    t = traj(text, [call(True)])
    start = time.perf_counter()
    for fn in (accuracy, format_reward, tool_usage):
        fn(t, {"answer": "x"})
    normalize_label(text)
    assert time.perf_counter() - start < 1.0


@pytest.mark.parametrize("module", ["rewards.videostar", "rewards.combine", "rewards.worker", "rewards.registry"])
def test_docstring_examples(module):
    import importlib

    result = doctest.testmod(importlib.import_module(module))
    assert result.failed == 0
