"""GPS's semantic entailment with the judge labelling all gold points of a description in one pass (the paper's
evaluator): replies written by hand, served by the shared fake OpenAI-compatible endpoint (no judge model runs
here), scores worked out by hand from ((Ne - Nc)/K + 1)/2; malformed replies score every point failing and are
counted, through the reward combiner and the evaluation; the lexical judge of the embedded default."""

from __future__ import annotations

import pytest

from rewards.combine import score_batch
from rewards.entailment import LexicalJudge, MalformedJudgeReply, parse_verdicts, semantic_entailment
from rollout.trajectory import Trajectory
from tests.fake_openai import FakeOpenAIEndpoint, text_of

# description -> (gold points, the judge's reply)
CASES = {
    "A man sits at a table and screws a lid onto a bottle.": (
        ["a man sits at a table", "he screws a lid", "the bottle is green", "he drinks"],
        "1. [2] stated\n2. [2] stated\n3. [1] colour not said\n4. [0] he closes it, he does not drink",
    ),  # Ne 2, Nc 1, K 4: (1/4 + 1)/2 = 0.625
    "A woman waves.": (
        ["a woman waves", "she stands", "she sits"],
        "**1)** Entailment: waving is said\n2. [0] she is said to sit... no: [0]\n3. Neutral - not said",
    ),  # labels 2, 0, 1: Ne 1, Nc 1, K 3: (0 + 1)/2 = 0.5
    "A dog runs.": (["a dog runs", "it barks", "in a park"], "1. [2] yes\n3. [1] not said"),  # point 2 missing
    "Nothing.": (["a person claps"], "I cannot tell."),  # no verdict at all
}


def judge_reply(body: dict) -> str:
    prompt = text_of(body["messages"][0])
    description = prompt.split("Description:\n", 1)[1].split("\n\nGold points:\n", 1)[0]
    return CASES[description][1]


def trajectory(description: str, gold: list[str] | None) -> Trajectory:
    record = {"task": "describe", "gold_points": gold} if gold else {"task": "mcq"}
    return Trajectory("s", 0, [], [], [], [], final_text=f"<answer>{description}</answer>", record=record)


def test_one_prompt_per_description_and_hand_computed_scores():
    trajs = [trajectory(d, gold) for d, (gold, _) in CASES.items()] + [trajectory("x", None)]
    records = [t.record for t in trajs]
    with FakeOpenAIEndpoint(judge_reply) as server:
        judge = {"kind": "openai", "base_url": server.base_url, "model": "judge-70b"}
        got = semantic_entailment(trajs, records, judge=judge)
    assert got[:2] == pytest.approx([0.625, 0.5]) and got[4] is None
    assert all(isinstance(v, MalformedJudgeReply) for v in got[2:4])
    # one prompt per description with gold points, listing them numbered in order
    assert len(server.requests) == 4
    first = text_of(server.requests[0]["body"]["messages"][0])
    assert "1. a man sits at a table\n2. he screws a lid\n3. the bottle is green\n4. he drinks" in first

    # through the combiner (a reward worker): the malformed samples score 0.0 and count as errors, alone
    with FakeOpenAIEndpoint(judge_reply) as server:
        spec = {
            "name": "semantic_entailment",
            "weight": 2.0,
            "args": {"judge": {**judge, "base_url": server.base_url}},
        }
        out = score_batch(trajs, [spec])
    assert out.components["semantic_entailment"] == pytest.approx([0.625, 0.5, 0.0, 0.0, None])
    assert out.errors["semantic_entailment"] == 2 and out.scored["semantic_entailment"] == 5
    assert out.totals == pytest.approx([1.25, 1.0, 0.0, 0.0, 0.0])
    assert "MalformedJudgeReply" in out.last_error["semantic_entailment"]


@pytest.mark.parametrize(
    "reply, k, expected",
    [
        ("1. [2] a\n2. [1] b\n3. [0] c", 3, [2, 1, 0]),
        ("2. [0] b\n1. [2] a", 2, [2, 0]),  # any order
        ("Point 1: [1]\nFact 2) contradiction", 2, [1, 0]),
        ("1. [2] there are 2 cups and 0 plates", 1, [2]),  # digits in a reason are no labels
        ("1. The man sits.\n1. [2] said", 1, [2]),  # a numbered line without a label is skipped
        ("1. [2]\n2. [1]\n3. [0]", 2, [2, 1]),  # a number beyond K is skipped
        ("1. [2]\n1. [2] again", 1, [2]),  # the same verdict twice
        ("1. [2]\n1. [0]", 1, None),  # two different verdicts for one point
        ("1. [2]", 2, None),  # a point without one
        ("[2] [1]", 2, None),  # labels without numbers
        ("1. 2", 1, None),  # a bare digit is no label
        (None, 1, None),
    ],
)
def test_parse_verdicts(reply, k, expected):
    assert parse_verdicts(reply, k) == expected


def test_lexical_judge_reads_both_default_prompts():
    description = "A man waves his right arm above the shoulder."
    gold = ["right arm raised above the shoulder", "body and legs stay still"]
    # content words of the first: right arm raised above shoulder, 4 of 5 in the description -> [2]; the second's
    # body legs stay still: 0 of 4 -> [1]. Ne 1, Nc 0, K 2: (1/2 + 1)/2 = 0.75
    trajs = [trajectory(description, gold)]
    for mode in ("all", "each"):
        assert semantic_entailment(trajs, [trajs[0].record], judge={"kind": "lexical"}, mode=mode) == [0.75]
    strict = {"kind": "lexical", "threshold": 0.9}  # 4/5 < 0.9: both neutral -> 0.5
    assert semantic_entailment(trajs, [trajs[0].record], judge=strict) == [0.5]
    assert LexicalJudge()(["a prompt of my own"])[0].startswith("cannot read")
    with pytest.raises(ValueError, match="threshold must be in"):
        LexicalJudge(threshold=0)


def test_eval_counts_malformed_replies():
    from eval import tasks
    from eval.runner import _entailment

    records = [
        {"id": d[:8], "gold_points": gold, "meta": {"held": held}}
        for (d, (gold, _)), held in zip(CASES.items(), ["in", "out", "out", "in"])
    ]
    rows = [{"id": r["id"], "prediction": d, "failed": False} for r, d in zip(records, CASES)]
    tasks.score_rows("describe", rows, records)
    with FakeOpenAIEndpoint(judge_reply) as server:
        _entailment(rows, records, {"kind": "openai", "base_url": server.base_url, "model": "j"})
    assert [r["metrics"]["entailment"] for r in rows] == pytest.approx([0.625, 0.5, 0.0, 0.0])
    assert [r["metrics"]["judge_malformed"] for r in rows] == [0.0, 0.0, 1.0, 1.0]
    assert rows[0]["entailment"] == {"labels": [2, 2, 1, 0], "malformed": False}
    assert rows[2]["entailment"] == {"labels": [0, 0, 0], "malformed": True}  # every point failing
    m = tasks.aggregate("describe", rows, records)
    # held-in: 0.625 and 0.0 -> 0.3125; held-out: 0.5 and 0.0 -> 0.25; whole: 1.125 / 4
    assert m["held_in"] == pytest.approx(0.3125) and m["held_out"] == pytest.approx(0.25)
    assert m["whole"] == pytest.approx(1.125 / 4) and m["judge_malformed"] == 2.0
