"""The multiple-choice letter reader shared by the `mcq` reward and the evaluation, next to the released FineBench
evaluator's reader. Each expected letter is worked out by hand from the rules in the docstrings; for the released
one, from its code's published rules (the prefixes as its list spells them, then the first capital A-D anywhere,
then VLMEvalKit's option-text match)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rewards.helpers import option_text_letter, parse_mcq_letter, released_mcq_letter
from rewards.mcq import mcq, reply_letter
from rollout.trajectory import Trajectory

OPTIONS = {"A": "sit", "B": "stand", "C": "walk", "D": "bend/bow (at the waist)"}


@pytest.mark.parametrize(
    "reply, ours, released",
    [
        ("C", "C", "C"),
        ("Answer: C", "C", "C"),  # the capital A of "Answer" is not read once the prefix is gone
        ("The answer is (B) stand", "B", "B"),
        ("Option: D", "D", "D"),
        ("Option C", "C", "C"),
        ("The correct answer is C.", "C", "C"),
        ("**C**", "C", "C"),
        ("C) walk", "C", "C"),
        ("(C)", "C", "C"),
        ("Answer: Option (D)", "D", "D"),  # two prefixes, then a bracket
        ("I think D.", "D", "D"),  # no leading letter: the one letter standing alone
        ("Everything points to the Bench option: D", "D", "B"),  # released: the B of "Bench" comes first
        ("Best option: (C)", "C", "B"),  # released: its list glues "Best answer:Best option:", so B of "Best"
        ("stand", "B", "B"),  # no letter: the option's text
        ("Bend/bow (at the waist).", "D", "B"),  # ours: no letter stands alone, the text is option D's
        ("They sit, then they stand", "", ""),  # two options' texts: ambiguous
        ("The person is walking or standing", "", ""),  # ours: "walk" is not a word of it; released: two match
        ("A man walks", "A", "A"),  # a leading capital A is the letter A, for both
        ("B or C", "B", "B"),  # the leading letter
        ("<answer>C", "C", "C"),  # an unclosed tag: the C stands alone
        ("c", "", ""),  # lower case is not a letter
        ("E", "", ""),  # not one of the record's letters
        ("I am not sure which one it is here at all, sorry", "", ""),
        ("", "", ""),
        (None, "", ""),
        (3, "", ""),
    ],
)
def test_readers_by_hand(reply, ours, released):
    assert parse_mcq_letter(reply, OPTIONS) == ours
    assert released_mcq_letter(reply, OPTIONS) == released


def test_without_options_no_text_fallback_and_letters_a_to_e():
    assert parse_mcq_letter("stand") == "" and parse_mcq_letter("Answer: E") == "E"
    assert parse_mcq_letter("Answer: C") == "C"


@pytest.mark.parametrize(
    "reply, expected",
    [
        ("Walk.", "C"),  # equal after lower-casing and dropping punctuation
        ("bend bow at the waist", "D"),
        ("the person on the left will walk", "C"),  # contained as whole words, only one option
        ("they sit and walk", ""),
        ("sitting", ""),  # not the word "sit"
        ("", ""),
    ],
)
def test_option_text_letter(reply, expected):
    assert option_text_letter(reply, OPTIONS) == expected


def test_equal_text_wins_over_containment():
    # "kick (a person)" is contained in the combined option too; the reply equals only the first
    opts = {"A": "kick (a person)", "B": "kick (a person) and hug (a person)", "C": "hug (a person)"}
    assert option_text_letter("Kick (a person)", opts) == "A"
    assert option_text_letter("kick a person and hug a person", opts) == "B"


def test_reward_and_eval_read_the_same_letter():
    from eval.tasks import TASKS

    record = {"task": "mcq", "answer": "D", "options": OPTIONS, "category": "person movement"}
    for text, expected in (("<answer>Bend/bow (at the waist)</answer>", 1.0), ("Answer: C", 0.0), ("D", 1.0)):
        parsed, values = TASKS["mcq"].score(text, record)
        traj = Trajectory("s", 0, [], [], [], [], final_text=text)
        assert mcq(traj, record) == values["correct"] == expected
        assert parsed["letter"] == reply_letter(text, OPTIONS)


@settings(max_examples=300, deadline=None)
@given(text=st.text(max_size=200))
def test_readers_never_raise(text):
    assert parse_mcq_letter(text, OPTIONS) in ("", "A", "B", "C", "D")
    assert parse_mcq_letter(text) in ("", "A", "B", "C", "D", "E")
    assert released_mcq_letter(text, OPTIONS) in ("", "A", "B", "C", "D")
