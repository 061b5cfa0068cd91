"""Metric trackers: metrics.jsonl, TensorBoard event files and offline wandb runs, read back with each one's reader."""

import json
from pathlib import Path

import pytest

from recipes import tracking
from recipes.config import ConfigError
from recipes.tracking import Tracker, check_trackers, plot_rewards, plot_sft

STEPS = [
    {"step": 1, "reward/total_mean": 0.25, "train/pg_loss": -0.5, "train/kl": 0.0, "note": "warm", "eval/x": None},
    {"step": 2, "reward/total_mean": 0.75, "train/pg_loss": 0.125, "train/kl": 0.0625, "note": "", "eval/x": 3},
]


def test_jsonl_rows_round_trip_and_the_console_line(tmp_path, capsys):
    with Tracker(tmp_path) as tracker:
        for metrics in STEPS:
            tracker.log(metrics)
        tracker.log({"sft/loss": 2.5}, step=3)  # no "step" key: the row gets one
    assert tracker.rows() == [*STEPS, {"step": 3, "sft/loss": 2.5}]
    assert (tmp_path / "metrics.jsonl").read_text().splitlines()[0] == (
        '{"step": 1, "reward/total_mean": 0.25, "train/pg_loss": -0.5, "train/kl": 0.0, "note": "warm", '
        '"eval/x": null}'
    )
    assert tracker.last == {"sft/loss": 2.5}
    out = capsys.readouterr().out.splitlines()
    assert out == [
        "[step 1] total_mean=0.25  pg_loss=-0.5  kl=0",
        "[step 2] total_mean=0.75  pg_loss=0.125  kl=0.0625",
        "[step 3] ",
    ]
    with pytest.raises(ValueError, match="step"):
        tracker.log({"sft/loss": 1.0})


def test_tensorboard_event_files_hold_every_numeric_metric(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    with Tracker(tmp_path, ["jsonl", "tensorboard"], console_keys=("sft/loss",)) as tracker:
        for metrics in STEPS:
            tracker.log(metrics)
        tracker.log({"step": 3, "flag": True})
        # flushed on each log: a live TensorBoard sees the steps before the run ends
        live = EventAccumulator(str(tmp_path / "tensorboard"))
        live.Reload()
        assert [e.step for e in live.Scalars("reward/total_mean")] == [1, 2]
    events = EventAccumulator(str(tmp_path / "tensorboard"))
    events.Reload()
    # strings and None stay in metrics.jsonl; "step" is the x axis, not a scalar
    assert sorted(events.Tags()["scalars"]) == ["eval/x", "flag", "reward/total_mean", "train/kl", "train/pg_loss"]
    assert [(e.step, e.value) for e in events.Scalars("reward/total_mean")] == [(1, 0.25), (2, 0.75)]
    assert [(e.step, e.value) for e in events.Scalars("train/pg_loss")] == [(1, -0.5), (2, 0.125)]
    assert [(e.step, e.value) for e in events.Scalars("eval/x")] == [(2, 3.0)]
    assert [(e.step, e.value) for e in events.Scalars("flag")] == [(3, 1.0)]
    assert len(tracker.rows()) == 3


def test_resume_drops_the_rows_and_events_a_resumed_run_logs_again(tmp_path, capsys):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    with Tracker(tmp_path, ["tensorboard"]) as first:  # crashed after step 3, checkpoint at step 1
        for step in (1, 2, 3):
            first.log({"step": step, "train/kl": step / 4})
    with open(tmp_path / "metrics.jsonl", "a") as f:
        f.write('{"step": 4, "train/k')  # a line cut short by the crash
    with Tracker(tmp_path, ["tensorboard"], resume_from_step=1) as second:
        assert second.rows() == [{"step": 1, "train/kl": 0.25}]
        second.log({"step": 2, "train/kl": 0.5 + 1})
    assert "dropped 3 rows after step 1" in capsys.readouterr().out
    assert second.rows() == [{"step": 1, "train/kl": 0.25}, {"step": 2, "train/kl": 1.5}]
    events = EventAccumulator(str(tmp_path / "tensorboard"))
    events.Reload()
    assert [(e.step, e.value) for e in events.Scalars("train/kl")] == [(1, 0.25), (2, 1.5)]


def test_resume_from_step_zero_starts_the_file_over_and_none_keeps_it(tmp_path):
    (tmp_path / "metrics.jsonl").write_text('{"step": 1, "a": 1}\n{"step": 2, "a": 2}\n')
    assert Tracker(tmp_path).rows() == [{"step": 1, "a": 1}, {"step": 2, "a": 2}]
    assert Tracker(tmp_path, resume_from_step=2).rows() == [{"step": 1, "a": 1}, {"step": 2, "a": 2}]
    assert Tracker(tmp_path, resume_from_step=0).rows() == []
    assert Tracker(tmp_path / "new").rows() == []


def _wandb_records(path: Path):
    """The records of a .wandb file: a 7-byte header, then LevelDB-log chunks (crc, length, type) in 32 KiB blocks,
    each record a protobuf. Recent wandb ships no Python reader for it."""
    from wandb.proto import wandb_internal_pb2

    data, pos, block, buf = path.read_bytes(), 7, 32768, b""
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # a block's tail too short for a chunk header is padding
            pos += block - pos % block
            continue
        length, kind = int.from_bytes(data[pos + 4 : pos + 6], "little"), data[pos + 6]
        buf += data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):  # FULL or LAST: a whole record
            record = wandb_internal_pb2.Record()
            record.ParseFromString(buf)
            buf = b""
            yield record


def _key(item) -> str:
    return item.key or "/".join(item.nested_key)  # recent wandb fills nested_key, older ones key


@pytest.fixture
def wandb_env(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_SILENT", "true")
    for name in ("WANDB_MODE", "WANDB_PROJECT", "WANDB_API_KEY", "WANDB_BASE_URL"):
        monkeypatch.delenv(name, raising=False)
    for name in ("WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR"):  # keep $HOME clean
        monkeypatch.setenv(name, str(tmp_path / "wandb-home" / name.lower()))


@pytest.mark.timeout(120)  # offline: it must never wait on a server
def test_wandb_writes_an_offline_run_under_the_run_dir(tmp_path, wandb_env, capsys):
    run_dir = tmp_path / "run"
    with Tracker(run_dir, ["jsonl", "wandb"], config={"trainer": {"lr": 1e-6}}, run_name="grpo-test") as tracker:
        for metrics in STEPS:
            tracker.log(metrics)
        tracker.log({"step": 1, "eval/late": 0.5})  # wandb cannot go back a step: jsonl keeps it
    assert "wandb cannot log step 1 after step 2" in capsys.readouterr().err
    import wandb

    wandb.teardown()  # finish() returns before wandb's service has written the run file; teardown waits for it
    assert [r["step"] for r in tracker.rows()] == [1, 2, 1]

    (run,) = (run_dir / "wandb").glob("offline-run-*")
    (log,) = run.glob("run-*.wandb")
    records = list(_wandb_records(log))
    history = [
        {key: json.loads(item.value_json) for item in r.history.item if not (key := _key(item)).startswith("_")}
        for r in records
        if r.WhichOneof("record_type") == "history"
    ]
    assert [r.history.step.num for r in records if r.WhichOneof("record_type") == "history"] == [1, 2]
    assert history == [
        {"reward/total_mean": 0.25, "train/pg_loss": -0.5, "train/kl": 0},
        {"reward/total_mean": 0.75, "train/pg_loss": 0.125, "train/kl": 0.0625, "eval/x": 3},
    ]
    (meta,) = [r.run for r in records if r.WhichOneof("record_type") == "run"]
    assert (meta.display_name, meta.project) == ("grpo-test", "actionrl")
    config = {u.key: json.loads(u.value_json) for u in meta.config.update}
    assert config["trainer"] == {"lr": 1e-6}
    assert any(r.WhichOneof("record_type") == "exit" and r.exit.exit_code == 0 for r in records)


def test_check_trackers_names_the_bad_value_and_what_is_allowed(monkeypatch):
    assert check_trackers(["jsonl"]) == []
    assert check_trackers(["jsonl", "tensorboard", "wandb"]) == []
    assert check_trackers(["tensorbord"]) == [
        "run.trackers: unknown tracker 'tensorbord' (did you mean 'tensorboard'?); "
        "choose from jsonl, tensorboard, wandb"
    ]
    assert check_trackers(["mlflow"]) == [
        "run.trackers: unknown tracker 'mlflow'; choose from jsonl, tensorboard, wandb"
    ]
    assert check_trackers("jsonl,wandb") == [
        "run.trackers must be a list of names such as [jsonl,tensorboard], got 'jsonl,wandb'"
    ]
    monkeypatch.setenv("WANDB_MODE", "onlin")
    assert check_trackers(["wandb"]) == [
        "run.trackers: wandb: WANDB_MODE='onlin' is not one of online, offline, disabled, shared"
    ]
    monkeypatch.delenv("WANDB_MODE")

    monkeypatch.setattr(tracking.importlib.util, "find_spec", lambda name: None)  # neither package installed
    assert check_trackers(["jsonl", "wandb", "tensorboard"]) == [
        "run.trackers: 'wandb' needs the wandb package, which is not installed: "
        "pip install 'wandb>=0.17' (or pip install -e '.[trackers]')",
        "run.trackers: 'tensorboard' needs the tensorboard package, which is not installed: "
        "pip install 'tensorboard>=2.14' (or pip install -e '.[trackers]')",
    ]


def test_a_bad_tracker_name_fails_before_anything_is_written(tmp_path):
    with pytest.raises(ConfigError, match="did you mean 'wandb'"):
        Tracker(tmp_path / "run", ["jsonl", "wanbd"])
    assert not (tmp_path / "run").exists()


def test_plots_write_pngs(tmp_path):
    grpo = [
        {"step": 1, "reward/total_mean": 0.2, "reward/format_mean": 1.0},
        {"step": 2, "reward/total_mean": 0.4, "reward/format_mean": 0.5, "reward/accuracy_mean": 0.0},
    ]
    sft = [{"step": 1, "sft/loss": 3.0, "sft/lr": 1e-5}, {"step": 2, "sft/loss": 2.0, "sft/lr": 5e-6}, {"step": 2}]
    for out in (plot_rewards(grpo, tmp_path / "rewards.png"), plot_sft(sft, tmp_path / "loss.png")):
        data = out.read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n"
        # figsize 7x4 inches at 100 dpi
        assert (int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")) == (700, 400)
