"""Will the run's actors fit the cluster? Checked before any actor starts, so a request the cluster can never
grant (a GPU on a CPU machine, more CPUs than a local Ray offers) fails with the sum and who asked for what,
instead of Ray waiting forever for the resources.
"""

from __future__ import annotations

import os
from typing import Any


def requested(cfg: Any) -> dict[str, dict[str, float]]:
    """CPU and GPU requests of each kind of actor of a GRPO or SFT config: {who: {"CPU": n, "GPU": n}} (SFT
    scores its probe on the driver: reward workers only where the config has `cold_start`, i.e. GRPO)."""
    r, t = cfg.rollout, cfg.trainer
    tools = len(r.enabled_tools()) * r.tool_pool.actors_per_tool
    out = {
        f"trainer ({t.world_size} ranks)": {"CPU": t.world_size * t.num_cpus, "GPU": t.world_size * t.num_gpus},
        f"rollout ({r.num_workers} workers)": {"CPU": r.num_workers * r.num_cpus, "GPU": r.num_workers * r.num_gpus},
        f"tools ({tools} actors per rollout worker)": {
            "CPU": r.num_workers * tools * r.tool_pool.num_cpus,
            "GPU": r.num_workers * tools * r.tool_pool.num_gpus,
        },
    }
    rewards = getattr(cfg, "rewards", None)
    if rewards is not None and hasattr(cfg, "cold_start"):
        out[f"rewards ({rewards.num_workers} workers)"] = {"CPU": rewards.num_workers * rewards.num_cpus, "GPU": 0.0}
    e = cfg.eval
    if e.every_k > 0:
        out[f"eval ({e.actors} actors and their tools)"] = {
            "CPU": e.actors * (e.num_cpus + tools * r.tool_pool.num_cpus),
            "GPU": e.actors * (e.num_gpus + tools * r.tool_pool.num_gpus),
        }
    return out


def local_cluster(run_cfg: Any) -> dict[str, float] | None:
    """What a local Ray started by the recipe offers ({"CPU", "GPU"}), or None when the run joins a cluster."""
    if run_cfg.ray_address or os.environ.get("RAY_ADDRESS"):
        return None
    import torch

    return {"CPU": float(run_cfg.ray_num_cpus), "GPU": float(torch.cuda.device_count())}


def resource_problems(cfg: Any, cluster: dict[str, float]) -> list[str]:
    """Problems when the actors' requests exceed what `cluster` has, naming each requester.

    >>> from recipes.grpo import GrpoConfig
    >>> cfg = GrpoConfig()
    >>> cfg.trainer.num_gpus = 1
    >>> resource_problems(cfg, {"CPU": 8.0, "GPU": 0.0})[0].split(" (")[0]
    'the actors ask for 2 GPU'
    """
    asked = requested(cfg)
    problems = []
    for kind in ("CPU", "GPU"):
        total = sum(a[kind] for a in asked.values())
        have = float(cluster.get(kind, 0.0))
        if total > have + 1e-9:
            who = ", ".join(f"{name} {a[kind]:g}" for name, a in asked.items() if a[kind])
            hint = "run.ray_num_cpus, or the num_cpus fields" if kind == "CPU" else "the num_gpus fields"
            problems.append(
                f"the actors ask for {total:g} {kind} ({who}) but the cluster has {have:g}: lower {hint}, or add "
                "machines"
            )
    return problems


def check_before_ray(cfg: Any) -> list[str]:
    """Resource problems knowable before Ray starts: those of a local Ray the recipe would start."""
    cluster = local_cluster(cfg.run)
    return [] if cluster is None else resource_problems(cfg, cluster)


def check_cluster(cfg: Any) -> list[str]:
    """Resource problems against the cluster Ray joined (after ray.init, before any actor starts)."""
    import ray

    return resource_problems(cfg, ray.cluster_resources())
