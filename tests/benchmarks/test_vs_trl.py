"""benchmarks/vs_trl.py without TRL: its arithmetic and table on numbers worked out by hand, its command line, our
side's config, the shared rewards, TRL's side's pure helpers, and the parent's line protocol with a stand-in child
process (TRL itself is not installed here)."""

import doctest
import json
import sys

import pytest

import benchmarks._trl_side as trl_side
import benchmarks.vs_trl_rewards as rewards
from benchmarks.vs_trl import TrlSide, our_overrides, parse_args, report, steady, summarize
from rollout.multimodal import VISION_TOKEN_IDS
from rollout.trajectory import Trajectory


def _row(step, rollout, rewards_s, train, sync, tools=0.0):
    return {
        "time/step": step,
        "time/rollout": rollout,
        "time/tools": tools,
        "time/rewards": rewards_s,
        "time/train": train,
        "time/sync": sync,
    }


ROWS = [
    _row(20.0, 10.0, 1.0, 8.0, 1.0),  # warm-up: left out
    _row(3.0, 1.0, 0.1, 1.0, 0.2, tools=0.5),
    _row(7.0, 2.0, 0.2, 4.0, 0.2),
    _row(4.0, 1.5, 0.1, 1.5, 0.3),
]


def test_summarize_medians_after_warmup():
    s = summarize([9.0, 5.0, 4.0, 9.0], ROWS, warmup=1)  # medians, not means: the means differ here
    assert s["trl"] == pytest.approx(5.0)  # median of 5, 4, 9 (mean 6)
    assert s["ours"] == pytest.approx(4.0)  # median of 3, 7, 4
    assert s["rollout"] == pytest.approx(1.5)  # rollout + tools: 1.5, 2.0, 1.5
    assert s["rewards"] == pytest.approx(0.1) and s["train"] == pytest.approx(
        1.5
    )  # of 1.0, 4.0, 1.5 and s["sync"] == pytest.approx(0.2)
    assert s["other"] == pytest.approx(0.7)  # 4.0 - (1.5 + 0.1 + 1.5 + 0.2)
    assert s["ratio"] == pytest.approx(0.8)  # 4.0 / 5.0
    assert (s["first"], s["last"]) == (2, 4)


def test_steady_refuses_when_warmup_takes_every_step():
    assert steady([1.0, 2.0, 3.0], 2) == [3.0]
    with pytest.raises(ValueError, match="no steps after the 2 warm-up"):
        steady([1.0, 2.0], 2)


def test_report_table():
    s = summarize([9.0, 5.0, 4.0, 9.0], ROWS, warmup=1)
    trl_info = {
        "trl": "1.16.0",
        "torch_threads": 2,
        "image_size": [112, 112],
        "image_grid_thw": [1, 8, 8],
        "visual_tokens": 16,
        "prompt_tokens": 88,
    }
    our_info = {
        "trainer_threads": 1,
        "rollout_threads": 1,
        "frame_size": "112x112",
        "video_grid_thw": [1, 8, 8],
        "visual_tokens": 16,
        "prompt_tokens": 88,
    }
    lines = report(s, trl_info, our_info).splitlines()
    assert lines[0] == "median over steps 2-4 (3 steps; the first 1 left out as warm-up)"
    assert lines[1].split() == ["side", "s/step", "rollout", "rewards", "train", "sync", "other"]
    assert lines[2].split() == ["TRL", "1.16.0", "GRPOTrainer", "5.00", "-", "-", "-", "-", "-"]
    assert lines[3].split()[-6:] == ["4.00", "1.50", "0.10", "1.50", "0.20", "0.70"]
    assert lines[4] == "ratio ours/TRL: 0.80x"
    assert lines[5] == "torch threads: TRL 2 (one process); ours trainer rank 1, rollout worker 1"
    assert "16 visual tokens, 88 prompt tokens" in lines[6] and "16 visual tokens, 88 prompt tokens" in lines[7]


def test_parse_args():
    args = parse_args(["--trl-python", "/x/python", "trainer.micro_batch_size=2"])
    assert (args.steps, args.warmup, args.trl_threads, args.seed) == (6, 1, 0, 0)
    assert args.trl_python == "/x/python" and args.overrides == ["trainer.micro_batch_size=2"]
    for bad in (["--steps", "1"], ["--warmup", "-1"], ["notakeyvalue"]):
        with pytest.raises(SystemExit):
            parse_args(["--trl-python", "p", *bad])
    with pytest.raises(SystemExit):
        parse_args([])  # --trl-python is required


def test_our_overrides_make_a_valid_config(tmp_path):
    from recipes import grpo

    video = tmp_path / "clip.mp4"
    video.write_bytes(b"")  # the config checks the records file, not the videos
    record = {"id": "a", "task": "ovar", "video": str(video), "prompt": "p", "answer": "wave"}
    record.update(label="wave", candidates=["wave", "squat"])
    (tmp_path / "records.jsonl").write_text(json.dumps(record) + "\n")
    (tmp_path / "system.txt").write_text("Think, then answer.")
    cfg = grpo.load(our_overrides(tmp_path, tmp_path / "records.jsonl", steps=6, seed=0), None)
    assert cfg.rollout.system_prompt == "Think, then answer."
    assert (cfg.data.batch_size, cfg.rollout.n, cfg.rollout.max_new_tokens, cfg.rollout.max_turns) == (2, 4, 32, 1)
    assert (cfg.rollout.num_frames, cfg.rollout.max_side, cfg.rollout.temperature) == (2, 112, 0.7)
    assert (cfg.trainer.world_size, cfg.trainer.kl_coef, cfg.trainer.micro_batch_size) == (1, 0.04, 8)
    assert cfg.rollout.enabled_tools() == {} and cfg.run.save_every > cfg.run.steps == 6
    assert [c.name for c in cfg.rewards.components] == [
        "benchmarks.vs_trl_rewards:format_reward",
        "benchmarks.vs_trl_rewards:accuracy_reward",
    ]


@pytest.mark.parametrize(
    "text, answer, fmt, acc",
    [
        ("<think>the arm swings</think>\n<answer>wave</answer>", "wave", 1.0, 1.0),
        ("<think>knees bend</think><answer>Squat </answer>", "squat", 1.0, 1.0),
        ("<think>x</think><answer>punch</answer>", "wave", 1.0, 0.0),
        ("<answer>wave</answer>", "wave", 0.0, 1.0),
        ("wave", "wave", 0.0, 0.0),
        ("<think>x</think><answer>wave</answer> trailing", "wave", 0.0, 1.0),
        ("", "wave", 0.0, 0.0),
    ],
)
def test_rewards_same_on_both_sides(text, answer, fmt, acc):
    traj = Trajectory("s", 0, [], [], [], [], final_text=text)
    assert rewards.format_reward(traj, {"answer": answer}) == fmt
    assert rewards.accuracy_reward(traj, {"answer": answer}) == acc
    trl_format, trl_accuracy = trl_side.reward_functions(rewards)
    completions = [[{"role": "assistant", "content": text}]]
    assert trl_format(completions, answer=[answer]) == [fmt]
    assert trl_accuracy(completions, answer=[answer]) == [acc]


def test_doctests():
    assert doctest.testmod(rewards).failed == 0
    assert doctest.testmod(trl_side).failed == 0


SPEC = {
    "model_dir": "/m",
    "rewards_file": "/r.py",
    "system_prompt": "sys",
    "rows": [
        {"prompt": "p0", "answer": "a0", "image": "/i0.png"},
        {"prompt": "p1", "answer": "a1", "image": "/i1.png"},
    ],
    "batch_size": 2,
    "num_generations": 4,
    "max_new_tokens": 32,
    "temperature": 0.7,
    "beta": 0.04,
    "lr": 1e-5,
    "clip_ratio": 0.2,
    "steps": 3,
    "seed": 0,
    "threads": 0,
    "output_dir": "/o",
}


def test_trl_config_matches_the_work():
    kw = trl_side.grpo_config_kwargs(SPEC)
    # 2 prompts x G=4 = 8 completions per optimizer step, no accumulation
    assert (kw["per_device_train_batch_size"], kw["gradient_accumulation_steps"], kw["num_generations"]) == (8, 1, 4)
    assert (kw["max_completion_length"], kw["beta"], kw["temperature"], kw["max_steps"]) == (32, 0.04, 0.7, 3)
    assert (kw["bf16"], kw["gradient_checkpointing"], kw["use_cpu"]) == (False, False, True)
    # the same vision tokens as our hf engine suppresses
    assert sorted(kw["generation_kwargs"]["suppress_tokens"]) == sorted(VISION_TOKEN_IDS)


def test_trl_rows_and_spec_check():
    rows = trl_side.dataset_rows(SPEC)
    assert [r["answer"] for r in rows] == ["a0", "a1"] * 3  # the two prompts once per step, in order
    assert rows[1]["prompt"] == [{"role": "system", "content": "sys"}, {"role": "user", "content": "p1"}]
    assert rows[1]["image"] == "/i1.png"
    with pytest.raises(ValueError, match=r"spec.json: missing keys beta, seed"):
        trl_side.check_spec({k: v for k, v in SPEC.items() if k not in ("beta", "seed")}, "spec.json")
    with pytest.raises(ValueError, match="'rows' has 2 prompts, 'batch_size' is 4"):
        trl_side.check_spec({**SPEC, "batch_size": 4})


CHILD = """
import json, sys
print("noise from a library")
print(json.dumps({"event": "ready", "torch_threads": 2}), flush=True)
step = 0
for line in sys.stdin:
    if line.strip() != "step":
        break
    step += 1
    if step == 3:
        sys.stderr.write("boom: the child failed\\n")
        raise SystemExit(3)
    print(json.dumps({"event": "step", "step": step, "seconds": step * 1.5}), flush=True)
"""


def test_trl_side_protocol(tmp_path):
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    side = TrlSide(sys.executable, tmp_path / "spec.json", tmp_path / "child.log", timeout_s=60, script=script)
    assert side.next_event("ready")["torch_threads"] == 2  # the noise line before it is skipped
    assert side.step() == {"event": "step", "step": 1, "seconds": 1.5}
    assert side.step()["seconds"] == 3.0
    with pytest.raises(RuntimeError, match=r"(?s)ended \(exit code 3\).*boom: the child failed"):
        side.step()
