"""The built-in rewards as recipes use them: config checks on their args, the HieroAction reward mix scored by
hand, and the new rewards running in Ray reward workers (with the MiniLM model loaded in each worker)."""

from __future__ import annotations

import json
import math

import pytest

from rewards import available_rewards
from rewards.combine import parse_specs, score_batch, summarize
from rewards.worker import RewardPool
from rollout.trajectory import Trajectory

BUILTINS = {
    "accuracy": {},
    "format": {},
    "tool_usage": {},
    "submotion": {"scheme": "exponential", "match": "embedding", "threshold": 0.75},
    "sar_format": {"strict": True},
    "temporal_iou": {"mode": "paper"},
    "hier_action": {"alpha": 0.5, "label_field": "label"},
    "aqa_score": {"lam_q": 10.0, "lam_d": 5.0, "normalize": "range", "difficulty_range": [1.0, 4.0]},
    "mcq": {},
    "semantic_entailment": {"judge": {"kind": "openai", "base_url": "http://127.0.0.1:8000/v1", "model": "m"}},
}
HIEROACTION_MIX = [
    {"name": "sar_format", "weight": 0.1},
    {"name": "temporal_iou", "weight": 0.3},
    {"name": "hier_action", "weight": 0.3},
    {"name": "aqa_score", "weight": 0.3, "args": {"lam_q": 10.0}},
]
RECORD = {
    "id": "a1",
    "task": "aqa",
    "label": "407C",
    "answer": "80",
    "score": 80.0,
    "difficulty": 3.0,
    "score_range": [0, 100],
    "sub_actions": [{"name": "take off", "start": 0, "end": 2}, {"name": "entry", "start": 2, "end": 4}],
}


def sar(obj: dict, look: bool = True) -> str:
    head = "<look>diver</look>" if look else ""
    return f"{head}<recognition>r</recognition><assessment>a</assessment><answer>{json.dumps(obj)}</answer>"


def traj(sample_id: str, text: str, record: dict) -> Trajectory:
    return Trajectory(sample_id, 0, [], [], [], [], final_text=text, record=record)


# Worked by hand (format / tIoU / hier / score, then 0.1 f + 0.3 (t + h + s)):
BATCH = [
    # perfect: 1 / 1 / 1 / 1 -> 1.0
    traj("p", sar({"action": "407C", "sub_actions": RECORD["sub_actions"], "score": 80, "difficulty": 3.0}), RECORD),
    # no <look>: format 0; segments (0,1) vs (0,2) IoU 1/2, (2,4) exact 1 -> tIoU 3/4; names exact, class wrong:
    # hier 0.5 * 0 + 0.5 * 1 = 0.5; score 70 vs 80 on [0,100]: exp(-10 * 0.01) = exp(-0.1)
    traj(
        "q",
        sar(
            {
                "action": "405B",
                "sub_actions": [{"name": "take off", "start": 0, "end": 1}, {"name": "entry", "start": 2, "end": 4}],
                "score": 70,
                "difficulty": 3.0,
            },
            look=False,
        ),
        RECORD,
    ),
    # not JSON: format 1, the rest 0 -> 0.1
    traj("r", sar({}).replace("{}", "eighty"), RECORD),
]


def test_every_builtin_is_registered_and_its_args_check():
    assert set(BUILTINS) <= set(available_rewards())
    parse_specs([{"name": name, "args": args} for name, args in BUILTINS.items()])


@pytest.mark.parametrize(
    "name, args",
    [
        ("aqa_score", {"lamq": 2.0}),
        ("temporal_iou", {"normalize": "matched"}),  # the old name of `mode`
        ("submotion", {"schema": "linear"}),
        ("semantic_entailment", {"judge_url": "http://x"}),
        ("mcq", {"letters": "ABCD"}),
    ],
)
def test_misspelled_args_fail_before_the_run(name, args):
    with pytest.raises(ValueError, match=f"reward '{name}'.*do not fit"):
        parse_specs([{"name": name, "args": args}])


def test_hieroaction_mix_by_hand():
    out = score_batch(BATCH, HIEROACTION_MIX)
    assert out.components["sar_format"] == [1.0, 0.0, 1.0]
    assert out.components["temporal_iou"] == pytest.approx([1.0, 0.75, 0.0])
    assert out.components["hier_action"] == pytest.approx([1.0, 0.5, 0.0])
    assert out.components["aqa_score"] == pytest.approx([1.0, math.exp(-0.1), 0.0])
    assert out.totals == pytest.approx([1.0, 0.3 * (0.75 + 0.5 + math.exp(-0.1)), 0.1])
    metrics = summarize(out)
    assert metrics["reward/temporal_iou_mean"] == pytest.approx(1.75 / 3)
    assert all(metrics[f"reward/{s['name']}_errors"] == 0 for s in HIEROACTION_MIX)


def test_new_rewards_in_ray_workers(ray_local):
    ovar = {"id": "o1", "answer": "shoot ball", "sub_motions": ["leg bending", "arm extending"]}
    text = "<think>Sub-motions: bending of the legs → eating soup</think><answer>shoot ball</answer>"
    trajs = [*BATCH, traj("o1", text, ovar)]
    specs = [*HIEROACTION_MIX, {"name": "submotion", "args": {"match": "embedding"}}]
    pool = RewardPool(specs, num_workers=2, actor_options={"runtime_env": {"env_vars": {"OMP_NUM_THREADS": "1"}}})
    try:
        out = pool.score(trajs)
    finally:
        pool.shutdown()
    local = score_batch(BATCH, HIEROACTION_MIX)
    assert out.totals[:3] == pytest.approx(local.totals)
    # submotion: None for the aqa records; rank 1 of 2 matches by embedding: linear 2/3
    assert out.components["submotion"][:3] == [None, None, None]
    assert out.components["submotion"][3] == pytest.approx(2 / 3)
    assert out.errors["submotion"] == 0


def test_docs_list_every_builtin_and_its_args():
    import doctest
    import inspect
    from pathlib import Path

    from rewards.registry import get_reward

    text = (Path(__file__).resolve().parents[2] / "docs" / "rewards.md").read_text()
    for name in BUILTINS:
        assert f"| `{name}` |" in text, name
        params = list(inspect.signature(get_reward(name).fn).parameters)[2:]
        assert all(f"`{p}" in text for p in params), (name, params)
    # the helpers' example in the docs runs (a blank line before each fence ends an expected output)
    text = text.replace("\n```", "\n\n```")
    examples = doctest.DocTestParser().get_doctest(text, {}, "rewards.md", "docs/rewards.md", 0)
    assert examples.examples and doctest.DocTestRunner().run(examples).failed == 0
