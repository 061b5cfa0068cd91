"""The timeline's rows and bars from Ray task events, on events written by hand."""

import doctest

from benchmarks import timeline
from benchmarks.timeline import busy_spans, plot_timeline


def event(cat: str, tid: str, start_s: float, seconds: float) -> dict:
    return {"cat": cat, "tid": tid, "ts": start_s * 1e6, "dur": seconds * 1e6, "ph": "X"}


def test_rows_per_actor_clipped_to_the_window(tmp_path):
    events = [
        event("task::TrainerRank.train_step", "worker:t1", 100.0, 4.0),
        event("task::TrainerRank.train_step", "worker:t0", 100.0, 4.0),
        event("task::TrainerRank.sync_weights", "worker:t0", 104.0, 0.5),
        event("task::RolloutWorker.rollout", "worker:r", 99.0, 6.0),  # starts before the window
        event("task::RewardWorker.score", "worker:w", 98.0, 0.5),  # ends before the window: left out
        event("task::PoseTool.call_batch", "worker:p", 101.0, 1.0),
        event("task:execute", "worker:t0", 100.0, 4.0),  # not a method call
        event("submit_task", "driver:d", 100.0, 1.0),
    ]
    spans = busy_spans(events, 100.0, 104.25)
    # rollout workers first, then the trainer ranks numbered by their first call (a tie here), then the rest
    assert list(spans) == ["RolloutWorker", "TrainerRank 0", "TrainerRank 1", "PoseTool"]
    assert spans["RolloutWorker"] == [(0.0, 4.25, "rollout")]  # 99-105 clipped to 100-104.25
    ranks = [spans["TrainerRank 0"], spans["TrainerRank 1"]]
    assert sorted(len(r) for r in ranks) == [1, 2]
    assert (0.0, 4.0, "train_step") in ranks[0] and (4.0, 4.25, "sync_weights") in ranks[0] + ranks[1]
    assert spans["PoseTool"] == [(1.0, 2.0, "call_batch")]
    out = plot_timeline(spans, tmp_path / "t.png", "test")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_doctests():
    assert doctest.testmod(timeline).failed == 0
