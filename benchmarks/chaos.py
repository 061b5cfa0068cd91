"""Chaos benchmark: run the embedded Video-STAR GRPO default with one fault injected per run, from outside the code
under test, and print whether the run recovered, what it cost and whether anything was lost or counted twice.

    python benchmarks/chaos.py                          # every fault, one run each (about 30-40 minutes on 2 cores)
    python benchmarks/chaos.py --cases kill-trainer-rank driver-crash-resume --steps 4
    python benchmarks/chaos.py --list

Every run is the same recipe (`recipes/videostar_grpo.py`) with the same seeds: `run.steps` GRPO steps of
`data.batch_size` samples, checkpoints every 2 steps, `run.timeout_s` short enough for a hang to be noticed. The
fault-free run of both stages goes first: it runs the cold-start SFT stage (the "warm-up"), whose checkpoint is every
other run's `init_from`, except the driver-crash case's, which runs both stages itself and is compared with it. The
"none" case (no fault, from that checkpoint) is the reference of the other rows. The faults:

- SIGKILL of a rollout worker (in the middle of its rollout), a tool actor, a reward worker, a trainer rank;
  SIGSTOP of a rollout worker (a hang: noticed after run.timeout_s). The processes are found by their Ray process
  titles (`ray::RolloutWorker...`) among the driver's descendants and signalled with os.kill.
- A corrupt and a zero-length video: a copy of the training records in which one sample drawn at step 2 points to
  such a file.
- A full disk during a checkpoint: a `sitecustomize.py` put on PYTHONPATH (of the driver and so of its Ray
  workers) makes the first `os.fsync` of a file of the step-2 checkpoint fail with ENOSPC.
- A driver crash: the driver's whole process group (the local Ray cluster included) is SIGKILLed after step 3, then
  the same command runs again with `run.resume=true`.

Columns: recovered (exit status 0 and every step logged), steps completed, samples lost (samples of the batches
that were not trained on, apart from the injected faulty ones), samples counted twice (steps logged twice, or more
trajectories in a step than its batch holds), seconds lost (wall time over the fault-free run's, cold start apart),
and the largest difference from the fault-free run in the per-step reward mean and loss (0 means the recovery
reproduced the undisturbed run exactly; the data faults change the data, so they differ by design).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "recipes" / "videostar_grpo.py"


@dataclass
class Case:
    name: str
    title: str
    target: str = ""  # a Ray process title to signal ("ray::RolloutWorker")
    sig: int = signal.SIGKILL
    after_step: int = 1  # signal once metrics.jsonl has this step
    busy: str = ""  # wait (a while) until the target runs this method, to hit it mid-call
    busy_wait_s: float = 60.0  # how long to wait for that before taking an idle one
    data: str = ""  # "corrupt" or "empty": a training sample of step 2 points to such a video
    full_disk: bool = False
    driver_crash: bool = False
    two_stage: bool = False  # runs the cold start itself (compared with the two-stage run), not from its checkpoint


CASES = [
    Case("none", "no fault (the reference run)"),
    Case("kill-rollout-worker", "SIGKILL a rollout worker mid-rollout", "ray::RolloutWorker", busy="rollout"),
    # two stages: the cold start's replay calls every tool (the tiny policy's own calls are mostly malformed, and a
    # tool's actors start on its first valid call), so the tool actors are up when the fault comes
    Case("kill-tool-actor", "SIGKILL a tool actor", "ray::ToolActor", busy="call", busy_wait_s=2.0, two_stage=True),
    Case("kill-reward-worker", "SIGKILL a reward worker", "ray::RewardWorker"),
    Case("kill-trainer-rank", "SIGKILL a trainer rank", "ray::TrainerRank", after_step=3),
    Case("stop-rollout-worker", "SIGSTOP a rollout worker (a hang)", "ray::RolloutWorker", sig=signal.SIGSTOP),
    Case("corrupt-video", "a corrupt video in the data", data="corrupt"),
    Case("empty-video", "a zero-length video in the data", data="empty"),
    Case("full-disk-checkpoint", "ENOSPC while a checkpoint is written", full_disk=True),
    Case(
        "driver-crash-resume",
        "the driver crashes, then run.resume=true",
        after_step=3,
        driver_crash=True,
        two_stage=True,
    ),
]

SITECUSTOMIZE = textwrap.dedent(
    '''
    """Injected by benchmarks/chaos.py: the first fsync of a file under $CHAOS_ENOSPC_PATH fails with ENOSPC."""
    import errno
    import os

    _path, _marker = os.environ.get("CHAOS_ENOSPC_PATH"), os.environ.get("CHAOS_ENOSPC_MARKER")
    if _path and _marker:
        _real_fsync = os.fsync

        def _fsync(fd):
            try:
                where = os.readlink(f"/proc/self/fd/{fd}")
            except OSError:
                where = ""
            if where.startswith(_path) and os.path.isfile(where):
                try:  # once, across every process
                    os.close(os.open(_marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
                except FileExistsError:
                    return _real_fsync(fd)
                raise OSError(errno.ENOSPC, "No space left on device (injected by benchmarks/chaos.py)", where)
            return _real_fsync(fd)

        os.fsync = _fsync
    '''
)


def token_checksum(traj, record, **_) -> float:
    """A reward plugin of the benchmark, not a training signal: the sum of the response's token ids modulo 1000,
    over 1000 (it differs between any two sampled episodes that differ, whatever the model writes)."""
    return sum(traj.response_ids) % 1000 / 1000


def descendants(pid: int) -> list:
    """The processes under `pid`, walked level by level (a process that ends meanwhile is skipped, not fatal)."""
    import psutil

    out, todo = [], [pid]
    while todo:
        try:
            children = psutil.Process(todo.pop()).children()
        except psutil.Error:
            continue
        out += children
        todo += [child.pid for child in children]
    return out


def ray_titles(driver: int) -> list[str]:
    """The distinct Ray process titles under the driver (what a fault could target)."""
    import psutil

    titles = set()
    for proc in descendants(driver):
        try:
            cmd = " ".join(proc.cmdline()).strip()
        except psutil.Error:
            continue
        if cmd.startswith("ray::"):
            titles.add(cmd.split()[0])
    return sorted(titles)


def find_target(driver: int, title: str, busy: str, wait_s: float = 60.0):
    """A process among the driver's descendants whose title starts with `title`; with `busy`, preferably one seen
    running that method (`ray::RolloutWorker.rollout`) within `wait_s`, else one seen idle (at once without
    `busy`). Waits up to `wait_s` more for one to appear at all."""
    import psutil

    deadline, seen = time.monotonic() + wait_s, None
    while time.monotonic() < deadline or (seen is None and time.monotonic() < deadline + wait_s):
        if seen is not None and time.monotonic() >= deadline:
            break
        for proc in descendants(driver):
            try:
                cmd = " ".join(proc.cmdline())
            except psutil.Error:
                continue
            if cmd.startswith(title):
                seen = seen or proc
                if not busy or cmd.startswith(f"{title}.{busy}"):
                    return proc
        time.sleep(0.05)
    return seen


def metrics_rows(run_dir: Path) -> list[dict]:
    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            pass
    return rows


def last_step(run_dir: Path) -> int:
    return max((int(r.get("step", 0)) for r in metrics_rows(run_dir)), default=0)


def write_faulty_data(out: Path, kind: str, batch_size: int, seed: int) -> tuple[Path, str]:
    """A copy of the embedded training records in which the first sample drawn at step 2 has a corrupt or empty
    video; returns the file and that sample's id."""
    sys.path.insert(0, str(ROOT))
    from recipes.run import Sampler, load_records, resolve_records

    records = load_records(resolve_records("embedded"))
    sampler = Sampler(records, batch_size, seed=seed)
    sampler.next_batch()
    victim = sampler.next_batch()[0]["id"]
    video = out / f"{kind}.mp4"
    video.write_bytes(b"" if kind == "empty" else os.urandom(4096))
    path = out / f"train_{kind}.jsonl"
    with path.open("w") as f:
        for rec in records:
            f.write(json.dumps({**rec, "video": str(video)} if rec["id"] == victim else rec) + "\n")
    return path, victim


def run_case(case: Case, work: Path, args: argparse.Namespace, init_from: str) -> dict:
    run_dir = work / case.name
    overrides = [
        f"run.run_dir={run_dir}",
        f"run.steps={args.steps}",
        "run.save_every=2",
        f"run.timeout_s={args.timeout_s}",
        f"data.batch_size={args.batch_size}",
        f"cold_start.steps={args.cold_start_steps}",
        # plus token_checksum below (a user plugin): an arbitrary but deterministic function of the sampled tokens,
        # so that the tiny model's rewards differ within every group from the first step (it rarely answers right,
        # and its responses tend to have the same length and no repeated token); each step's update is then
        # non-zero, and the comparison with the fault-free run covers the trainer, not only the rollouts
        "rewards.components=[{name: accuracy}, {name: format}, {name: 'benchmarks.chaos:token_checksum'}]",
    ]
    if init_from and not case.two_stage:
        overrides.append(f"init_from={init_from}")
    # the project on the path of the driver and (inherited) of its Ray workers, which import the reward plugin
    env = {
        **os.environ,
        "PYTHONUNBUFFERED": "1",
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH", "")])),
    }
    if case.data:
        path, _ = write_faulty_data(work, case.data, args.batch_size, seed=0)
        overrides.append(f"data.train={path}")
    if case.full_disk:
        hook = work / "sitecustomize_dir"
        hook.mkdir(exist_ok=True)
        (hook / "sitecustomize.py").write_text(SITECUSTOMIZE)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(hook), env.get("PYTHONPATH", "")]))
        env["CHAOS_ENOSPC_PATH"] = str(run_dir / ".checkpoint-2.tmp")
        env["CHAOS_ENOSPC_MARKER"] = str(work / f"{case.name}.enospc")
    log = (work / f"{case.name}.log").open("w")
    t0 = time.monotonic()
    cmd = [sys.executable, str(RECIPE), *overrides]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    injected = inject(case, proc, run_dir)
    code = proc.wait()
    if case.driver_crash:
        code = subprocess.call([*cmd, "run.resume=true"], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    seconds = time.monotonic() - t0
    log.close()
    if case.full_disk:
        marker = Path(env["CHAOS_ENOSPC_MARKER"])
        injected = "ENOSPC at the step-2 checkpoint" if marker.exists() else "no checkpoint fsync was reached"
    return {"case": case, "code": code, "seconds": seconds, "rows": metrics_rows(run_dir), "injected": injected}


def inject(case: Case, proc: subprocess.Popen, run_dir: Path) -> str:
    """Wait for the trigger step, then signal the target (or the driver's process group); what was done."""
    if not (case.target or case.driver_crash):
        return ""
    while proc.poll() is None and last_step(run_dir) < case.after_step:
        time.sleep(0.2)
    if proc.poll() is not None:
        return "the run ended before the fault"
    if case.driver_crash:
        os.killpg(proc.pid, signal.SIGKILL)  # the driver and the local Ray cluster it started
        return f"SIGKILL process group {proc.pid} after step {last_step(run_dir)}"
    import psutil

    for _ in range(100):  # a process found may end before it is signalled (Ray recycles idle workers): find again
        target = find_target(proc.pid, case.target, case.busy, case.busy_wait_s)
        if target is None:
            return f"no {case.target} process found (there were: {', '.join(ray_titles(proc.pid)) or 'none'})"
        try:
            title = " ".join(target.cmdline()).strip()[:60]
            os.kill(target.pid, case.sig)
        except (psutil.Error, ProcessLookupError):
            continue
        return f"{signal.Signals(case.sig).name} pid {target.pid} ({title}) after step {last_step(run_dir)}"
    return f"every {case.target} process found ended before it could be signalled"


def summarise(result: dict, reference: dict | None, args: argparse.Namespace) -> dict:
    rows, case = result["rows"], result["case"]
    steps = [int(r["step"]) for r in rows]
    per_sample = {int(r["step"]): r.get("rollout/trajectories", 0) / args.n for r in rows}
    faulty = sum(r.get("rollout/skipped/video_error", 0) for r in rows) if case.data else 0
    lost = sum(max(0.0, args.batch_size - trained) for trained in per_sample.values()) - faulty
    twice = (len(steps) - len(set(steps))) + sum(max(0.0, t - args.batch_size) for t in per_sample.values())
    finished = result["code"] == 0 and set(steps) == set(range(1, args.steps + 1))
    injected = not (case.target or case.driver_crash or case.full_disk) or result["injected"].startswith(
        ("SIG", "ENOSPC")
    )
    out = {
        "fault": case.title,
        "recovered": ("yes" if finished else "no") if injected else f"not injected: {result['injected']}",
        "steps": len(set(steps)),
        "lost": lost,
        "twice": twice,
        "seconds_lost": result["seconds"] - reference["seconds"] if reference else float("nan"),
        "diff": "",
        "recovery": _recovery_counts(rows),
    }
    if reference is not None:
        out["diff"] = _max_diff(rows, reference["rows"])
    return out


def _recovery_counts(rows: list[dict]) -> str:
    keys = ("rollout_restarts", "reward_restarts", "quarantined")
    total = {k: sum(r.get(f"recovery/{k}", 0) for r in rows) for k in keys}
    total["trainer_restarts"] = max((r.get("recovery/trainer_restarts", 0) for r in rows), default=0)
    total["failed_saves"] = max((r.get("recovery/failed_saves", 0) for r in rows), default=0)
    total["skipped"] = sum(r.get("rollout/skipped_samples", 0) for r in rows)
    return ", ".join(f"{k} {int(v)}" for k, v in total.items() if v)


def _max_diff(rows: list[dict], ref_rows: list[dict]) -> str:
    ref = {int(r["step"]): r for r in ref_rows}
    worst = 0.0
    for row in rows:
        other = ref.get(int(row["step"]))
        for key in ("reward/total_mean", "train/loss"):
            if other is not None and key in row and key in other:
                worst = max(worst, abs(float(row[key]) - float(other[key])))
    return f"{worst:.2g}"


def table(summaries: list[dict]) -> str:
    head = "| fault | recovered | steps completed | samples lost | samples counted twice | seconds lost | "
    head += "max diff vs fault-free | what recovery did |\n|---|---|---|---|---|---|---|---|\n"
    lines = [
        f"| {s['fault']} | {s['recovered']} | {s['steps']} | {s['lost']:g} | {s['twice']:g} | "
        f"{s['seconds_lost']:+.0f} | {s['diff']} | {s['recovery']} |"
        for s in summaries
    ]
    return head + "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", nargs="*", default=[c.name for c in CASES], help="faults to inject (--list)")
    parser.add_argument("--smoke", action="store_true", help="2 steps and 2 cold-start steps: a quick check")
    parser.add_argument("--list", action="store_true", help="list the faults and exit")
    parser.add_argument("--steps", type=int, default=4, help="GRPO steps per run")
    parser.add_argument("--batch-size", type=int, default=2, help="samples per step")
    parser.add_argument("--n", type=int, default=4, help="rollout.n of the recipe (for the accounting)")
    parser.add_argument("--cold-start-steps", type=int, default=30, help="SFT steps of the warm-up")
    parser.add_argument("--timeout-s", type=float, default=150.0, help="run.timeout_s: when a hang is noticed")
    parser.add_argument("--work-dir", default="", help="where the runs go (default: a temporary folder)")
    args = parser.parse_args(argv)
    if args.smoke:
        args.steps, args.cold_start_steps = 2, 2
    if args.list:
        print("\n".join(f"{c.name:24s} {c.title}" for c in CASES))
        return 0
    one_stage = [c.name for c in CASES if not c.two_stage]
    if any(c in one_stage for c in args.cases):  # "none" is the reference of the one-stage rows
        args.cases = ["none", *[c for c in args.cases if c != "none"]]
    unknown = set(args.cases) - {c.name for c in CASES}
    if unknown:
        parser.error(f"unknown cases {sorted(unknown)}; see --list")
    work = Path(args.work_dir or tempfile.mkdtemp(prefix="chaos-")).resolve()
    work.mkdir(parents=True, exist_ok=True)
    print(f"[chaos] runs and logs under {work}", flush=True)
    # both stages, no fault: its cold-start checkpoint starts every other run; the driver-crash case is compared to it
    two_stage = run_case(Case("two-stage", "no fault, with the cold start", driver_crash=False), work, args, "")
    cold = sorted((work / "two-stage" / "cold_start").glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))
    if two_stage["code"] != 0 or not cold:
        print(f"[chaos] the fault-free run failed (exit {two_stage['code']}); see {work / 'two-stage.log'}")
        return 1
    init_from = str(cold[-1])
    summaries = [summarise(two_stage, two_stage, args)] if not any(c in one_stage for c in args.cases) else []
    reference = None
    for case in CASES:
        if case.name not in args.cases:
            continue
        result = run_case(case, work, args, init_from)
        if case.name == "none":
            reference = result
        against = two_stage if case.two_stage else reference
        summaries.append(summarise(result, against, args))
        print(f"[chaos] {case.name}: recovered {summaries[-1]['recovered']} ({result['injected']})", flush=True)
    print(table(summaries))
    return 0 if all(s["recovered"] == "yes" and not s["lost"] and not s["twice"] for s in summaries) else 1


if __name__ == "__main__":
    sys.exit(main())
