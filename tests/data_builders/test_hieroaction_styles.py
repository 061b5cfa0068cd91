"""The SAR builder's target styles, HieroAction's Table 4 ablation: `sar` (four blocks), `cot` (think-then-answer)
and `direct` (the answer alone). Each style's target carries the same answer JSON (checked against one written by
hand, and against the SAR target of the same record), scores what the SAR target scores on the answer rewards and
on eval's aqa metrics, and passes the format reward of its own style only; the prompt asks for the style's form."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from common.sample_data import AQA_REPLY
from common.schema import validate_record
from data_builders import hieroaction_sar as hs
from eval.tasks import TASKS
from rewards.hieroaction import aqa_score, hier_action, is_style_format, sar_format, temporal_iou_reward
from rewards.videostar import extract_answer
from rollout.trajectory import Trajectory

SQUAT = {
    "label": "squat",
    "sub_actions": [{"name": "bend knees", "start": 0.0, "end": 1.0}, {"name": "stand up", "start": 1.0, "end": 2.0}],
    "difficulty": 2.0,
    "score": 70.0,
    "score_range": [0.0, 100.0],
}
# written by hand from SQUAT: json.dumps's separators, the floats as given
SQUAT_ANSWER = (
    '{"action": "squat", "sub_actions": [{"name": "bend knees", "start": 0.0, "end": 1.0}, '
    '{"name": "stand up", "start": 1.0, "end": 2.0}], "difficulty": 2.0, "score": 70.0}'
)


@pytest.fixture(scope="module")
def records():
    from common.sample_data import build_sample_data, default_sample_dir
    from common.schema import load_records

    return load_records(build_sample_data(default_sample_dir())["aqa_train"])[:3]


def traj(text: str) -> Trajectory:
    return Trajectory("a1", 0, [], [], [], [], final_text=text)


def lines(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()]


@pytest.mark.parametrize("style", hs.STYLES)
@pytest.mark.parametrize("brief", [False, True], ids=["full", "brief"])
def test_every_style_ends_with_the_same_answer_json(style, brief):
    text = hs.target(SQUAT, style, brief)
    assert extract_answer(text) == SQUAT_ANSWER
    assert text.endswith(f"<answer>{SQUAT_ANSWER}</answer>")


def test_the_direct_and_cot_targets_word_for_word():
    assert hs.target(SQUAT, "direct") == f"<answer>{SQUAT_ANSWER}</answer>"
    # 70 on [0, 100] is 0.7 of the range: "good" (0.6 <= share < 0.85)
    think = (
        "The clip shows one action in 2 phases over about 2.00 s. The phases are bend knees from 0.00 to 1.00 s, "
        "then stand up from 1.00 to 2.00 s. Each phase is good, so the squat as a whole is good: "
        "difficulty 2.0, score 70.0."
    )
    assert hs.target(SQUAT, "cot") == f"<think>{think}</think>\n<answer>{SQUAT_ANSWER}</answer>"
    brief = "2 phases, 2.00 s: bend knees; stand up. good: difficulty 2.0, score 70.0."
    assert hs.target(SQUAT, "cot", brief=True) == f"<think>{brief}</think>\n<answer>{SQUAT_ANSWER}</answer>"


@pytest.mark.parametrize("style", ["cot", "direct"])
def test_a_style_target_scores_what_the_sar_target_of_the_record_scores(records, style):
    """A second method: the SAR target of the same record, already shown to get full marks, scored beside it."""
    spec = TASKS["aqa"]
    for rec in records:
        sar, other = traj(hs.sar_target(rec)), traj(hs.target(rec, style))
        for reward, kwargs in (
            (temporal_iou_reward, {}),
            (temporal_iou_reward, {"mode": "paper"}),
            (hier_action, {}),
            (aqa_score, {"lam_q": 10.0, "lam_d": 10.0, "difficulty_range": [1.0, 4.0]}),
        ):
            assert reward(other, rec, **kwargs) == reward(sar, rec, **kwargs) == pytest.approx(1.0)
        assert spec.score(other.final_text, rec) == spec.score(sar.final_text, rec)
        # each passes the format of its own style only
        assert sar_format(other, rec, strict=True, style=style) == 1.0
        assert sar_format(other, rec) == 0.0 and sar_format(sar, rec, style=style) == 0.0


@pytest.mark.parametrize("style", hs.STYLES)
def test_the_builder_restyles_the_prompt_and_records_the_style(records, tmp_path, style):
    path = tmp_path / "in.jsonl"
    custom = {**records[0], "id": "custom-prompt", "prompt": "Score this dive."}
    path.write_text("".join(json.dumps(r) + "\n" for r in [*records, custom]))
    summary = hs.main(["--records", str(path), "--out", str(tmp_path / "out.jsonl"), "--style", style])
    kept = lines(tmp_path / "out.jsonl")
    if style == "sar":  # the prompt is left as it is, whatever it says
        assert summary["dropped"] == {} and kept[-1]["prompt"] == "Score this dive."
    else:  # a prompt without the SAR instruction cannot be made to ask for the style's form
        assert summary["dropped"] == {"prompt_not_sar": 1} and len(kept) == len(records)
    for rec, src in zip(kept, records):
        assert validate_record(rec) == [] and rec["meta"]["sar_style"] == style
        assert is_style_format(rec["chain"][0], style, strict=True)
        head, tail = src["prompt"].split("<answer>", 1)
        assert AQA_REPLY["sar"] in head  # the sample prompts hold the SAR instruction, right before <answer>
        assert rec["prompt"] == head.replace(AQA_REPLY["sar"], AQA_REPLY[style]) + "<answer>" + tail
        assert ("<look>" in rec["prompt"]) is (style == "sar")
        assert ("<think>" in rec["prompt"]) is (style == "cot")


def test_an_unknown_style_is_refused(tmp_path, capsys):
    with pytest.raises(ValueError, match="target style must be one of sar, cot, direct, got 'tot'"):
        hs.target(SQUAT, "tot")
    with pytest.raises(SystemExit):
        hs.main(["--records", "x.jsonl", "--out", str(tmp_path / "o.jsonl"), "--style", "tot"])
    assert "invalid choice: 'tot'" in capsys.readouterr().err


def test_the_style_system_prompts_ask_for_their_form():
    from rollout.config import RolloutConfig

    for style, tags in (("cot", ("<think>", "<answer>")), ("direct", ("<answer>",))):
        cfg = RolloutConfig(system_prompt=f"hieroaction_system_{style}.txt")
        cfg.resolve_system_prompt()
        assert all(t in cfg.system_prompt for t in tags) and "<look>" not in cfg.system_prompt


def test_docstring_examples():
    import doctest

    assert doctest.testmod(hs).failed == 0
