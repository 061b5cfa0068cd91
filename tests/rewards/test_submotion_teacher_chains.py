"""One sub-motion format for the teachers, the prompts and the reward: a teacher's own chain for a record scores on
the sub-motion reward, a chain with another action's sub-motions scores 0; the system prompt and the endpoint
teacher's prompt ask for the format the reward reads; format and reader round-trip."""

from __future__ import annotations

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from common.sample_data import REAL_SUB_MOTIONS
from common.stick_figure import SPECS
from common.submotions import INSTRUCTION, MARKER, clean_submotion, format_submotions
from data_builders.endpoint import PROMPTS_DIR
from data_builders.template_teacher import template_chain, template_reasoning
from rewards.submotion import parse_submotions, submotion
from rewards.videostar import accuracy, format_reward
from rollout.trajectory import Trajectory

POSE_REPLY = "frame 2 (t=0.25s): 1 person\n  person 0: box [1,2,3,4]\nframe 6 (t=0.75s): 1 person"
# every action of the bundled sample records, with the sub-motions the sample builder writes into them
SAMPLE_SUB_MOTIONS = {label: list(spec.sub_motions) for label, spec in SPECS.items()} | {
    label: list(m) for label, m in REAL_SUB_MOTIONS.items()
}


def traj(text: str) -> Trajectory:
    return Trajectory("v1", 0, [], [], [], [], final_text=text)


def record(label: str, sub_motions: list[str] | None) -> dict:
    rec = {"id": "r", "task": "ovar", "label": label, "answer": label, "candidates": [label, "run", "throw"]}
    return rec | ({"sub_motions": sub_motions} if sub_motions is not None else {})


@pytest.mark.parametrize("label", sorted(SAMPLE_SUB_MOTIONS))
def test_the_template_teachers_chain_scores_full_marks_on_its_own_record(label):
    rec = record(label, SAMPLE_SUB_MOTIONS[label])
    chain = template_reasoning(rec, POSE_REPLY)  # the last turn, as videostar_cot and the cold start write it
    t = traj(chain)
    assert (accuracy(t, rec), format_reward(t, rec)) == (1.0, 1.0)
    # every true sub-motion listed, in the true order: the rank weights sum to 1 (3 items: 3/6 + 2/6 + 1/6)
    assert parse_submotions(chain) == SAMPLE_SUB_MOTIONS[label]
    assert submotion(t, rec) == pytest.approx(1.0)
    assert submotion(t, rec, scheme="exponential") == pytest.approx(1.0)
    # the embedded cold start's chains (template_chain, without the pose line) are read the same way
    assert submotion(traj(template_chain(rec)[-1]), rec) == pytest.approx(1.0)


def test_a_chain_with_another_actions_sub_motions_scores_zero():
    wave = record("wave", SAMPLE_SUB_MOTIONS["wave"])
    squat_motions = record("wave", SAMPLE_SUB_MOTIONS["squat"])  # the right answer, the squat's decomposition
    chain = template_reasoning(squat_motions, POSE_REPLY)
    assert accuracy(traj(chain), wave) == 1.0 and submotion(traj(chain), wave) == 0.0
    # the right sub-motions with a wrong answer score 0 too (the reward counts only for right answers)
    wrong = template_reasoning(record("squat", SAMPLE_SUB_MOTIONS["wave"]), POSE_REPLY)
    assert submotion(traj(wrong), wave) == 0.0


def test_a_partly_right_chain_scores_the_weights_of_its_matching_ranks():
    truth = ["knees bend and hips lower", "hips rise back to standing", "torso stays upright"]
    rec = record("squat", truth)
    listed = ["arms swing overhead", "hips rise back to standing", "knees bend and hips lower"]
    chain = template_reasoning(record("squat", listed), POSE_REPLY)
    # ranks 2 and 3 of 3 match: linear 2/6 + 1/6 = 0.5; exponential (1/2 + 1/4) / (1 + 1/2 + 1/4) = 3/7
    assert submotion(traj(chain), rec) == pytest.approx(0.5)
    assert submotion(traj(chain), rec, scheme="exponential") == pytest.approx(3 / 7)


def test_knowledge_base_phases_with_commas_and_brackets_round_trip():
    # the template knowledge base's phases of "open door" and "ride bike" (common.action_kb.VERB_PHASES)
    opening = ["grip door", "pull, twist or lift it open", "release"]
    riding = [
        "sit on or mount the bike",
        "keep balance while it moves forward",
        "steer and propel it (legs pedal or hold on)",
    ]
    for label, motions in (("open door", opening), ("ride bike", riding)):
        rec = record(label, motions)
        chain = template_reasoning(rec, POSE_REPLY)
        assert parse_submotions(chain) == motions  # a comma inside an item does not split it
        assert submotion(traj(chain), rec) == pytest.approx(1.0)


def test_the_line_the_endpoint_teacher_copies_scores_full_marks():
    from data_builders.videostar_cot import submotion_line

    rec = record("jumping jack", SAMPLE_SUB_MOTIONS["jumping jack"])
    line = submotion_line(rec)
    assert line == (
        "Sub-motions: arms swing overhead and back down → legs spread apart and close → body hops in place"
    )
    reply = f"<think>Frame 2 shows one person.\n{line}\nCandidates: jumping jack, squat.</think>\n"
    reply += "<answer>jumping jack</answer>"
    assert submotion(traj(reply), rec) == pytest.approx(1.0)
    assert submotion_line(record("jumping jack", None)).startswith("(not given")


def test_the_prompts_ask_for_the_format_the_reward_reads():
    system = (PROMPTS_DIR / "videostar_system.txt").read_text()
    assert INSTRUCTION in system and f"`{MARKER} <sub-motion> → <sub-motion> → ...`" in INSTRUCTION
    teacher = (PROMPTS_DIR / "videostar_teacher_reason.txt").read_text()
    assert "{sub_motion_instruction}" in teacher and "{sub_motions}" in teacher
    # the form the instruction shows, filled in, is what the reward reads
    example = INSTRUCTION.split("`")[1]
    filled = example.replace("<sub-motion>", "leg bending", 1).replace("<sub-motion>", "arm extending", 1)
    assert parse_submotions(f"<think>{filled.replace(' → ...', '')}\nSo.</think>") == ["leg bending", "arm extending"]


def test_the_old_inline_numbered_form_is_gone_from_the_teacher():
    chain = template_chain(record("squat", ["knees bend", "hips drop"]))[-1]
    assert "1." not in chain and chain.startswith("<think>Sub-motions: knees bend → hips drop\nCandidates: ")


PIECES = [*"abc xyz,;.()-<>\n→é", "->", "1. ", "Sub", "motions"]
ITEM = st.lists(st.sampled_from(PIECES), max_size=20).map("".join)


@settings(max_examples=300, deadline=None)
@given(items=st.lists(ITEM, max_size=8))
@example(items=["1. ,"])  # found by a run: the comma had kept the period from the cleaning
def test_format_then_parse_gives_the_cleaned_items_back(items):
    cleaned = [c for c in (clean_submotion(i) for i in items) if any(ch.isalnum() for ch in c)]
    if not cleaned:
        with pytest.raises(ValueError, match="no sub-motion"):
            format_submotions(items)
        return
    text = f"<think>Pose: frame 2: 1 person.\n{format_submotions(items)}\nCandidates: a, b.</think><answer>a</answer>"
    got = parse_submotions(text)
    if len(cleaned) > 1:
        assert got == cleaned
    else:  # a lone item loses its commas and semicolons (a line without an arrow is split at them), and with them
        # what they kept from the end-of-item cleaning: the periods then left at its end ("1. ," is read as "1")
        expected = cleaned[0].translate({44: None, 59: None, 32: None}).rstrip(".")
        assert len(got) == 1 and got[0].replace(" ", "") == expected


def test_a_lone_sub_motion_with_a_comma_stays_one_item():
    line = format_submotions(["pull, twist or lift it open"])
    assert line == "Sub-motions: pull twist or lift it open"
    assert parse_submotions(line) == ["pull twist or lift it open"]
    with pytest.raises(ValueError, match="no sub-motion"):
        format_submotions([" ; ", "\n"])


def test_docstring_examples():
    import doctest

    import common.action_kb
    import common.submotions
    import data_builders.template_teacher
    import data_builders.videostar_cot

    for module in (common.submotions, common.action_kb, data_builders.template_teacher, data_builders.videostar_cot):
        assert doctest.testmod(module).failed == 0, module.__name__
