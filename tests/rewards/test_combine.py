"""Combining rewards: spec validation, weighted totals, gates, error handling and metrics, with hand-worked values."""

from __future__ import annotations

import logging
import math
import uuid

import pytest

from rewards.combine import RewardOutput, RewardSpec, parse_gate, parse_specs, score_batch, summarize
from rewards.registry import register, unregister
from rollout.trajectory import ToolCall, Trajectory, Turn


def traj(sample_id: str, final_text: str, answer: str | None, tool_ok: bool | None = None) -> Trajectory:
    turns = []
    if tool_ok is not None:
        turns.append(Turn("<tool_call>{}</tool_call>", [ToolCall("pose_estimation", {}, ok=tool_ok, response="")]))
    turns.append(Turn(final_text))
    record = {"id": sample_id} if answer is None else {"id": sample_id, "answer": answer}
    return Trajectory(sample_id, 0, [], [], [], [], turns=turns, final_text=final_text, record=record)


# Worked by hand: accuracy / format / tool_usage of each trajectory.
BATCH = [
    traj("a", "<think>legs</think><answer>Run</answer>", "run", tool_ok=True),  # 1 / 1 / 1
    traj("b", "<answer>walk</answer>", "run", tool_ok=True),  # 0 / 0 / gated off -> 0
    traj("c", "<think>x</think> <answer>jump</answer>", "jump"),  # 1 / 1 / 0 (no tool)
    traj("d", "<think>x</think><answer>jump</answer>", None, tool_ok=True),  # None / 1 / gated off (None)
]
SPECS = [
    {"name": "accuracy", "weight": 1.0},
    {"name": "format", "weight": 0.5},
    {"name": "tool_usage", "weight": 0.25, "when": "accuracy>=1"},
]


@pytest.fixture
def plugins():
    """Test plugins registered under unique names: one that raises on sample 'b', one that returns NaN on 'c',
    a batched one that raises, one that returns a string, and a counter of calls."""
    tag = uuid.uuid4().hex[:6]
    names = {k: f"{k}_{tag}" for k in ("boom", "nan", "batch_boom", "stringy", "counted", "batch_ok")}
    calls: list[str] = []

    @register(names["boom"])
    def boom(traj, record):
        if traj.sample_id == "b":
            raise RuntimeError("kaput")
        return 1.0

    @register(names["nan"])
    def nan(traj, record):
        return float("nan") if traj.sample_id == "c" else 2.0

    @register(names["batch_boom"], batched=True)
    def batch_boom(trajs, records):
        raise KeyError("missing field")

    @register(names["stringy"])
    def stringy(traj, record):
        return "1.0"

    @register(names["counted"])
    def counted(traj, record, scale=1.0):
        calls.append(traj.sample_id)
        return scale

    @register(names["batch_ok"], batched=True)
    def batch_ok(trajs, records):
        calls.extend(t.sample_id for t in trajs)
        return [0.5 if r.get("answer") else None for r in records]

    yield names, calls
    for name in names.values():
        unregister(name)


def test_totals_and_components_worked_by_hand():
    out = score_batch(BATCH, SPECS)
    assert out.components == {
        "accuracy": [1.0, 0.0, 1.0, None],
        "format": [1.0, 0.0, 1.0, 1.0],
        "tool_usage": [1.0, 0.0, 0.0, 0.0],
    }
    # a: 1 + 0.5 + 0.25; b: 0; c: 1 + 0.5; d: None counts 0, + 0.5
    assert out.totals == pytest.approx([1.75, 0.0, 1.5, 0.5])
    assert out.errors == {"accuracy": 0, "format": 0, "tool_usage": 0}


def test_specs_given_as_dataclasses_score_the_same():
    specs = [RewardSpec("accuracy", 1.0), RewardSpec("format", 0.5), RewardSpec("tool_usage", 0.25, when="accuracy")]
    assert score_batch(BATCH, specs) == score_batch(BATCH, SPECS)


def test_gate_skips_the_plugin_where_closed(plugins):
    names, calls = plugins
    out = score_batch(
        BATCH,
        [
            {"name": "format"},
            {"name": names["counted"], "when": "accuracy", "args": {"scale": 3}},
            {"name": "accuracy", "weight": 0},
        ],
    )
    assert calls == ["a", "c"]  # accuracy is 1 only on a and c; d has no answer (None closes the gate)
    assert out.components[names["counted"]] == [3.0, 0.0, 3.0, 0.0]
    assert out.totals == [4.0, 0.0, 4.0, 1.0]


def test_gates_chain_in_any_listed_order(plugins):
    names, calls = plugins
    specs = [
        {"name": names["counted"], "when": "tool_usage == 1"},
        {"name": "tool_usage", "when": "accuracy"},
        {"name": "accuracy"},
    ]
    out = score_batch(BATCH, specs)
    assert calls == ["a"]
    assert list(out.components) == [names["counted"], "tool_usage", "accuracy"]  # reported in the listed order
    assert out.totals == [3.0, 0.0, 1.0, 0.0]


def test_batched_plugin_sees_only_gated_in_samples(plugins):
    names, calls = plugins
    out = score_batch(BATCH, [{"name": "format"}, {"name": names["batch_ok"], "when": "format > 0.5"}])
    assert calls == ["a", "c", "d"]
    assert out.components[names["batch_ok"]] == [0.5, 0.0, 0.5, None]


def test_raising_plugin_scores_zero_and_others_still_score(plugins, caplog):
    names, _ = plugins
    with caplog.at_level(logging.ERROR, logger="rewards.combine"):
        out = score_batch(BATCH, [{"name": "accuracy"}, {"name": names["boom"], "weight": 2.0}])
        score_batch(BATCH, [{"name": names["boom"]}])  # the same failure again: not logged again
    assert out.components[names["boom"]] == [1.0, 0.0, 1.0, 1.0]
    assert out.components["accuracy"] == [1.0, 0.0, 1.0, None]
    assert out.errors == {"accuracy": 0, names["boom"]: 1}
    assert out.totals == [3.0, 0.0, 3.0, 2.0]
    logged = [r for r in caplog.records if names["boom"] in r.getMessage()]
    assert len(logged) == 1 and "RuntimeError" in logged[0].getMessage() and "kaput" in logged[0].getMessage()


def test_nan_counts_as_an_error(plugins):
    names, _ = plugins
    out = score_batch(BATCH, [{"name": names["nan"]}])
    assert out.components[names["nan"]] == [2.0, 2.0, 0.0, 2.0]
    assert out.errors[names["nan"]] == 1
    assert all(math.isfinite(t) for t in out.totals)


def test_raising_batched_plugin_zeroes_the_whole_batch(plugins):
    names, _ = plugins
    out = score_batch(BATCH, [{"name": "format"}, {"name": names["batch_boom"]}])
    assert out.components[names["batch_boom"]] == [0.0] * 4
    assert out.errors == {"format": 0, names["batch_boom"]: 4}
    assert out.totals == [1.0, 0.0, 1.0, 1.0]


def test_non_number_return_is_an_error(plugins):
    names, _ = plugins
    out = score_batch(BATCH[:2], [{"name": names["stringy"]}])
    assert out.components[names["stringy"]] == [0.0, 0.0] and out.errors[names["stringy"]] == 2


def test_empty_batch():
    out = score_batch([], SPECS)
    assert out.totals == [] and out.components == {"accuracy": [], "format": [], "tool_usage": []}


@pytest.mark.parametrize(
    "specs, match",
    [
        ([{"name": "acuracy"}], r"unknown reward 'acuracy'.*available: .*accuracy.*format.*tool_usage"),
        ([{"name": "format", "when": "accuracy"}], r"gated on 'accuracy'.*not in the rewards list"),
        ([{"name": "accuracy", "when": "accuracy>=1"}], "gated on itself"),
        ([{"name": "accuracy", "when": "format"}, {"name": "format", "when": "accuracy"}], "cycle"),
        ([{"name": "accuracy"}, {"name": "format", "when": "accuracy => 1"}], "is not 'NAME' or 'NAME OP NUMBER'"),
        ([{"name": "accuracy"}, {"name": "format", "when": "accuracy >= high"}], "is not 'NAME'"),
        ([{"name": "accuracy"}, {"name": "accuracy"}], "listed twice"),
        ([{"name": "accuracy", "wieght": 2}], r"unknown keys \['wieght'\]"),
        ([{"name": "accuracy", "weight": "high"}], "'weight' must be a finite number"),
        ([{"name": "accuracy", "weight": float("inf")}], "'weight' must be a finite number"),
        ([{"name": "accuracy", "args": [1]}], "'args' must be a mapping"),
        ([{"weight": 1.0}], "'name' must be a non-empty string"),
        (["accuracy"], r"rewards\[0\] must be a mapping"),
        ({"name": "accuracy"}, "must be a list"),
        ([{"name": "no_such_pkg_xyz.mod:fn"}], "module 'no_such_pkg_xyz.mod' not found"),
    ],
)
def test_bad_specs_fail_early(specs, match):
    with pytest.raises(ValueError, match=match):
        parse_specs(specs)


def test_args_are_checked_against_the_plugin_signature(plugins):
    names, _ = plugins
    assert parse_specs([{"name": names["counted"], "args": {"scale": 2}}])[0].args == {"scale": 2}
    with pytest.raises(ValueError, match=r"args \{'scael': 2\} do not fit"):
        parse_specs([{"name": names["counted"], "args": {"scael": 2}}])


def test_parse_specs_accepts_omegaconf_lists():
    from omegaconf import OmegaConf

    cfg = OmegaConf.create({"rewards": [{"name": "accuracy"}, {"name": "tool_usage", "when": "accuracy"}]})
    specs = parse_specs(cfg.rewards)
    assert specs == [RewardSpec("accuracy"), RewardSpec("tool_usage", when="accuracy")]


@pytest.mark.parametrize(
    "when, value, is_open",
    [
        ("accuracy", 1.0, True),
        ("accuracy", 0.0, False),
        ("accuracy", -0.5, False),
        ("accuracy>=1", 1.0, True),
        ("accuracy >= 1", 0.99, False),
        ("  iou < 0.5 ", 0.4, True),
        ("iou<.5", 0.5, False),
        ("score != -2", -2.0, False),
        ("score == 1e-3", 0.001, True),
        ("my_pkg.mod:fn > 0", 0.1, True),
    ],
)
def test_gate_syntax(when, value, is_open):
    _, op, threshold = parse_gate(when)
    assert op(value, threshold) is is_open


def test_summarize_worked_by_hand():
    out = RewardOutput(
        totals=[1.75, 0.0, 1.5, 0.5],
        components={"accuracy": [1.0, 0.0, 1.0, None], "tool_usage": [1.0, 0.0, 0.0, 0.0], "x": [None] * 4},
        errors={"accuracy": 0, "tool_usage": 2, "x": 0},
    )
    metrics = summarize(out)
    # mean 3.75/4 = 0.9375; deviations 0.8125, -0.9375, 0.5625, -0.4375; squares 0.66015625 + 0.87890625 +
    # 0.31640625 + 0.19140625 = 2.046875 -> variance 2.046875/4 = 0.51171875
    assert metrics == pytest.approx(
        {
            "reward/total_mean": 0.9375,
            "reward/total_std": math.sqrt(0.51171875),
            "reward/accuracy_mean": 2 / 3,
            "reward/accuracy_errors": 0.0,
            "reward/tool_usage_mean": 0.25,
            "reward/tool_usage_errors": 2.0,
            "reward/x_errors": 0.0,
        }
    )
