"""The GRPO loop with stand-ins for its actors: skipped samples are logged by kind, a step whose batch came back
empty trains nothing and the run goes on, an error inside the loop still shuts every actor down, a dead trainer is
rebuilt from the last checkpoint with the later steps logged once, and a checkpoint that fails to write (a full disk)
is skipped."""

from __future__ import annotations

import errno
import json
import math

import pytest

from recipes import grpo
from rewards.combine import RewardOutput
from rl.trainer import TrainerDiedError
from rollout.group import RolloutOutput
from rollout.trajectory import Trajectory


def _traj(sample_id: str, g: int) -> Trajectory:
    return Trajectory(sample_id, g, [1], [2, 3], [1, 1], [-0.5, -0.5], finish_reason="answer")


class Workers:
    def __init__(self, outputs):
        self.outputs, self.workers, self.closed = list(outputs), ["engine"], 0

    def rollout(self, batch, seed):
        return self.outputs.pop(0)

    def load_weights(self, trainer):
        return trainer.sync_weights(self.workers)

    def shutdown(self):
        self.closed += 1


class Rewards:
    closed = 0

    def score(self, trajs):
        totals = [float(t.group_index % 2) for t in trajs]  # 0, 1 within each group of two
        return RewardOutput(totals, {"accuracy": list(totals)}, {"accuracy": 0})

    def take_counts(self):
        return {"restarts": 0, "retries": 0}

    def shutdown(self):
        self.closed += 1


class Trainer:
    def __init__(self, fail=False, die_saving=(), full_disk=()):
        self.fail, self.trained, self.synced, self.saved, self.closed = fail, [], 0, [], 0
        self.die_saving, self.full_disk = die_saving, full_disk  # steps whose save fails so

    def train_step(self, trajs, advantages):
        if self.fail:
            raise RuntimeError("a rank failed")
        self.trained.append((len(trajs), [round(a, 4) for a in advantages]))
        return {"train/loss": 0.25}

    def sync_weights(self, workers):
        self.synced += 1
        return 0.0

    def save_checkpoint(self, path, state):
        if state["step"] in self.die_saving:
            raise TrainerDiedError("save_checkpoint", RuntimeError("ActorDiedError: rank 1 was SIGKILLed"))
        if state["step"] in self.full_disk:
            raise OSError(errno.ENOSPC, "No space left on device")
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

    def load_state(self, state):
        pass


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
    with pytest.raises(RuntimeError, match="a rank failed"):
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


def _rows(tmp_path):
    return [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]


def test_a_dead_trainer_is_rebuilt_from_the_last_checkpoint_and_each_step_logged_once(monkeypatch, tmp_path):
    first = Trainer(die_saving=(4,))  # a rank dies while step 4's checkpoint is written
    cfg, parts = _run(monkeypatch, tmp_path, [FULL] * 6, first)
    cfg.run.steps, cfg.run.save_every = 4, 2
    second = Trainer()
    monkeypatch.setattr(grpo, "_make_trainer", lambda cfg, path: second)
    resumed = []
    monkeypatch.setattr(grpo, "resume", lambda run_cfg, run_dir, trainer, sampler: resumed.append(trainer) or 2)
    last = grpo.run(cfg)
    assert resumed == [second] and (first.closed, second.closed) == (
        1,
        1,
    )  # old torn down; new restored, closed at end
    assert first.saved == [2] and second.saved == [4]  # steps 3 and 4 ran again on the rebuilt trainer
    assert len(first.trained) == 4 and len(second.trained) == 2
    assert second.synced == 3  # the rollout workers got the restored weights, then each step's
    rows = _rows(tmp_path)
    assert [r["step"] for r in rows] == [
        1,
        2,
        3,
        4,
    ]  # the rows of the failed steps 3 and 4 were dropped, then relogged
    assert [r["recovery/trainer_restarts"] for r in rows] == [0, 0, 1, 1]
    assert last["step"] == 4


def test_a_trainer_that_keeps_dying_stops_the_run_after_actor_retries(monkeypatch, tmp_path):
    cfg, parts = _run(monkeypatch, tmp_path, [FULL] * 10, Trainer(die_saving=(2,)))
    cfg.run.save_every, cfg.run.actor_retries = 2, 1
    monkeypatch.setattr(grpo, "_make_trainer", lambda cfg, path: Trainer(die_saving=(2,)))
    monkeypatch.setattr(grpo, "resume", lambda *args: 0)
    with pytest.raises(RuntimeError, match=r"rebuilt 1 times already in this run \(run.actor_retries\): giving up"):
        grpo.run(cfg)
    assert parts.workers.closed == 1


def test_a_checkpoint_that_does_not_fit_on_disk_is_skipped_and_training_goes_on(monkeypatch, tmp_path):
    cfg, parts = _run(monkeypatch, tmp_path, [FULL] * 4, Trainer(full_disk=(2,)))
    cfg.run.save_every = 2
    grpo.run(cfg)
    assert parts.trainer.saved == [4] and len(parts.trainer.trained) == 4
    assert [r["recovery/failed_saves"] for r in _rows(tmp_path)] == [0, 0, 1, 1]


def test_the_last_checkpoint_must_be_written(monkeypatch, tmp_path):
    cfg, parts = _run(monkeypatch, tmp_path, [FULL] * 2, Trainer(full_disk=(2,)))
    with pytest.raises(OSError, match="No space left on device"):
        grpo.run(cfg)
    assert parts.workers.closed == 1


class HandRewards(Rewards):
    """Totals set by hand per (sample, group index)."""

    def __init__(self, totals):
        self.totals, self.seen = totals, []

    def score(self, trajs):
        self.seen.append(len(trajs))
        totals = [self.totals[t.sample_id, t.group_index] for t in trajs]
        return RewardOutput(totals, {"accuracy": list(totals)}, {"accuracy": 0})


class RecordingTrainer(Trainer):
    def train_step(self, trajs, advantages):
        self.trained.append([(t.sample_id, t.group_index) for t in trajs])
        self.advantages = list(advantages)
        return {"train/loss": 0.25}


# G = 3, arriving out of order. Group a: g0 0.0, g1 1.0, g2 1.0 -> the tie goes to g1 (the lower index, although g2
# arrives first); mean 2/3, unbiased std sqrt((4/9 + 1/9 + 1/9) / 2) = sqrt(1/3), so g1's advantage is
# (1/3) / sqrt(1/3) = sqrt(1/3) and g0's -2 sqrt(1/3). Group b: 0.5 three times -> g0, advantage 0.
HAND = {("a", 0): 0.0, ("a", 1): 1.0, ("a", 2): 1.0, ("b", 0): 0.5, ("b", 1): 0.5, ("b", 2): 0.5}
OUT_OF_ORDER = RolloutOutput(
    [_traj("a", 2), _traj("a", 0), _traj("a", 1), _traj("b", 1), _traj("b", 2), _traj("b", 0)], 0, {}, {}
)


@pytest.mark.parametrize("best_of_g", [True, False])
def test_best_of_g_trains_exactly_each_groups_highest_reward_trajectory(monkeypatch, tmp_path, best_of_g):
    cfg, parts = _run(monkeypatch, tmp_path, [OUT_OF_ORDER], RecordingTrainer())
    parts.rewards = HandRewards(HAND)
    cfg.best_of_g = best_of_g
    grpo.run(cfg)
    (row,) = _rows(tmp_path)
    assert parts.rewards.seen == [6] and row["rollout/trajectories"] == 6  # all G are rolled out and scored
    assert row["reward/total_mean"] == pytest.approx(3.5 / 6)
    if best_of_g:
        assert parts.trainer.trained == [[("a", 1), ("b", 0)]]
        assert parts.trainer.advantages == pytest.approx([math.sqrt(1 / 3), 0.0], abs=1e-5)
        assert row["grpo/best_of_g_kept"] == 2 and row["grpo/best_of_g_flat_groups"] == 1
        assert row["grpo/best_of_g_reward_mean"] == pytest.approx((1.0 + 0.5) / 2)
        assert row["adv_mean"] == pytest.approx(math.sqrt(1 / 3) / 2, abs=1e-5)  # of what was trained
    else:  # plain GRPO: all six, in arrival order
        ids = [("a", 2), ("a", 0), ("a", 1), ("b", 1), ("b", 2), ("b", 0)]
        r = math.sqrt(1 / 3)
        assert parts.trainer.trained == [ids]
        assert parts.trainer.advantages == pytest.approx([r, -2 * r, r, 0.0, 0.0, 0.0], abs=1e-5)
        assert not any(key.startswith("grpo/") for key in row)


def test_best_of_g_drops_groups_until_the_samples_split_across_ranks(monkeypatch, tmp_path):
    # G = 2 and three samples: six trajectories split across 2 ranks, but three kept ones would not: c is dropped
    # before scoring. a: 0.2 < 0.6 -> g1, advantage 0.2 / sqrt(0.08) = 1/sqrt(2); b: 0.9 > 0.1 -> g0, the same.
    totals = {("a", 0): 0.2, ("a", 1): 0.6, ("b", 0): 0.9, ("b", 1): 0.1, ("c", 0): 0.3, ("c", 1): 0.4}
    out = RolloutOutput([_traj(s, g) for s in "abc" for g in (0, 1)], 0, {}, {})
    cfg, parts = _run(monkeypatch, tmp_path, [out], RecordingTrainer())
    parts.rewards = HandRewards(totals)
    cfg.best_of_g = True
    grpo.run(cfg)
    (row,) = _rows(tmp_path)
    assert parts.rewards.seen == [4] and row["rollout/dropped_groups"] == 1
    assert parts.trainer.trained == [[("a", 1), ("b", 0)]]
    assert parts.trainer.advantages == pytest.approx([1 / math.sqrt(2)] * 2, abs=1e-5)
