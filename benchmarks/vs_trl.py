"""Our GRPO step beside TRL's GRPOTrainer on the same work, interleaved in one run: TRL step, our step, TRL step...

Both sides train the embedded tiny Qwen2.5-VL on the same 2 records of the bundled sample data, G=4 completions of
at most 32 new tokens each (8 per step), sampling temperature 0.7, KL beta 0.04 to a frozen reference model, the
same two rule rewards (`benchmarks/vs_trl_rewards.py`: format and accuracy), no tools, one turn, fp32 on CPU.
Each prompt carries 16 visual tokens: TRL's side gets an image (frame 0 of the record's clip, 112x112: 8x8 patches
of 14 px, merged 2x2), ours the record's video as 2 frames of 112x112 (one temporal patch of 2 frames, the same 8x8
grid), since our records carry videos. Ours runs the real step of `recipes/grpo.py` (rollout on 1 hf rollout worker,
reward worker, 1 FSDP2 trainer rank, weight sync), TRL's side runs in its own interpreter (`benchmarks/_trl_side.py`,
TRL is not our dependency), one optimizer step per parent command. It prints each side's median seconds per step
over the steps after the warm-up, our phase split (median of each of time/rollout, rewards, train, sync), the ratio
ours/TRL, and each side's torch intra-op thread counts. Results and their reading: docs/performance.md.

The TRL environment (TRL 1.16.0 runs with our pins: torch 2.14.1, transformers 5.10.4, accelerate 1.15.0):

    python3 -m venv .venv-trl && .venv-trl/bin/pip install -c constraints-cpu.txt torch torchvision transformers \
        accelerate datasets pillow && .venv-trl/bin/pip install -c constraints-cpu.txt trl==1.16.0

Run (from the repository root, in the project's environment; 5 min 20 s on a heavily loaded 2-core CPU):

    python benchmarks/vs_trl.py --trl-python .venv-trl/bin/python
    python benchmarks/vs_trl.py --trl-python .venv-trl/bin/python --steps 8 trainer.micro_batch_size=2

Trailing `key=value` arguments override our side's config (recipes/grpo.py keys) after the benchmark's own.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import queue
import statistics
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
TRL_SIDE = ROOT / "benchmarks" / "_trl_side.py"
sys.path.insert(0, str(ROOT))

PHASES = ("rollout", "rewards", "train", "sync")
SYSTEM_PROMPT = (
    "You are a helpful assistant that understands human actions in videos. Think step by step inside "
    "<think></think>, then give the final answer inside <answer></answer>."
)
WORK = {  # the work of one step, the same on both sides
    "batch_size": 2,
    "num_generations": 4,
    "max_new_tokens": 32,
    "temperature": 0.7,
    "beta": 0.04,
    "lr": 1e-5,
    "clip_ratio": 0.2,
}
NUM_FRAMES, SIDE = 2, 112  # our video input: 2 frames of at most 112 px, 16 merged visual tokens


def parse_args(argv: list[str]) -> argparse.Namespace:
    """The command line: --trl-python (required), --steps, --warmup, --seed, --trl-threads, --timeout, and our
    side's trailing key=value overrides."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trl-python", required=True, help="the interpreter of an environment with trl==1.16.0")
    parser.add_argument("--steps", type=int, default=6, help="steps on each side (default 6)")
    parser.add_argument("--warmup", type=int, default=1, help="first steps left out of the medians (default 1)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--trl-threads", type=int, default=0, help="torch threads of TRL's side; 0: torch's default")
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds to wait for TRL's side to answer")
    parser.add_argument("overrides", nargs="*", help="our side's config overrides, key=value")
    args = parser.parse_args(argv)
    if args.steps <= args.warmup or args.warmup < 0:
        parser.error(f"--steps ({args.steps}) must exceed --warmup ({args.warmup}), and --warmup be >= 0")
    bad = [item for item in args.overrides if "=" not in item]
    if bad:
        parser.error(f"overrides are key=value, got {' '.join(bad)}")
    return args


def steady(values: list[float], warmup: int) -> list[float]:
    """The values after the first `warmup` steps (ValueError when none is left)."""
    kept = list(values[warmup:])
    if not kept:
        raise ValueError(f"no steps after the {warmup} warm-up step(s): got {len(values)} step(s)")
    return kept


def summarize(trl_seconds: list[float], our_rows: list[dict[str, float]], warmup: int) -> dict[str, float]:
    """Medians over the steps after the warm-up: "trl" and "ours" (s/step), our phases (rollout includes tool time;
    "other" is our step median less the phase medians, floored at 0) and "ratio" (ours / TRL)."""
    rows = steady(our_rows, warmup)
    out = {
        "trl": statistics.median(steady(trl_seconds, warmup)),
        "ours": statistics.median(r["time/step"] for r in rows),
    }
    phase = {p: [r[f"time/{p}"] + (r.get("time/tools", 0.0) if p == "rollout" else 0.0) for r in rows] for p in PHASES}
    out.update({p: statistics.median(phase[p]) for p in PHASES})
    out["other"] = max(0.0, out["ours"] - sum(out[p] for p in PHASES))
    out["ratio"] = out["ours"] / out["trl"]
    out["first"], out["last"] = warmup + 1, warmup + len(rows)
    return out


def report(summary: dict[str, float], trl_info: dict[str, Any], our_info: dict[str, Any]) -> str:
    """The table: each side's median s/step, our phase split, the ratio, thread counts and what each side saw."""
    first, last = int(summary["first"]), int(summary["last"])
    head = f"{'side':<34}{'s/step':>8}" + "".join(f"{p:>9}" for p in (*PHASES, "other"))
    dash = "".join(f"{'-':>9}" for _ in (*PHASES, "other"))
    ours = "".join(f"{summary[p]:>9.2f}" for p in (*PHASES, "other"))
    lines = [
        f"median over steps {first}-{last} ({last - first + 1} steps; the first {first - 1} left out as warm-up)",
        head,
        f"{'TRL ' + trl_info['trl'] + ' GRPOTrainer':<34}{summary['trl']:>8.2f}{dash}",
        f"{'ours (1 trainer rank, 1 worker)':<34}{summary['ours']:>8.2f}{ours}",
        f"ratio ours/TRL: {summary['ratio']:.2f}x",
        f"torch threads: TRL {trl_info['torch_threads']} (one process); ours trainer rank "
        f"{our_info['trainer_threads']}, rollout worker {our_info['rollout_threads']}",
        f"TRL sees: a {trl_info['image_size'][0]}x{trl_info['image_size'][1]} image, grid {trl_info['image_grid_thw']}"
        f" -> {trl_info['visual_tokens']} visual tokens, {trl_info['prompt_tokens']} prompt tokens",
        f"ours sees: {NUM_FRAMES} frames of {our_info['frame_size']}, grid {our_info['video_grid_thw']} -> "
        f"{our_info['visual_tokens']} visual tokens, {our_info['prompt_tokens']} prompt tokens",
    ]
    return "\n".join(lines)


def write_inputs(tmp: Path, records: list[dict], records_dir: Path, spec: dict[str, Any]) -> tuple[Path, Path]:
    """Our records file (absolute video paths) and TRL's spec file with frame 0 of each clip as a PNG; the system
    prompt goes to system.txt for our config."""
    from PIL import Image

    from envs.video import read_video

    ours, rows = [], []
    for i, record in enumerate(records):
        video = str((records_dir / record["video"]).resolve())
        ours.append({**record, "video": video})
        frames = read_video(video, num_frames=NUM_FRAMES, clip=record.get("clip"), max_side=SIDE).frames
        image = tmp / f"frame0_{i}.png"
        Image.fromarray(frames[0]).save(image)
        rows.append({"prompt": record["prompt"], "answer": record["answer"], "image": str(image)})
    records_path = tmp / "records.jsonl"
    records_path.write_text("".join(json.dumps(r) + "\n" for r in ours))
    (tmp / "system.txt").write_text(SYSTEM_PROMPT)
    spec_path = tmp / "trl_spec.json"
    spec_path.write_text(json.dumps({**spec, "rows": rows, "system_prompt": SYSTEM_PROMPT}, indent=1))
    return records_path, spec_path


def our_overrides(tmp: Path, records_path: Path, steps: int, seed: int) -> list[str]:
    """Our side's config (recipes/grpo.py keys) for the benchmark's work."""
    rewards = ", ".join(
        f"{{name: 'benchmarks.vs_trl_rewards:{name}', weight: 1.0}}" for name in ("format_reward", "accuracy_reward")
    )
    return [
        f"run.run_dir={tmp / 'run'}",
        f"run.steps={steps}",
        f"run.save_every={steps + 1}",
        f"run.seed={seed}",
        f"data.train={records_path}",
        f"data.batch_size={WORK['batch_size']}",
        "rollout.engine=hf",
        "rollout.num_workers=1",
        f"rollout.n={WORK['num_generations']}",
        f"rollout.temperature={WORK['temperature']}",
        f"rollout.max_new_tokens={WORK['max_new_tokens']}",
        f"rollout.max_response_tokens={WORK['max_new_tokens']}",
        "rollout.max_turns=1",
        f"rollout.num_frames={NUM_FRAMES}",
        f"rollout.max_side={SIDE}",
        f"rollout.system_prompt={tmp / 'system.txt'}",
        f"rewards.components=[{rewards}]",
        "trainer.world_size=1",
        f"trainer.kl_coef={WORK['beta']}",
        f"trainer.lr={WORK['lr']}",
        f"trainer.clip_ratio={WORK['clip_ratio']}",
        # TRL scores the step's 8 completions in one forward (per_device_train_batch_size 8): so do we
        f"trainer.micro_batch_size={WORK['batch_size'] * WORK['num_generations']}",
    ]


class TrlSide:
    """TRL's side as a child process speaking `benchmarks/_trl_side.py`'s line protocol."""

    def __init__(self, python: str, spec_path: Path, log_path: Path, timeout_s: float, script: Path = TRL_SIDE):
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TRL_EXPERIMENTAL_SILENCE": "1"}
        env.pop("PYTHONPATH", None)  # nothing of ours on TRL's path: it gets files by name in the spec
        self.log_path, self.timeout_s = log_path, timeout_s
        self._log = open(log_path, "w")  # noqa: SIM115 (closed in close())
        self.proc = subprocess.Popen(
            [python, str(script), str(spec_path)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log,
            text=True,
            env=env,
        )
        self._lines: queue.Queue = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self._lines.put(line)
        self._lines.put(None)

    def next_event(self, kind: str) -> dict[str, Any]:
        """The next protocol record of `kind`; RuntimeError with the end of TRL's log if it ends or times out."""
        while True:
            try:
                line = self._lines.get(timeout=self.timeout_s)
            except queue.Empty:
                self._fail(f"no {kind!r} from TRL's side within {self.timeout_s:.0f} s")
            if line is None:
                self._fail(f"TRL's side ended (exit code {self.proc.wait()}) before {kind!r}")
            with contextlib.suppress(json.JSONDecodeError):
                event = json.loads(line)
                if isinstance(event, dict) and event.get("event") == kind:
                    return event

    def step(self) -> dict[str, Any]:
        self.proc.stdin.write("step\n")
        self.proc.stdin.flush()
        return self.next_event("step")

    def _fail(self, why: str) -> None:
        self.close()
        tail = self.log_path.read_text()[-4000:]
        raise RuntimeError(f"{why}; the end of its log ({self.log_path}):\n{tail}")

    def close(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(BrokenPipeError, OSError):
                self.proc.stdin.write("stop\n")
                self.proc.stdin.close()
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()


def our_threads(s: Any) -> dict[str, int]:
    """torch's intra-op threads inside our trainer rank and rollout worker actors, asked of the actors themselves."""
    import ray

    def threads(_actor: Any) -> int:
        import torch

        return torch.get_num_threads()

    trainer = ray.get(s.trainer.ranks[0].__ray_call__.remote(threads))
    rollout = ray.get(s.workers.workers[0].__ray_call__.remote(threads))
    return {"trainer_threads": trainer, "rollout_threads": rollout}


def our_inputs(cfg: Any, model_path: str, record: dict) -> dict[str, Any]:
    """Prompt tokens (the video placeholder expanded) and visual tokens of one record, as our rollout worker makes
    them: its own prompt builder and video processing."""
    from envs.video import read_video
    from rollout.multimodal import process_video, seconds_per_frame
    from rollout.worker import RolloutWorker

    worker = RolloutWorker(cfg.rollout, model_path, engine=object())  # the engine is not used to build prompts
    video = read_video(record["video"], num_frames=NUM_FRAMES, clip=record.get("clip"), max_side=SIDE)
    inputs = process_video(worker.processor, video.frames, seconds_per_frame(video.timestamps))
    grid = [int(x) for x in inputs["video_grid_thw"][0]]
    visual = grid[0] * grid[1] * grid[2] // 4  # merged 2x2
    height, width = video.frames.shape[1:3]
    return {
        "prompt_tokens": len(worker.build_prompt(record)) - 1 + visual,
        "visual_tokens": visual,
        "video_grid_thw": grid,
        "frame_size": f"{width}x{height}",
    }


def run(args: argparse.Namespace) -> dict[str, float]:
    """Start both sides, interleave their steps, shut both down; returns the summary (and prints the table)."""
    from recipes import grpo
    from recipes.run import load_records, resolve_model, resolve_records

    # the reward workers import benchmarks.vs_trl_rewards: Ray's workers inherit this environment
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    model_path = resolve_model("embedded")
    sample = Path(resolve_records("embedded"))
    records = load_records(str(sample))[: WORK["batch_size"]]
    with tempfile.TemporaryDirectory(prefix="vs-trl-") as tmp_name, contextlib.ExitStack() as stack:
        tmp = Path(tmp_name)
        spec = {**WORK, "model_dir": model_path, "rewards_file": str(ROOT / "benchmarks" / "vs_trl_rewards.py")}
        spec.update(steps=args.steps, seed=args.seed, threads=args.trl_threads, output_dir=str(tmp / "trl"))
        records_path, spec_path = write_inputs(tmp, records, sample.parent, spec)
        trl = TrlSide(args.trl_python, spec_path, tmp / "trl.log", args.timeout)  # loads while ours starts
        stack.callback(trl.close)
        cfg = grpo.load([*our_overrides(tmp, records_path, args.steps, args.seed), *args.overrides], None)
        s = grpo._start(cfg, "vs_trl")
        stack.callback(_shut_down, s)
        trl_info = trl.next_event("ready")
        our_info = {**our_threads(s), **our_inputs(cfg, model_path, load_records(str(records_path))[0])}
        trl_seconds, our_rows = [], []
        for step in range(1, args.steps + 1):
            theirs = trl.step()
            ours = grpo._train_step(cfg, s, "vs_trl", step)[0]
            # rollout.staleness=1: the next step's rollout, started during ours, ends inside our time, not TRL's
            ours["time/step"] += grpo._await_prefetch(s)
            trl_seconds.append(theirs["seconds"])
            our_rows.append(ours)
            print(
                f"[vs_trl] step {step}: TRL {theirs['seconds']:.2f} s ({theirs.get('completions/mean_length', 0):.1f} "
                f"completion tokens), ours {ours['time/step']:.2f} s ({ours['rollout/response_tokens_mean']:.1f})",
                flush=True,
            )
    summary = summarize(trl_seconds, our_rows, args.warmup)
    print("\n" + report(summary, trl_info, our_info))
    return summary


def _shut_down(s: Any) -> None:
    """Our actors end, then Ray; in reverse order of registration, each even if another one fails."""
    import ray

    with contextlib.ExitStack() as stack:
        stack.callback(ray.shutdown)
        for stop in (s.evals.close, s.trainer.shutdown, s.rewards.shutdown, s.workers.shutdown):
            stack.callback(stop)
        if s.executor is not None:  # rollout.staleness=1: a background rollout ends before its workers
            stack.callback(s.executor.shutdown)
            stack.callback(grpo_drop_prefetch, s)


def grpo_drop_prefetch(s: Any) -> None:
    from recipes import grpo

    grpo._drop_prefetch(s)


if __name__ == "__main__":
    run(parse_args(sys.argv[1:]))
