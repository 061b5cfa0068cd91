"""End to end on real Ray actors and the real tiny model: two checkpoints (the tiny model as saved by a recipe,
and a perturbed copy) evaluated by two actors and by one, watch mode, FineAgent on MCQ, evaluation in training."""

from __future__ import annotations

import json
import os
import shutil
import threading
import time
from pathlib import Path

import pytest

COMMON = ["--limit", "3", "--max-new-tokens", "8", "--num-cpus", "0.5", "--max-side", "112"]


def save_checkpoint(src: str, dst: Path, step: int, noise: float = 0.0) -> Path:
    """The recipe's layout (rl/checkpoint.py): the from_pretrained files + trainer_state/extra_state.json with the
    step, the COMPLETE marker last; with `noise`, every weight perturbed (read and written with safetensors, no
    model built)."""
    import torch
    from safetensors.torch import load_file, save_file

    from common.checkpoint_marker import write_marker

    shutil.copytree(src, dst)
    if noise:
        gen = torch.Generator().manual_seed(step)
        for path in dst.glob("*.safetensors"):
            state = load_file(str(path))
            state = {
                k: v + torch.randn(v.shape, generator=gen, dtype=v.dtype) * noise if v.is_floating_point() else v
                for k, v in state.items()
            }
            save_file(state, str(path), metadata={"format": "pt"})
    (dst / "trainer_state").mkdir()
    (dst / "trainer_state" / "extra_state.json").write_text(json.dumps({"step": step}))
    write_marker(dst, step)
    return dst


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, tiny_model_dir) -> Path:
    run = tmp_path_factory.mktemp("run")
    save_checkpoint(tiny_model_dir, run / "checkpoint-2", 2)
    save_checkpoint(tiny_model_dir, run / "checkpoint-4", 4, noise=0.05)
    return run


def read_results(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]


def write_later(src: Path, dst: Path, delay: float, when: dict) -> threading.Thread:
    """Copy a checkpoint into place after `delay` seconds, whole (a rename), as a run saving it would."""

    def run():
        time.sleep(delay)
        shutil.copytree(src, dst.with_name("partial"))
        os.rename(dst.with_name("partial"), dst)
        when["written"] = time.time()

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def test_two_actors_then_watch_with_one(run_dir, ray_local, tmp_path):
    """Two actors on two checkpoints; then one actor watching a run directory where the second checkpoint appears
    only after the watch started: the same metrics and replies, tagged with the same steps."""
    from eval.run import main

    two, one = tmp_path / "two", tmp_path / "one"
    ckpts = ["--checkpoint", str(run_dir / "checkpoint-2"), "--checkpoint", str(run_dir / "checkpoint-4")]
    main([*ckpts, "--benchmark", "sample-aqa", "--actors", "2", "--out", str(two), *COMMON])

    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text("run:\n  steps: 4\n")  # as a recipe writes it: the run ends at step 4
    shutil.copytree(run_dir / "checkpoint-2", run / "checkpoint-2")
    when: dict = {}
    writer = write_later(run_dir / "checkpoint-4", run / "checkpoint-4", 2.0, when)
    started = time.time()
    try:
        main(
            [
                "--watch",
                str(run),
                "--benchmark",
                "sample-aqa",
                "--actors",
                "1",
                "--out",
                str(one),
                "--poll",
                "0.5",
                "--watch-timeout",
                "120",
                *COMMON,
            ]
        )
    finally:
        writer.join()
    assert when["written"] > started  # checkpoint-4 appeared while the watch was running, and it stopped by itself

    m2, m1 = (json.loads((d / "metrics.json").read_text()) for d in (two, one))
    assert [e["step"] for e in m2["results"]] == [2, 4]
    strip = [{k: v for k, v in e.items() if k != "checkpoint"} for e in m2["results"]]  # paths differ
    assert strip == [{k: v for k, v in e.items() if k != "checkpoint"} for e in m1["results"]]
    rows2, rows1 = read_results(two), read_results(one)
    assert len(rows2) == 6 and [r["id"] for r in rows2] == [r["id"] for r in rows1]  # record order, per checkpoint
    assert [r["prediction"] for r in rows2] == [r["prediction"] for r in rows1]
    assert [r["step"] for r in rows2] == [2, 2, 2, 4, 4, 4] == [r["step"] for r in rows1]
    # the two checkpoints really differ (the perturbed one answers differently)
    assert [r["prediction"] for r in rows2[:3]] != [r["prediction"] for r in rows2[3:]]
    assert all({"parsed", "metrics", "finish_reason"} <= set(r) for r in rows2)

    table = (two / "table.md").read_text()
    assert "| Checkpoint | Step | Action Acc. | SED | tIoU | Difficulty ρ" in table
    assert "| checkpoint-2 | 2 |" in table and "| checkpoint-4 | 4 |" in table
    for png in ("metrics_vs_step.png", "aqa_scatter.png"):
        assert (two / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def mcq_records(tmp_path: Path) -> Path:
    from common.sample_data import build_sample_data, default_sample_dir

    videos = sorted((build_sample_data(default_sample_dir())["root"] / "videos").glob("eval_*.mp4"))
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"not a video")
    options = {"A": "waving", "B": "squatting", "C": "kicking", "D": "clapping"}
    recs = [
        {
            "id": f"m{i}",
            "task": "mcq",
            "video": str(v),
            "prompt": "What is the person doing? Answer with a letter.",
            "answer": "A",
            "options": options,
            "category": cat,
            "meta": {"boxes": [{"box": [0.1 * (i + 1), 0.2, 0.6, 0.9], "person_id": 1}]},
        }
        for i, (v, cat) in enumerate(
            [(videos[0], "person movement"), (videos[1], "object manipulation"), (broken, "person movement")]
        )
    ]
    path = tmp_path / "mcq.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in recs))
    return path


def test_fineagent_on_mcq_with_and_without(run_dir, ray_local, tmp_path):
    from eval.run import main

    out = tmp_path / "out"
    bench = mcq_records(tmp_path)
    main(
        [
            "--checkpoint",
            str(run_dir / "checkpoint-2"),
            "--benchmark",
            str(bench),
            "--fineagent",
            "localizer:oracle",
            "--out",
            str(out),
            *COMMON,
        ]
    )
    entries = json.loads((out / "metrics.json").read_text())["results"]
    assert [e["variant"] for e in entries] == ["", "localizer:oracle"]
    assert all(e["metrics"]["failed"] == 1 and e["metrics"]["n"] == 3 for e in entries)  # the broken video
    rows = [r for r in read_results(out) if r["variant"] == "localizer:oracle"]
    assert "in the box [0.100, 0.200, 0.600, 0.900]" in rows[0]["prompt"]
    assert "in the box [0.200, 0.200, 0.600, 0.900]" in rows[1]["prompt"]
    assert rows[2]["failed"] and rows[2]["parsed"]["letter"] == ""
    table = (out / "table.md").read_text()
    assert "| Checkpoint | Step | object manipulation | person movement | Avg. | Blank |" in table
    assert "checkpoint-2 + FineAgent (localizer:oracle)" in table


def test_descriptor_needs_its_tool(monkeypatch, tmp_path):
    from envs import base
    from eval.fineagent import FineAgentError, check_fineagent

    monkeypatch.delitem(base._REGISTRY, "video_description", raising=False)
    monkeypatch.delitem(base._REGISTRY, "human_detection", raising=False)
    records = [json.loads(line) for line in mcq_records(tmp_path).read_text().splitlines()]
    check_fineagent(["localizer:oracle"], records)  # the records' boxes: no tool needed
    with pytest.raises(FineAgentError, match="'video_description' tool, which is not registered"):
        check_fineagent(["descriptor"], records)
    with pytest.raises(FineAgentError, match="localizer:detector needs the 'human_detection' tool"):
        check_fineagent(["localizer:detector"], records)


def test_training_eval_logs_each_launch_with_its_step(run_dir, ray_local, tmp_path):
    from eval.config import EvalConfig
    from eval.during_training import TrainingEval
    from rollout.config import RolloutConfig

    cfg = EvalConfig(every_k=2, benchmark="sample-aqa", limit=1)
    evals = TrainingEval(cfg, tmp_path, RolloutConfig(max_new_tokens=8, max_side=112))
    assert not evals.launch(1, run_dir / "checkpoint-2")  # not a multiple of every_k
    assert evals.launch(2, run_dir / "checkpoint-2") and evals.launch(4, run_dir / "checkpoint-4")
    logged = evals.close()
    lines = [json.loads(x) for x in (tmp_path / "eval_metrics.jsonl").read_text().splitlines()]
    assert [x["step"] for x in lines] == [2, 4] == [x["step"] for x in logged]
    assert all("eval/sed" in x and x["eval/n"] == 1 for x in lines)
    assert (tmp_path / "eval" / "table.md").is_file()
    off = TrainingEval(EvalConfig(), tmp_path, RolloutConfig())
    assert not off.due(2) and not off.launch(2, run_dir / "checkpoint-2")


def test_sample_mcq_with_and_without_fineagent(tiny_model_dir, ray_local, tmp_path):
    """The bundled sample MCQ benchmark on the tiny model: plain, with the oracle localizer, and with the detector
    localizer and the descriptor (the embedded describer, whose words are noise: the plumbing is real)."""
    from common.schema import load_records
    from eval.benchmarks import resolve
    from eval.run import main

    out = tmp_path / "out"
    describer = {"kind": "local", "model": "embedded", "max_new_tokens": 4}
    tools = json.dumps({"video_description": {"key_frames": 1, "describer": describer}})
    main(
        [
            *("--checkpoint", tiny_model_dir, "--benchmark", "sample-mcq", "--out", str(out)),
            *("--fineagent", "localizer:oracle", "--fineagent", "descriptor,localizer:detector"),
            *("--fineagent-tools", tools, "--max-new-tokens", "8", "--num-cpus", "0.5", "--max-side", "112"),
        ]
    )
    records = {r["id"]: r for r in load_records(resolve("sample-mcq"))}
    entries = json.loads((out / "metrics.json").read_text())["results"]
    assert [e["variant"] for e in entries] == ["", "localizer:oracle", "localizer:detector+descriptor"]
    for e in entries:
        m = e["metrics"]
        assert m["n"] == len(records) == 8 and m["failed"] == 0
        assert 0.0 <= m["accuracy"] <= 1.0 and 0.0 <= m["accuracy_released_reader"] <= 1.0
        assert {"accuracy/person movement", "accuracy/person interaction"} <= set(m)
    rows = read_results(out)
    assert "prompt" not in next(r for r in rows if r["variant"] == "")  # plain: the record's own prompt
    for row in (r for r in rows if r["variant"] == "localizer:oracle"):
        box = records[row["id"]]["meta"]["boxes"][0]["box"]
        assert f"in the box [{', '.join(f'{x:.3f}' for x in box)}]" in row["prompt"]
        assert row["prompt"].endswith(records[row["id"]]["prompt"])
    detector = {r["id"]: r for r in rows if r["variant"] == "localizer:detector+descriptor"}
    assert all("\nDescriptor (frame captions): " in r["prompt"] for r in detector.values())
    # the real man of carphone_pristine.mp4: the detector's box is about the one drawn by hand
    talk = detector["sample-mcq-07-talk"]["fineagent"]["localizer_box"]
    x1, y1, x2, y2 = talk
    assert x1 < 0.2 and y1 < 0.15 and x2 > 0.9 and y2 > 0.9, talk
    table = (out / "table.md").read_text()
    assert "| Checkpoint | Step | person interaction | person movement | Avg. | Blank |" in table
    assert "+ FineAgent (localizer:oracle)" in table and "+ FineAgent (localizer:detector, descriptor)" in table
