"""The GRPO loop with stand-ins for its actors: skipped samples are logged by kind, a step whose batch came back
empty trains nothing and the run goes on, and an error inside the loop still shuts every actor down."""

from __future__ import annotations

import json

import pytest

from recipes import grpo
from rewards.combine import RewardOutput
from rollout.group import RolloutOutput
from rollout.trajectory import Trajectory


def _traj(sample_id: str, g: int) -> Trajectory:
    return Trajectory(sample_id, g, [1], [2, 3], [1, 1], [-0.5, -0.5], finish_reason="answer")


class Workers:
    def __init__(self, outputs):
        self.outputs, self.workers, self.closed = list(outputs), ["engine"], 0

    def rollout(self, batch, seed):
        return self.outputs.pop(0)

    def shutdown(self):
        self.closed += 1


class Rewards:
    closed = 0

    def score(self, trajs):
        totals = [float(t.group_index % 2) for t in trajs]  # 0, 1 within each group of two
        return RewardOutput(totals, {"accuracy": list(totals)}, {"accuracy": 0})

    def shutdown(self):
        self.closed += 1


class Trainer:
    def __init__(self, fail=False):
        self.fail, self.trained, self.synced, self.saved, self.closed = fail, [], 0, [], 0

    def train_step(self, trajs, advantages):
        if self.fail:
            raise RuntimeError("a rank died")
        self.trained.append((len(trajs), [round(a, 4) for a in advantages]))
        return {"train/loss": 0.25}

    def sync_weights(self, workers):
        self.synced += 1
        return 0.0

    def save_checkpoint(self, path, state):
        self.saved.append(state["step"])

    def shutdown(self):
        self.closed += 1


class Evals:
    closed = 0

    def due(self, step):
        return False

    def launch(self, step, ckpt):
        return False

    def poll(self):
        return []

    def close(self):
        self.closed += 1


class Sampler:
    def next_batch(self):
        return [{"id": "a"}, {"id": "b"}]

    def state(self):
        return {}


def _run(monkeypatch, tmp_path, outputs, trainer):
    cfg = grpo.GrpoConfig()
    cfg.run.run_dir, cfg.run.steps, cfg.run.save_every = str(tmp_path), len(outputs), 100
    parts = grpo._Started(tmp_path, Workers(outputs), Rewards(), trainer, Sampler(), Evals(), 0, None)
    monkeypatch.setattr(grpo, "_start", lambda cfg, name, workers: parts)
    return cfg, parts


EMPTY = RolloutOutput([], 2, {}, {"video_error": 1, "sample_error": 1})
FULL = RolloutOutput([_traj("a", 0), _traj("a", 1), _traj("b", 0), _traj("b", 1)], 0, {}, {"video_error": 0})


def test_an_empty_batch_is_logged_and_trains_nothing(monkeypatch, tmp_path):
    cfg, parts = _run(monkeypatch, tmp_path, [EMPTY, FULL], Trainer())
    last = grpo.run(cfg)
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    first, second = rows
    assert first["rollout/empty_batch"] == 1.0 and first["rollout/trajectories"] == 0
    assert (first["rollout/skipped_samples"], first["rollout/skipped/video_error"]) == (2, 1)
    assert first["rollout/skipped/sample_error"] == 1
    assert "train/loss" not in first and "reward/total_mean" not in first
    assert second["rollout/empty_batch"] == 0.0 and second["train/loss"] == 0.25
    assert second["rollout/skipped/video_error"] == 0 and "rollout/skipped/sample_error" not in second
    # Step 2 alone was trained: per group, scores (0, 1) normalise to -/+ 1/sqrt(2) (unbiased std).
    assert parts.trainer.trained == [(4, [-0.7071, 0.7071, -0.7071, 0.7071])]
    assert parts.trainer.synced == 1 and parts.trainer.saved == [2]  # the last step's checkpoint still saved
    assert last["step"] == 2
    assert (parts.trainer.closed, parts.workers.closed, parts.rewards.closed, parts.evals.closed) == (1, 1, 1, 1)


def test_an_error_in_the_loop_still_shuts_every_actor_down(monkeypatch, tmp_path):
    cfg, parts = _run(monkeypatch, tmp_path, [EMPTY, FULL], Trainer(fail=True))
    with pytest.raises(RuntimeError, match="a rank died"):
        grpo.run(cfg)
    assert (parts.trainer.closed, parts.workers.closed, parts.rewards.closed, parts.evals.closed) == (1, 1, 1, 1)
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1]  # the empty step was logged before step 2 failed


def test_a_failing_shutdown_does_not_keep_the_others_from_running(monkeypatch, tmp_path):
    cfg, parts = _run(monkeypatch, tmp_path, [FULL], Trainer())

    def refuse():
        raise OSError("eval actor gone")

    parts.evals.close = refuse
    with pytest.raises(OSError, match="eval actor gone"):
        grpo.run(cfg)
    assert (parts.trainer.closed, parts.workers.closed, parts.rewards.closed) == (1, 1, 1)


def test_empty_steps_in_a_row_stop_the_run(monkeypatch, tmp_path):
    cfg, parts = _run(monkeypatch, tmp_path, [EMPTY, FULL, EMPTY, EMPTY, EMPTY, FULL], Trainer())
    cfg.run.max_empty_steps = 3
    # steps 1 (empty), 2 (trained: the streak starts over), 3, 4, 5 empty: the third in a row stops the run
    with pytest.raises(RuntimeError, match=r"3 steps in a row came back empty, the last with empty batch \(skipped"):
        grpo.run(cfg)
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3, 4] and len(parts.trainer.trained) == 1
    assert (parts.trainer.closed, parts.workers.closed, parts.rewards.closed, parts.evals.closed) == (1, 1, 1, 1)
