"""End to end: the embedded Video-STAR GRPO default against a Ray head started the way a user starts one
(`ray start --head` on a 2-CPU machine, token authentication on), joined through RAY_ADDRESS as a Ray job is. The
default's actors ask for 2.75 CPUs: the recipe must fit them to the head's 2 and complete.

The head gets a temp dir and ports of its own, so it stands beside any other Ray on the machine, and only its own
processes are ended afterwards (`ray stop` would end every local Ray)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]
PORT_FLAGS = (
    "--dashboard-port",
    "--dashboard-agent-listen-port",  # its default, 52365, is taken by any other Ray on the machine
    "--dashboard-agent-grpc-port",
    "--node-manager-port",
    "--object-manager-port",
    "--ray-client-server-port",
    "--metrics-export-port",
    "--runtime-env-agent-port",
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _head_pids(temp_dir: str, gcs_port: int) -> set[int]:
    """This user's processes of the head: those that name its temp dir or its GCS address, and their children."""
    ends = (f":{gcs_port}", f"={gcs_port}")  # --address=HOST:PORT, --gcs_server_port=PORT, ...
    parents, roots = {}, set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or entry.stat().st_uid != os.getuid():
            continue
        try:
            cmd = (entry / "cmdline").read_bytes().decode(errors="replace") + "\0"
            parents[int(entry.name)] = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue  # it ended meanwhile
        if temp_dir in cmd or any(token.endswith(ends) for token in cmd.replace("\0", " ").split()):
            roots.add(int(entry.name))
    found, grew = set(roots), True
    while grew:
        children = {pid for pid, ppid in parents.items() if ppid in found} - found
        found |= children
        grew = bool(children)
    return found - {os.getpid()}


def _stop_head(temp_dir: str, gcs_port: int) -> set[int]:
    """End the head's processes (SIGTERM, then SIGKILL after 15 s); returns those still alive (none, normally)."""
    pids = _head_pids(temp_dir, gcs_port)
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in pids:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + 15
        while pids and time.monotonic() < deadline:
            pids = {pid for pid in pids if Path(f"/proc/{pid}").exists() and _alive(pid)}
            time.sleep(0.2)
    return pids


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.fixture
def ray_head():
    """A 2-CPU Ray head with token authentication (`ray start --head`); yields its address and environment."""
    ray_cli = shutil.which("ray", path=str(Path(sys.executable).parent)) or shutil.which("ray")
    temp_dir = tempfile.mkdtemp(prefix="rh", dir="/tmp")  # short: Ray's unix sockets live under it
    port = _free_port()
    env = {**os.environ, "RAY_AUTH_MODE": "token", "PYTHONPATH": str(ROOT)}
    env.pop("RAY_ADDRESS", None)
    cmd = [ray_cli, "start", "--head", "--num-cpus=2", "--num-gpus=0", f"--port={port}", f"--temp-dir={temp_dir}"]
    cmd += ["--node-ip-address=127.0.0.1", "--include-dashboard=false", "--disable-usage-stats"]
    cmd += [f"{flag}={_free_port()}" for flag in PORT_FLAGS]
    try:
        started = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=180)
        assert started.returncode == 0, started.stdout[-2000:] + started.stderr[-2000:]
        yield f"127.0.0.1:{port}", env
    finally:
        left = _stop_head(temp_dir, port)
        shutil.rmtree(temp_dir, ignore_errors=True)
        assert not left, f"head processes still running: {sorted(left)}"


def test_the_embedded_default_fits_a_two_cpu_head_it_joins(ray_head, tmp_path):
    address, env = ray_head
    run_dir = tmp_path / "run"
    argv = [f"run.run_dir={run_dir}", "run.steps=1", "run.save_every=1", "rollout.n=2", "rollout.max_new_tokens=16"]
    argv += ["cold_start.steps=1", "cold_start.batch_size=2"]  # both stages, as short as they go
    done = subprocess.run(
        [sys.executable, "recipes/videostar_grpo.py", *argv],
        cwd=ROOT,
        env={**env, "RAY_ADDRESS": address},
        capture_output=True,
        text=True,
        timeout=900,
    )
    out = done.stdout + done.stderr
    assert done.returncode == 0, out[-6000:]
    # 2.75 CPUs asked, 2 offered: every request times 8/11, floored to 1e-4, once for both stages
    assert "trainer.num_cpus: 0.5 -> 0.3636, rollout.num_cpus: 0.5 -> 0.3636, rollout.tool_pool.num_cpus: " in out
    assert out.count("CPU requests scaled down") == 1
    assert "autoscaling" not in out  # a head started by hand does not grow: its node is checked as it is
    assert out.count("[resources] plan against the joined cluster (1 node):") == 2  # the cold start, then GRPO
    plan = [line for line in out.splitlines() if line.startswith("    node ")]
    assert len(plan) == 2 and all(" (head): 2 CPU, 0 GPU" in line for line in plan), plan
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1] and rows[0]["rollout/trajectories"] == 2 * 2
    assert (run_dir / "checkpoint-1" / "trainer_state").is_dir()
    assert (run_dir / "cold_start" / "checkpoint-1").is_dir()
