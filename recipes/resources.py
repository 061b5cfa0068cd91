"""The resource plan of a run: who asks for which CPUs and GPUs, against what the cluster has. Checked before any
actor starts, so a request the cluster can never grant (a GPU on a CPU machine, more CPUs than a cluster offers, a
trainer rank whose bundle fits no node) fails at once with who asked for what, instead of Ray waiting for it.

    [resources] plan against the joined cluster (1 node):
      role                           count  CPU each  GPU each  CPU total  GPU total
      trainer ranks (bundles)            2       0.5         0          1          0
      ...

The embedded default (`model.path: embedded`, the tiny model of a CPU demonstration) asks for fractional CPUs that
a 2-core `ray start --head` cannot hold: its CPU requests are scaled down to fit the cluster it joins
(`fit_embedded`), and the change is printed. A real model's run is never rescaled; it fails with the plan instead.

See what a run would ask of a cluster before launching it (a described cluster, nothing started):

    python -m recipes.resources recipes/videostar_grpo.py --node CPU=96,GPU=8 --node CPU=96,GPU=8 \\
        config=recipes/configs/videostar_paper.yaml trainer.world_size=8 rollout.num_workers=8
"""

from __future__ import annotations

import argparse
import copy
import math
import os
import re
import sys
from dataclasses import dataclass
from typing import Any

from recipes.config import EMBEDDED

EPS = 1e-9
RAY_UNIT = 1e-4  # Ray keeps resource amounts in fixed point with four decimals


@dataclass
class Ask:
    """One kind of actor: how many there are and the CPUs and GPUs each asks for (`cpu_key`, `gpu_key`: the config
    fields they come from, for the messages)."""

    role: str
    count: int
    cpus: float
    gpus: float
    cpu_key: str
    gpu_key: str

    @property
    def total(self) -> dict[str, float]:
        return {"CPU": self.count * self.cpus, "GPU": self.count * self.gpus}


@dataclass
class Node:
    """One node: its CPUs and GPUs, and (for a joined cluster) how many are free now."""

    name: str
    cpus: float
    gpus: float
    free: dict[str, float] | None = None


@dataclass
class Cluster:
    """What the actors are placed on: `where` says which cluster it is (a local Ray, the joined one, a described
    one); `grows_to`: an autoscaling cluster's most CPUs and GPUs (its config), when more nodes may come up."""

    nodes: list[Node]
    where: str
    grows_to: dict[str, float] | None = None

    def total(self, kind: str) -> float:
        return sum(n.cpus if kind == "CPU" else n.gpus for n in self.nodes)

    def can_hold(self, kind: str) -> float:
        """The nodes' total, or more when the cluster can grow."""
        return max(self.total(kind), (self.grows_to or {}).get(kind, 0.0))

    def free(self, kind: str) -> float | None:
        if any(n.free is None for n in self.nodes):
            return None
        return sum(n.free.get(kind, 0.0) for n in self.nodes)


def as_cluster(cluster: Cluster | dict[str, float]) -> Cluster:
    """A Cluster, or {"CPU": n, "GPU": n} read as one node holding them."""
    if isinstance(cluster, Cluster):
        return cluster
    return Cluster([Node("node", float(cluster.get("CPU", 0.0)), float(cluster.get("GPU", 0.0)))], "the cluster")


# ------------------------------------------------------------------------------------------------------ requests
def asks(cfg: Any, cluster_gpus: float = 0.0) -> list[Ask]:
    """The actors of a GRPO or SFT config, kind by kind. `cluster_gpus`: the cluster's GPUs, which decide whether
    a trainer rank with `num_gpus: 0` takes a GPU (`rl.trainer.rank_resources`). Reward workers only for GRPO (an
    SFT recipe scores its probe on the driver), eval actors only with `eval.every_k`."""
    from rl.trainer import rank_resources

    r, t = cfg.rollout, cfg.trainer
    rank = rank_resources(t, cluster_gpus)
    out = [
        Ask(
            "trainer ranks (bundles)",
            t.world_size,
            rank["num_cpus"],
            rank["num_gpus"],
            "trainer.num_cpus",
            "trainer.num_gpus",
        ),
    ]
    colocated = getattr(r, "placement", "split") == "colocated" and hasattr(cfg, "cold_start")
    if colocated:  # GRPO's engines live in the trainer ranks, each with its own tool pool
        out.append(Ask("rollout workers (in the trainer ranks)", 0, 0.0, 0.0, "-", "-"))
    else:
        out.append(
            Ask("rollout workers", r.num_workers, r.num_cpus, r.num_gpus, "rollout.num_cpus", "rollout.num_gpus")
        )
    out += _tool_asks(r, t.world_size if colocated else r.num_workers, "tool actors")
    if hasattr(cfg, "cold_start"):  # GRPO: reward workers (SftConfig has no cold_start)
        w = cfg.rewards
        out.append(Ask("reward workers", w.num_workers, w.num_cpus, 0.0, "rewards.num_cpus", "-"))
    e = cfg.eval
    on = e.every_k > 0
    out.append(
        Ask(
            "eval actors" if on else "eval actors (eval.every_k 0: off)",
            e.actors if on else 0,
            e.num_cpus,
            e.num_gpus,
            "eval.num_cpus",
            "eval.num_gpus",
        )
    )
    if on and _eval_uses_tools(e.benchmark):
        out += _tool_asks(r, e.actors, "eval tool actors")
    return out


def _tool_asks(r: Any, owners: int, label: str) -> list[Ask]:
    """Each rollout worker (or eval actor) starts its own tool pool: `actors_per_tool` actors of each tool, or
    `actors_per_tool` in all when the tools share processes."""
    pool = r.tool_pool
    if pool.share_process and r.enabled_tools():
        tools = "+".join(r.enabled_tools())
        return [
            Ask(
                f"{label}: {tools}",
                owners * pool.actors_per_tool,
                pool.num_cpus,
                pool.num_gpus,
                "rollout.tool_pool.num_cpus",
                "rollout.tool_pool.num_gpus",
            )
        ]
    return [
        Ask(
            f"{label}: {name}",
            owners * pool.actors_per_tool,
            pool.num_cpus,
            pool.num_gpus,
            "rollout.tool_pool.num_cpus",
            "rollout.tool_pool.num_gpus",
        )
        for name in r.enabled_tools()
    ]


def _eval_uses_tools(benchmark: str) -> bool:
    """Whether the benchmark's task runs the tool loop (its first record's task); True when it cannot be read (the
    config check names a benchmark that does not resolve)."""
    import json

    from eval.tasks import TASKS

    try:
        from eval.benchmarks import resolve

        with open(resolve(benchmark)) as f:
            first = next(line for line in f if line.strip())
        return TASKS[json.loads(first)["task"]].uses_tools
    except Exception:
        return True


# ------------------------------------------------------------------------------------------------------ problems
def resource_problems(cfg: Any, cluster: Cluster | dict[str, float]) -> list[str]:
    """Problems when the actors cannot all be placed on `cluster`, each naming who asks for what: the sums of CPUs
    and GPUs against the cluster's; when those fit, each actor (or trainer bundle) against the nodes: it must fit on
    one of them.

    >>> from recipes.grpo import GrpoConfig
    >>> cfg = GrpoConfig()
    >>> cfg.trainer.num_gpus = 1
    >>> resource_problems(cfg, {"CPU": 8.0, "GPU": 0.0})[0].split(" (")[0]
    'the actors ask for 2 GPU'
    """
    cluster = as_cluster(cluster)
    items = [a for a in asks(cfg, cluster.total("GPU")) if a.count > 0]
    return _sum_problems(items, cluster) or _node_problems(items, cluster)  # the sums first: they say more


def _sum_problems(items: list[Ask], cluster: Cluster) -> list[str]:
    problems = []
    local = cluster.where.startswith("a local Ray")
    for kind in ("CPU", "GPU"):
        total, have = sum(a.total[kind] for a in items), cluster.can_hold(kind)
        if total <= have + EPS:
            continue
        mine = [a for a in items if a.total[kind] > 0]
        who = ", ".join(f"{a.role} {a.count} x {_each(a, kind):g}" for a in mine)
        keys = ", ".join(dict.fromkeys(a.cpu_key if kind == "CPU" else a.gpu_key for a in mine))
        more = "raise run.ray_num_cpus" if local and kind == "CPU" else f"add machines with {kind}s"
        problems.append(
            f"the actors ask for {total:g} {kind} ({who}) but {cluster.where} "
            f"{'can grow to' if cluster.grows_to else 'has'} {have:g}: lower {keys} (or the "
            f"counts), or {more}"
        )
    return problems


def _node_problems(items: list[Ask], cluster: Cluster) -> list[str]:
    """An actor, or one bundle of the trainer's placement group, must fit on one node (of those up: not checked on a
    cluster that can grow, whose next nodes are not known)."""
    problems = []
    if cluster.grows_to:
        return problems
    for a in items:
        if any(a.cpus <= n.cpus + EPS and a.gpus <= n.gpus + EPS for n in cluster.nodes):
            continue
        nodes = "; ".join(f"{n.name}: {n.cpus:g} CPU, {n.gpus:g} GPU" for n in cluster.nodes)
        problems.append(
            f"each of the {a.count} {a.role} asks for {a.cpus:g} CPU and {a.gpus:g} GPU ({a.cpu_key}, {a.gpu_key}) "
            f"but no node of {cluster.where} has that much ({nodes}): lower them, or add a node with that much"
        )
    return problems


def _each(a: Ask, kind: str) -> float:
    return a.cpus if kind == "CPU" else a.gpus


# ---------------------------------------------------------------------------------------------------------- plan
def plan_text(cfg: Any, cluster: Cluster | dict[str, float]) -> str:
    """The plan as a table: per kind of actor its count, CPUs and GPUs each and in total; then the cluster, node by
    node (with what is free now, when known), and whether the actors fit."""
    cluster = as_cluster(cluster)
    items = asks(cfg, cluster.total("GPU"))
    rows = [("role", "count", "CPU each", "GPU each", "CPU total", "GPU total")]
    rows += [(a.role, str(a.count), _n(a.cpus), _n(a.gpus), _n(a.total["CPU"]), _n(a.total["GPU"])) for a in items]
    rows.append(("total", "", "", "", _n(sum(a.total["CPU"] for a in items)), _n(sum(a.total["GPU"] for a in items))))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    nodes = len(cluster.nodes)
    lines = [f"[resources] plan against {cluster.where} ({nodes} node{'s' if nodes != 1 else ''}):"]
    for row in rows:
        cells = [row[0].ljust(widths[0])] + [cell.rjust(w) for cell, w in zip(row[1:], widths[1:])]
        lines.append("  " + "  ".join(cells).rstrip())
    lines.append(f"  cluster: {_n(cluster.total('CPU'))} CPU, {_n(cluster.total('GPU'))} GPU{_free(cluster)}")
    if cluster.grows_to:
        lines.append(f"  autoscaling: up to {_n(cluster.can_hold('CPU'))} CPU, {_n(cluster.can_hold('GPU'))} GPU")
    for n in cluster.nodes if nodes > 1 or cluster.nodes[0].free is not None else []:
        free = f" (free now: {_n(n.free.get('CPU', 0.0))} CPU, {_n(n.free.get('GPU', 0.0))} GPU)" if n.free else ""
        lines.append(f"    {n.name}: {_n(n.cpus)} CPU, {_n(n.gpus)} GPU{free}")
    problems = resource_problems(cfg, cluster)
    lines.append("  fits" if not problems else f"  does not fit: {len(problems)} problem(s)")
    return "\n".join(lines)


def _free(cluster: Cluster) -> str:
    cpus, gpus = cluster.free("CPU"), cluster.free("GPU")
    return "" if cpus is None else f" (free now: {_n(cpus)} CPU, {_n(gpus)} GPU)"


def _n(x: float) -> str:
    return f"{x:.4f}".rstrip("0").rstrip(".")


# ----------------------------------------------------------------------------------------- the embedded default
def fit_embedded(cfg: Any, cluster: Cluster | dict[str, float]) -> list[str]:
    """When `model.path` is the embedded default and its actors ask for more CPUs than `cluster` has (in all, or
    one actor more than the largest node), scale every actor's `num_cpus` field down by the same factor (floored
    to Ray's 1e-4 unit) so that they fit. Changes `cfg` in place; returns "key: old -> new" for each field changed
    (empty when nothing changed). A real model is never rescaled: its settings are the user's."""
    if cfg.model.path != EMBEDDED:
        return []
    cluster = as_cluster(cluster)
    items = [a for a in asks(cfg, cluster.total("GPU")) if a.count > 0 and a.cpus > 0]
    have, largest = cluster.total("CPU"), max((n.cpus for n in cluster.nodes), default=0.0)
    if not items or have <= 0:
        return []
    asked = sum(a.total["CPU"] for a in items)
    factor = min(1.0, have / asked, largest / max(a.cpus for a in items))
    if factor >= 1.0:
        return []
    changes = []
    for key in dict.fromkeys(a.cpu_key for a in items):
        owner, name = _field(cfg, key)
        old = getattr(owner, name)
        new = math.floor(old * factor / RAY_UNIT) * RAY_UNIT
        setattr(owner, name, round(new, 4))
        changes.append(f"{key}: {_n(old)} -> {_n(new)}")
    return changes


def _field(cfg: Any, key: str) -> tuple[Any, str]:
    *path, name = key.split(".")
    owner = cfg
    for part in path:
        owner = getattr(owner, part)
    return owner, name


# ------------------------------------------------------------------------------------------------------ clusters
def local_cluster(run_cfg: Any) -> Cluster | None:
    """What a local Ray started by the recipe offers (run.ray_num_cpus, this machine's GPUs), or None when the run
    joins a cluster."""
    if run_cfg.ray_address or os.environ.get("RAY_ADDRESS"):
        return None
    import torch

    gpus = float(torch.cuda.device_count())
    return Cluster(
        [Node("this machine", float(run_cfg.ray_num_cpus), gpus)],
        f"a local Ray (run.ray_num_cpus={run_cfg.ray_num_cpus})",
    )


def ray_cluster(run_cfg: Any) -> Cluster:
    """The cluster Ray is connected to (after ray.init), node by node, with what each has free now."""
    import ray

    joined = bool(run_cfg.ray_address or os.environ.get("RAY_ADDRESS"))
    try:  # private APIs: without them the plan shows the nodes' totals only
        from ray._private.state import available_resources_per_node, state

        free, most = available_resources_per_node(), state.get_max_resources_from_cluster_config()
    except Exception:
        free, most = {}, None
    nodes = []
    for info in ray.nodes():
        if not info.get("Alive"):
            continue
        res = info.get("Resources", {})
        head = " (head)" if "node:__internal_head__" in res else ""
        name = f"node {info.get('NodeManagerAddress', '?')}{head}"
        nodes.append(Node(name, float(res.get("CPU", 0.0)), float(res.get("GPU", 0.0)), free.get(info["NodeID"])))
    cluster = Cluster(nodes, "the joined cluster" if joined else "the local Ray")
    grows = {kind: float(most.get(kind, 0)) for kind in ("CPU", "GPU")} if most else {}
    if any(grows[kind] > cluster.total(kind) for kind in grows):  # a config naming only the nodes up: no growth
        cluster.grows_to = grows
    return cluster


def described_cluster(specs: list[str]) -> Cluster:
    """A cluster described as node specs "CPU=96,GPU=8" (one per node; "4x" in front repeats it)."""
    nodes = []
    for spec in specs:
        times, body = re.fullmatch(r"(?:(\d+)x)?(.*)", spec.strip()).groups()
        amounts = {k.strip().upper(): float(v) for k, v in (part.split("=") for part in body.split(","))}
        for _ in range(int(times or 1)):
            nodes.append(Node(f"node {len(nodes) + 1}", amounts.get("CPU", 0.0), amounts.get("GPU", 0.0)))
    return Cluster(nodes, "the described cluster")


# -------------------------------------------------------------------------------------------------- the checks
def check_before_ray(cfg: Any) -> list[str]:
    """Resource problems knowable before Ray starts: those of a local Ray the recipe would start (the embedded
    default's CPUs are fitted once it runs, so only what that cannot fix is a problem here)."""
    cluster = local_cluster(cfg.run)
    if cluster is None:
        return []
    trial = copy.deepcopy(cfg)
    fit_embedded(trial, cluster)
    return resource_problems(trial, cluster)


def fit_cluster(cfg: Any, cluster: Cluster | None = None) -> list[str]:
    """After ray.init: fit the embedded default's CPU requests to the cluster Ray joined (`fit_embedded`), printing
    what changed. Call it on a GRPO config before its cold start copies the rollout and trainer sections, so that
    both stages ask for the same (the stage's rollout workers serve GRPO too)."""
    cluster = cluster or ray_cluster(cfg.run)
    changes = fit_embedded(cfg, cluster)
    if changes:
        asked = ", ".join(changes)
        print(
            f"[resources] the embedded default's actors asked for more CPUs than {cluster.where} has "
            f"({_n(cluster.total('CPU'))}): CPU requests scaled down to fit: {asked}",
            flush=True,
        )
    return changes


def check_cluster(cfg: Any) -> list[str]:
    """After ray.init, before any actor starts: fit the embedded default (`fit_cluster`), print the plan, and
    return the problems against the cluster Ray joined (empty when everything fits)."""
    cluster = ray_cluster(cfg.run)
    fit_cluster(cfg, cluster)
    print(plan_text(cfg, cluster), flush=True)
    return resource_problems(cfg, cluster)


# --------------------------------------------------------------------------------------------------------- CLI
def main(argv: list[str] | None = None) -> int:
    """`python -m recipes.resources RECIPE.py --node CPU=..,GPU=.. [key=value ...]`: the plan of that recipe's config
    against a described cluster; exit status 1 when it does not fit. Nothing is started and paths are not checked."""
    import importlib
    from pathlib import Path

    from recipes.config import ConfigError, load_config

    p = argparse.ArgumentParser(prog="python -m recipes.resources", description=main.__doc__)
    p.add_argument("recipe", help="a recipe file, e.g. recipes/videostar_grpo.py")
    p.add_argument("--node", action="append", required=True, help='one node, "CPU=96,GPU=8" ("2xCPU=96,GPU=8": two)')
    args, overrides = p.parse_known_args(argv)
    stem = Path(args.recipe).stem
    leaf = importlib.import_module(f"recipes.{stem}")
    if "grpo" in stem:
        from recipes.grpo import GrpoConfig as schema
    else:
        from recipes.sft import SftConfig as schema
    try:
        cfg = load_config(schema, overrides, getattr(leaf, "DEFAULT_YAML", None))
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    cluster = described_cluster(args.node)
    changes = fit_embedded(cfg, cluster)
    if changes:
        print("[resources] the embedded default's CPU requests scaled down to fit: " + ", ".join(changes))
    print(plan_text(cfg, cluster))
    problems = resource_problems(cfg, cluster)
    for problem in problems:
        print(f"  {problem}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
