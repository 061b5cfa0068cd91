"""One record that cannot be prepared costs its own n trajectories, not the batch: the worker yields placeholders
naming the kind of failure and keeping its text, counts them, and RolloutGroup drops and counts them by kind.
Expected values written by hand."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from envs.base import Video
from rollout.engine import SamplingParams
from rollout.group import RolloutGroup, RolloutOutput, split_skipped
from rollout.trajectory import Trajectory

ANSWER = "<answer>x</answer>"


def synthetic_reader(path, num_frames, clip=None, max_side=None):
    """`synthetic:good` is a 4-frame colour clip, `synthetic:gray` a clip without a channel axis (which the
    processing refuses); any other path goes to the real reader."""
    if path == "synthetic:good":
        frames = np.random.default_rng(0).integers(0, 255, size=(4, 56, 56, 3), dtype=np.uint8)
        return Video(frames=frames, timestamps=[0.0, 0.5, 1.0, 1.5], path=path, key=path)
    if path == "synthetic:gray":
        return Video(frames=np.zeros((4, 56, 56), np.uint8), timestamps=[0.0, 0.5, 1.0, 1.5], path=path, key=path)
    from envs.video import read_video

    return read_video(path, num_frames=num_frames, clip=clip, max_side=max_side)


@pytest.fixture(scope="module")
def worker(tiny_model_dir):
    from transformers import AutoProcessor

    from rollout.config import RolloutConfig
    from rollout.scripted_engine import ScriptedEngine
    from rollout.worker import RolloutWorker

    tok = AutoProcessor.from_pretrained(tiny_model_dir).tokenizer
    return RolloutWorker(
        RolloutConfig(num_frames=4, max_side=56),
        tiny_model_dir,
        engine=ScriptedEngine(tok, [ANSWER]),
        video_reader=synthetic_reader,
    )


def test_each_bad_record_yields_its_own_placeholders_and_the_batch_goes_on(worker, tmp_path):
    records = [
        {"id": "good", "video": "synthetic:good", "prompt": "What happens?"},
        {"id": "noprompt", "video": "synthetic:good"},  # build_prompt: KeyError
        {"id": "dir", "video": str(tmp_path), "prompt": "?"},  # a directory: read_video says "no such file"
        {"id": "novideo", "prompt": "?"},  # record["video"]: KeyError
        {"id": "gray", "video": "synthetic:gray", "prompt": "?"},  # process_video: ValueError
        None,  # not a record at all: TypeError, and its id is its position
        {"id": "good2", "video": "synthetic:good", "prompt": "And now?"},
    ]
    before = worker.stats()
    trajs = worker.rollout(records, 2, SamplingParams(max_new_tokens=16))

    assert [(t.sample_id, t.group_index, t.finish_reason) for t in trajs] == [
        ("good", 0, "answer"),
        ("good", 1, "answer"),
        ("noprompt", 0, "sample_error"),
        ("noprompt", 1, "sample_error"),
        ("dir", 0, "video_error"),
        ("dir", 1, "video_error"),
        ("novideo", 0, "sample_error"),
        ("novideo", 1, "sample_error"),
        ("gray", 0, "sample_error"),
        ("gray", 1, "sample_error"),
        ("5", 0, "sample_error"),
        ("5", 1, "sample_error"),
        ("good2", 0, "answer"),
        ("good2", 1, "answer"),
    ]
    errors = [t.record.get("rollout_error") for t in trajs[::2]]
    assert errors == [
        None,
        "KeyError: \"record 'noprompt' has no field 'prompt'\"",
        f"VideoDecodeError: cannot decode video {tmp_path}: no such file",
        "KeyError: 'video'",
        "ValueError: video frames must be T x H x W x 3, got shape (4, 56, 56)",
        "TypeError: 'NoneType' object is not subscriptable",
        None,
    ]
    for t in trajs:
        assert len(t.response_ids) == len(t.response_mask) == len(t.rollout_logprobs)
        if t.finish_reason.endswith("_error"):
            assert (t.prompt_ids, t.response_ids, t.mm_inputs, t.turns) == ([], [], {}, [])
    # The record is a copy: the caller's records are left as they were.
    assert trajs[2].record == {"id": "noprompt", "video": "synthetic:good", "rollout_error": errors[1]}
    assert "rollout_error" not in records[1]
    # The good records are untouched by their neighbours.
    assert trajs[0].final_text == ANSWER and trajs[0].mm_inputs["video_grid_thw"].tolist() == [[2, 4, 4]]

    after = worker.stats()
    gained = {k: after[k] - before.get(k, 0) for k in ("records", "trajectories", "video_errors", "sample_errors")}
    assert gained == {"records": 7, "trajectories": 14, "video_errors": 1, "sample_errors": 4}


def test_a_batch_of_only_bad_records_runs_no_episode(worker):
    engine_calls = worker.engine.calls
    trajs = worker.rollout([{"id": "a"}, {"id": "b", "video": "synthetic:good"}], 3, SamplingParams())
    assert [t.finish_reason for t in trajs] == ["sample_error"] * 6
    assert worker.engine.calls == engine_calls  # nothing to generate


def test_stats_name_every_kind_from_the_start(worker):
    from rollout.worker import SAMPLE_ERRORS

    assert SAMPLE_ERRORS == ("video_error", "sample_error")
    assert {"video_errors", "sample_errors"} <= set(worker.stats())


def _t(sample_id, group_index, reason="answer"):
    return Trajectory(sample_id, group_index, [1], [2], [1], [0.0], finish_reason=reason)


def test_split_skipped_counts_records_by_kind():
    # Two workers' shares, n=2; both fell back to the position "0" as id, so ids do not tell records apart.
    trajs = [
        _t("a", 0),
        _t("a", 1, "length"),
        _t("0", 0, "sample_error"),
        _t("0", 1, "sample_error"),
        _t("0", 0, "video_error"),
        _t("0", 1, "video_error"),
        _t("x", 0, "sample_error"),
        _t("x", 1, "sample_error"),
    ]
    out = split_skipped(trajs, {"pose": {"calls": 1}})
    assert [(t.sample_id, t.group_index) for t in out.trajectories] == [("a", 0), ("a", 1)]
    assert out.skipped == 3 and out.skipped_by_kind == {"video_error": 1, "sample_error": 2, "quarantined": 0}
    assert out.tool_stats == {"pose": {"calls": 1}}
    clean = split_skipped([_t("a", 0)], {})
    assert (clean.skipped, clean.skipped_by_kind) == (0, {"video_error": 0, "sample_error": 0, "quarantined": 0})


def test_rollout_output_keeps_its_positional_form():
    out = RolloutOutput([], 0, {})
    assert out.skipped_by_kind == {}


class FakeWorker:
    """A rollout worker that fails every record without a prompt the way RolloutWorker does, and answers the rest."""

    def __init__(self, cfg=None, model_path="", seed=0, torch_threads=None):
        pass

    def rollout(self, records, n, sampling):
        return [
            Trajectory(r["id"], g, [1], [2], [1], [0.0], finish_reason="answer" if "prompt" in r else "sample_error")
            for r in records
            for g in range(n)
        ]

    def tool_stats(self, reset=True):
        return {"echo": {"calls": 2}}


def test_rollout_group_drops_and_counts_by_kind(ray_local, monkeypatch):
    import rollout.worker
    from rollout.config import RolloutConfig

    ray = ray_local
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    monkeypatch.setattr(rollout.worker, "RolloutWorker", FakeWorker)  # the group's logic over stand-ins, no model
    group = RolloutGroup(RolloutConfig(n=2, num_workers=2, num_cpus=0), "no-model")
    records = [{"id": "a", "prompt": "?"}, {"id": "b"}, {"id": "c"}, {"id": "d", "prompt": "?"}]
    out = group.rollout(records, seed=1)  # one chunk per record, balanced over the two workers
    assert [(t.sample_id, t.group_index) for t in out.trajectories] == [("a", 0), ("a", 1), ("d", 0), ("d", 1)]
    assert (out.skipped, out.skipped_by_kind) == (2, {"video_error": 0, "sample_error": 2, "quarantined": 0})
    assert out.tool_stats == {"echo": {"calls": 4}}
    group.shutdown()
