"""Reward workers: a pool of real Ray actors scores a batch like in-process scoring does, chunked in order."""

from __future__ import annotations

import os
import sys
import textwrap
import uuid

import numpy as np
import pytest

from rewards.combine import score_batch
from rewards.worker import RewardPool, RewardWorker, split_contiguous
from rollout.trajectory import ToolCall, Trajectory, Turn

SPECS = [
    {"name": "accuracy", "weight": 1.0},
    {"name": "format", "weight": 0.5},
    {"name": "tool_usage", "weight": 0.25, "when": "accuracy>=1"},
]


def make_batch(n: int) -> list[Trajectory]:
    """n trajectories whose rewards differ, so that a reordering would show."""
    out = []
    for i in range(n):
        label = ["run", "jump", "squat"][i % 3]
        said = label if i % 2 == 0 else "walk"
        text = f"<think>step {i}</think><answer>{said}</answer>" if i % 4 != 3 else f"<answer>{said}</answer>"
        calls = [ToolCall("pose_estimation", {}, ok=i % 5 != 0, response="")]
        out.append(
            Trajectory(
                f"s{i}",
                i % 4,
                [1, 2],
                [3],
                [1],
                [0.0],
                turns=[Turn("<tool_call>{}</tool_call>", calls), Turn(text)],
                final_text=text,
                record={"id": f"s{i}", "answer": label},
                mm_inputs={"pixel_values_videos": np.zeros((4, 8), dtype=np.float32)},
            )
        )
    return out


@pytest.mark.parametrize(
    "n, parts, expected",
    [
        (10, 2, [(0, 5), (5, 10)]),
        (7, 3, [(0, 3), (3, 5), (5, 7)]),
        (2, 4, [(0, 1), (1, 2)]),
        (0, 2, []),
        (5, 1, [(0, 5)]),
    ],
)
def test_split_contiguous(n, parts, expected):
    assert split_contiguous(n, parts) == expected


def test_local_pool_matches_score_batch():
    batch = make_batch(9)
    pool = RewardPool(SPECS, local=True)
    assert pool.score(batch) == score_batch(batch, SPECS)


def test_worker_scores_by_hand():
    # s0: run/run, think+answer, call not ok -> 1 + 0.5 + 0; s1: walk vs jump -> 0 + 0.5; s2: squat/squat, ok call
    # -> 1 + 0.5 + 0.25; s3: walk vs run, no think -> 0
    out = RewardWorker(SPECS).score(make_batch(4))
    assert out.totals == [1.5, 0.5, 1.75, 0.0]


def test_bad_specs_fail_in_the_constructor():
    with pytest.raises(ValueError, match="unknown reward 'acuracy'"):
        RewardPool([{"name": "acuracy"}], local=True)


def test_ray_pool_matches_local_scoring(ray_local):
    batch = make_batch(11)  # odd size: chunks of 6 and 5
    expected = score_batch(batch, SPECS)
    pool = RewardPool(SPECS, num_workers=2)
    try:
        assert len(pool.workers) == 2
        out = pool.score(batch)
        assert out == expected
        assert pool.score(batch[:1]) == score_batch(batch[:1], SPECS)  # fewer samples than workers
        empty = pool.score([])
        assert empty.totals == [] and set(empty.components) == {"accuracy", "format", "tool_usage"}
    finally:
        pool.shutdown()


def test_ray_pool_sums_errors_and_loads_class_plugins_once_per_worker(ray_local, tmp_path):
    """A dotted-path plugin outside the repo, shipped to the workers with the actors' runtime_env."""
    module = f"plugin_{uuid.uuid4().hex[:8]}"
    pkg = tmp_path / module
    pkg.mkdir()
    (pkg / "__init__.py").write_text(
        textwrap.dedent(
            """
            import os

            class PerWorker:
                '''Stands for a model-based reward: counts how often it is loaded in this process.'''
                loads = 0

                def __init__(self):
                    type(self).loads += 1

                def __call__(self, traj, record):
                    if traj.sample_id == "s3":
                        raise RuntimeError("bad sample")
                    return float(type(self).loads)
            """
        )
    )
    sys.path.insert(0, str(tmp_path))  # the driver checks the specs, so it imports the plugin too
    try:
        specs = [{"name": "accuracy"}, {"name": f"{module}:PerWorker"}]
        env = {"env_vars": {"PYTHONPATH": f"{tmp_path}{os.pathsep}${{PYTHONPATH}}"}}
        pool = RewardPool(specs, num_workers=2, actor_options={"runtime_env": env})
        try:
            batch = make_batch(8)  # s3 lands in the first chunk (s0-s3)
            for _ in range(2):
                out = pool.score(batch)
                assert out.components[f"{module}:PerWorker"] == [1.0, 1.0, 1.0, 0.0, 1.0, 1.0, 1.0, 1.0]
                assert out.errors == {"accuracy": 0, f"{module}:PerWorker": 1}
                assert out.components["accuracy"] == [1.0, 0.0, 1.0, 0.0, 1.0, 0.0, 1.0, 0.0]
        finally:
            pool.shutdown()
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop(module, None)


def test_mm_inputs_are_not_sent_by_default():
    batch = make_batch(2)
    seen = []

    class Spy(RewardWorker):
        def score(self, trajs):
            seen.extend(t.mm_inputs for t in trajs)
            return super().score(trajs)

    pool = RewardPool(SPECS, local=True)
    pool.workers = [Spy(SPECS)]
    pool.score(batch)
    assert seen == [{}, {}]
    assert "pixel_values_videos" in batch[0].mm_inputs  # the caller's trajectories are untouched
