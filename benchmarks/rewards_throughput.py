"""Throughput of the rule-based rewards: samples per second of each on synthetic completions, and their share of a
GRPO step.

Each reward scores `--n` seeded synthetic completions of its task (Video-STAR think-then-answer replies with
ranked sub-motions and tool calls, HieroAction SAR replies with a JSON answer, FineBench letter replies; a mix of
well-formed, wrong and malformed ones), in process, one sample at a time as a reward worker does. The share of
the step is (samples per step x seconds per sample) / step seconds, for the step time you give.

    python benchmarks/rewards_throughput.py                                  # 10,000 completions, 60 s steps
    python benchmarks/rewards_throughput.py --step-seconds 25 --samples-per-step 64
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rewards.registry import get_reward  # noqa: E402
from rollout.trajectory import ToolCall, Trajectory, Turn  # noqa: E402

RULE_REWARDS = (
    "accuracy",
    "format",
    "tool_usage",
    "submotion",
    "sar_format",
    "temporal_iou",
    "hier_action",
    "aqa_score",
    "mcq",
)
TASK_OF = {"accuracy": "ovar", "format": "ovar", "tool_usage": "ovar", "submotion": "ovar", "mcq": "mcq"}
MOTIONS = ["leg bending", "torso jumping", "arm extending", "hand-ball releasing", "knee flexion", "wrist rotation"]
LABELS = ["shoot ball", "dribble", "climb stairs", "brush hair", "push up"]
PHASES = ["take off", "somersault", "twist", "entry"]


def _ovar(rng: random.Random, i: int) -> Trajectory:
    label = rng.choice(LABELS)
    truth = rng.sample(MOTIONS, 3)
    listed = rng.sample(MOTIONS, rng.randint(0, 5))
    said = label if rng.random() < 0.6 else rng.choice(LABELS)
    think = f"Sub-motions: {' → '.join(listed)}\nThe pose tool shows the arms extending. " * rng.randint(1, 3)
    text = f"<think>{think}</think> <answer>{said}</answer>" if rng.random() < 0.9 else f"<answer>{said}"
    calls = [ToolCall("pose_estimation", {"frames": [0, 8]}, ok=rng.random() < 0.8, response="17 keypoints")]
    record = {"id": f"o{i}", "task": "ovar", "answer": label, "label": label, "sub_motions": truth}
    turns = [Turn("<tool_call>...</tool_call>", calls), Turn(text)]
    return Trajectory(f"o{i}", 0, [], [], [], [], turns=turns, final_text=text, record=record)


def _segments(rng: random.Random, names: list[str]) -> list[dict]:
    t, out = 0.0, []
    for name in names:
        length = rng.uniform(0.3, 2.0)
        out.append({"name": name, "start": round(t, 2), "end": round(t + length, 2)})
        t += length
    return out


def _aqa(rng: random.Random, i: int) -> Trajectory:
    names = rng.sample(PHASES, rng.randint(2, 4))
    truth = _segments(rng, names)
    pred = {
        "action": rng.choice(["407C", "305B", "5253B"]),
        "sub_actions": _segments(rng, rng.sample(PHASES, rng.randint(1, 4))),
        "difficulty": round(rng.uniform(1.5, 3.8), 1),
        "score": round(rng.uniform(20, 95), 1),
    }
    body = json.dumps(pred) if rng.random() < 0.9 else json.dumps(pred)[:-5]  # some truncated JSON
    text = (
        "<look>A diver on the 10 m platform.</look>\n<recognition>Phase: take-off, Observation: ..., "
        "Conclusion: ...</recognition>\n<assessment>Entry with a small splash ...</assessment>\n"
        f"<answer>{body}</answer>"
    )
    record = {
        "id": f"a{i}",
        "task": "aqa",
        "label": "407C",
        "answer": "81.5",
        "sub_actions": truth,
        "score": 81.5,
        "difficulty": 3.2,
        "score_range": [0, 100],
    }
    return Trajectory(f"a{i}", 0, [], [], [], [], final_text=text, record=record)


def _mcq(rng: random.Random, i: int) -> Trajectory:
    text = rng.choice(
        [
            "C",
            "The best answer is B.",
            "<think>The leftmost person walks.</think><answer>C</answer>",
            "I am not sure what the person in this clip is doing at the moment",
            "(D) run",
        ]
    )
    record = {"id": f"m{i}", "task": "mcq", "answer": "C", "options": {"A": "a", "B": "b", "C": "c", "D": "d"}}
    return Trajectory(f"m{i}", 0, [], [], [], [], final_text=text, record=record)


MAKERS: dict[str, Callable[[random.Random, int], Trajectory]] = {"ovar": _ovar, "aqa": _aqa, "mcq": _mcq}


def synthetic(task: str, n: int, seed: int = 0) -> list[Trajectory]:
    """n seeded synthetic completions of `task` ("ovar", "aqa" or "mcq") with their records."""
    rng = random.Random(seed)
    return [MAKERS[task](rng, i) for i in range(n)]


def measure(n: int = 10_000, seed: int = 0, names: tuple[str, ...] = RULE_REWARDS) -> dict[str, float]:
    """Seconds per sample of each reward over n synthetic completions of its task."""
    batches = {task: synthetic(task, n, seed) for task in MAKERS}
    per_sample = {}
    for name in names:
        fn = get_reward(name).load()
        trajs = batches[TASK_OF.get(name, "aqa")]
        start = time.perf_counter()
        for t in trajs:
            fn(t, t.record)
        per_sample[name] = (time.perf_counter() - start) / n
    return per_sample


def report(per_sample: dict[str, float], step_seconds: float, samples_per_step: int) -> str:
    """A table: samples/s, microseconds per sample, seconds per step and share of the step, and the total."""
    lines = [f"{'reward':<14}{'samples/s':>12}{'us/sample':>11}{'s/step':>10}{'of step':>9}"]
    for name, sec in [*per_sample.items(), ("all (sum)", sum(per_sample.values()))]:
        per_step = sec * samples_per_step
        rate = f"{1 / sec:>12,.0f}" if sec > 0 else f"{'inf':>12}"
        lines.append(f"{name:<14}{rate}{sec * 1e6:>11.1f}{per_step:>10.4f}{per_step / step_seconds:>9.3%}")
    lines.append(f"(step: {step_seconds:g} s, {samples_per_step} samples per step)")
    return "\n".join(lines)


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=10_000, help="synthetic completions per reward")
    parser.add_argument("--step-seconds", type=float, default=60.0, help="a typical GRPO step time, seconds")
    parser.add_argument(
        "--samples-per-step", type=int, default=32, help="trajectories scored per step (Video-STAR: 8 prompts x 4)"
    )
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    print(report(measure(args.n, args.seed), args.step_seconds, args.samples_per_step))


if __name__ == "__main__":
    main(sys.argv[1:])
