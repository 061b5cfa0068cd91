"""The resource plan: who asks for what, against a described cluster; the embedded default fitted to a small one;
per-node fit; a tool on a GPU without a GPU share. Expected numbers are worked out by hand from the config values."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from recipes import resources, videostar_grpo
from recipes.config import ConfigError, load_config
from recipes.grpo import GrpoConfig
from recipes.resources import Cluster, Node, described_cluster, fit_embedded, plan_text, resource_problems
from rollout.config import tool_device_problems

ROOT = Path(__file__).resolve().parents[2]


def _cfg(*overrides: str) -> GrpoConfig:
    """The Video-STAR embedded default (no checks: the plan is computed without the files it names)."""
    return load_config(GrpoConfig, list(overrides), videostar_grpo.DEFAULT_YAML)


def _rows(text: str) -> dict[str, list[str]]:
    """The plan's table: role -> [count, CPU each, GPU each, CPU total, GPU total] (the total row: two cells)."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip().startswith("role"))
    out = {}
    for line in lines[start + 1 :]:
        if line.strip().startswith("cluster:"):
            break
        cells = line.strip().split("  ")
        cells = [c.strip() for c in cells if c.strip()]
        out[cells[0]] = cells[1:]
    return out


def test_the_plan_of_the_embedded_default_names_every_role_with_its_sums():
    text = plan_text(_cfg(), Cluster([Node("node 1", 8.0, 0.0)], "the described cluster"))
    rows = _rows(text)
    # videostar_grpo.yaml: 2 trainer ranks, 1 rollout worker, 4 tools, 1 reward worker; defaults: rank 0.5 CPU,
    # worker 0.5, tool actor 0.25, reward worker 0.25, no GPUs; eval off
    assert rows["trainer ranks (bundles)"] == ["2", "0.5", "0", "1", "0"]
    assert rows["rollout workers"] == ["1", "0.5", "0", "0.5", "0"]
    for tool in ("pose_estimation", "human_detection", "action_explanation", "video_description"):
        assert rows[f"tool actors: {tool}"] == ["1", "0.25", "0", "0.25", "0"]
    assert rows["reward workers"] == ["1", "0.25", "0", "0.25", "0"]
    assert rows["eval actors (eval.every_k 0: off)"] == ["0", "0.5", "0", "0", "0"]
    assert rows["total"] == ["2.75", "0"]  # 1 + 0.5 + 4 x 0.25 + 0.25
    assert text.startswith("[resources] plan against the described cluster (1 node):")
    assert "  cluster: 8 CPU, 0 GPU\n" in text and text.endswith("  fits")


def test_the_plan_counts_eval_actors_and_their_tools_and_gpus_per_rank():
    # on a GPU cluster a rank with num_gpus 0 runs NCCL on one GPU (rl.trainer.rank_resources)
    cfg = _cfg("eval.every_k=2", "eval.actors=2", "eval.num_gpus=0.5", "rollout.tool_pool.num_gpus=0.1")
    rows = _rows(plan_text(cfg, described_cluster(["CPU=32,GPU=8"])))
    assert rows["trainer ranks (bundles)"] == ["2", "0.5", "1", "1", "2"]
    assert rows["eval actors"] == ["2", "0.5", "0.5", "1", "1"]
    # sample-ovar is an ovar benchmark: each eval actor has its own pool of the 4 tools
    assert rows["eval tool actors: pose_estimation"] == ["2", "0.25", "0.1", "0.5", "0.2"]
    # CPU: 1 + 0.5 + 4 x 0.25 + 0.25 + 1 + 4 x 0.5 = 5.75; GPU: 2 + 0 + 4 x 0.1 + 0 + 1 + 4 x 0.2 = 4.2
    assert rows["total"] == ["5.75", "4.2"]


def test_the_embedded_default_is_scaled_to_a_two_cpu_cluster():
    cfg, two = _cfg(), described_cluster(["CPU=2"])
    assert resource_problems(cfg, two)[0].startswith("the actors ask for 2.75 CPU")
    changes = fit_embedded(cfg, two)
    # factor 2 / 2.75 = 8/11: 0.5 * 8/11 = 0.363636.. and 0.25 * 8/11 = 0.181818.., floored to Ray's 1e-4
    assert changes == [
        "trainer.num_cpus: 0.5 -> 0.3636",
        "rollout.num_cpus: 0.5 -> 0.3636",
        "rollout.tool_pool.num_cpus: 0.25 -> 0.1818",
        "rewards.num_cpus: 0.25 -> 0.1818",
    ]
    assert (cfg.trainer.num_cpus, cfg.rollout.num_cpus, cfg.rollout.tool_pool.num_cpus) == (0.3636, 0.3636, 0.1818)
    assert cfg.rewards.num_cpus == 0.1818 and cfg.eval.num_cpus == 0.5  # eval is off: left alone
    assert resource_problems(cfg, two) == []
    assert _rows(plan_text(cfg, two))["total"] == ["1.9998", "0"]  # 3 x 0.3636 + 5 x 0.1818
    assert fit_embedded(cfg, two) == []  # fitted once: a second call (the GRPO stage after the cold start) keeps it


def test_scaling_covers_the_eval_actors_and_what_they_are_given(tmp_path):
    from eval.during_training import TrainingEval

    cfg = _cfg("eval.every_k=1")
    evals = TrainingEval(cfg.eval, tmp_path, cfg.rollout)  # made before Ray starts, as the recipe does
    assert evals.options.num_cpus == 0.5
    fit_embedded(cfg, described_cluster(["CPU=2"]))
    # 2.75 + eval actor 0.5 + its 4 tool actors 4 x 0.25 = 4.25; factor 2 / 4.25 = 8/17:
    # 0.5 * 8/17 = 0.23529.. -> 0.2352, 0.25 * 8/17 = 0.11764.. -> 0.1176
    assert (cfg.eval.num_cpus, cfg.trainer.num_cpus, cfg.rollout.tool_pool.num_cpus) == (0.2352, 0.2352, 0.1176)
    assert evals.options.num_cpus == 0.2352 and evals.options.rollout.tool_pool.num_cpus == 0.1176
    # 4 x 0.2352 (trainer, rollout, eval) + 9 x 0.1176 (8 tool actors, the reward worker) = 1.9992
    assert _rows(plan_text(cfg, described_cluster(["CPU=2"])))["total"] == ["1.9992", "0"]


def test_scaling_also_makes_each_actor_fit_the_largest_node():
    cfg = _cfg()
    ten = described_cluster(["10xCPU=0.4"])  # 4 CPUs in all, but no node holds a 0.5-CPU rank: factor 0.4 / 0.5
    assert [n.cpus for n in ten.nodes] == [0.4] * 10
    fit_embedded(cfg, ten)
    assert (cfg.trainer.num_cpus, cfg.rollout.num_cpus, cfg.rollout.tool_pool.num_cpus) == (0.4, 0.4, 0.2)
    assert resource_problems(cfg, ten) == []


def test_a_real_model_is_never_rescaled_and_fails_naming_who_asks(tmp_path):
    cfg = _cfg(f"model.path={tmp_path}")
    assert fit_embedded(cfg, described_cluster(["CPU=2"])) == []
    assert cfg.trainer.num_cpus == 0.5
    (problem,) = resource_problems(cfg, described_cluster(["CPU=2"]))
    assert problem == (
        "the actors ask for 2.75 CPU (trainer ranks (bundles) 2 x 0.5, rollout workers 1 x 0.5, tool actors: "
        "pose_estimation 1 x 0.25, tool actors: human_detection 1 x 0.25, tool actors: action_explanation 1 x 0.25, "
        "tool actors: video_description 1 x 0.25, reward workers 1 x 0.25) but the described cluster has 2: lower "
        "trainer.num_cpus, rollout.num_cpus, rollout.tool_pool.num_cpus, rewards.num_cpus (or the counts), or add "
        "machines with CPUs"
    )


def test_a_bundle_must_fit_on_one_node():
    cfg = _cfg("trainer.num_gpus=1")
    # in all 16.25 CPUs and 4 GPUs (enough for 2.75 and 2), but a rank's bundle of 0.5 CPU + 1 GPU fits neither node
    split = Cluster([Node("cpu-node", 16.0, 0.0), Node("gpu-node", 0.25, 4.0)], "the described cluster")
    assert fit_embedded(cfg, split) == []  # the CPUs fit: nothing to scale
    (problem,) = resource_problems(cfg, split)
    assert problem.startswith(
        "each of the 2 trainer ranks (bundles) asks for 0.5 CPU and 1 GPU (trainer.num_cpus, trainer.num_gpus) but "
        "no node of the described cluster has that much (cpu-node: 16 CPU, 0 GPU; gpu-node: 0.25 CPU, 4 GPU)"
    )
    assert resource_problems(cfg, Cluster([Node("n", 16.0, 0.0), Node("g", 2.0, 4.0)], "c")) == []
    # on a node of CPUs only, a rank asking for a GPU fails on the sum already
    assert resource_problems(cfg, described_cluster(["CPU=16"]))[0].startswith(
        "the actors ask for 2 GPU (trainer ranks (bundles) 2 x 1) but the described cluster has 0"
    )


def test_an_autoscaling_cluster_is_checked_against_what_it_can_grow_to():
    cfg = _cfg(f"model.path={Path.cwd()}", "trainer.num_gpus=1")
    head = [Node("head", 4.0, 0.0)]  # the GPU nodes are not up yet
    assert resource_problems(cfg, Cluster(head, "the joined cluster"))[0].startswith("the actors ask for 2 GPU")
    growing = Cluster(head, "the joined cluster", grows_to={"CPU": 68.0, "GPU": 8.0})
    assert resource_problems(cfg, growing) == []  # 2 GPUs of 8; no node check: the next nodes are not known
    assert "  autoscaling: up to 68 CPU, 8 GPU\n" in plan_text(cfg, growing)
    (problem,) = resource_problems(cfg, Cluster(head, "the joined cluster", grows_to={"CPU": 68.0, "GPU": 1.0}))
    assert problem == (
        "the actors ask for 2 GPU (trainer ranks (bundles) 2 x 1) but the joined cluster can grow to 1: lower "
        "trainer.num_gpus (or the counts), or add machines with GPUs"
    )


def _readme_gpu_commands() -> list[list[str]]:
    """The recipe arguments of each command of the README's GPU section (from the recipe file on)."""
    text = (ROOT / "README.md").read_text()
    section = text[text.index("## A real model and dataset on GPUs") :]
    section = section[: section.index("\n## ")]
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", section, re.S):
        for line in block.replace("\\\n", " ").splitlines():
            if "recipes/videostar_grpo.py" in line:
                args = shlex.split(line)
                commands.append(args[args.index("recipes/videostar_grpo.py") :])
    return commands


def test_the_readme_gpu_commands_fit_the_clusters_they_are_for(capsys):
    one_node, colocated, two_nodes = _readme_gpu_commands()
    assert resources.main([*colocated, "--node", "CPU=96,GPU=8"]) == 0
    rows = _rows(capsys.readouterr().out)
    # 8 ranks x 1 GPU, each hosting its engine; 32 tool actors (4 tools x 8 ranks) on CPUs only:
    # CPUs 8 x 0.5 + 32 x 0.25 + 0.25 = 12.25, GPUs 8
    assert rows["trainer ranks (bundles)"] == ["8", "0.5", "1", "4", "8"]
    assert rows["rollout workers (in the trainer ranks)"] == ["0", "0", "0", "0", "0"]
    assert rows["tool actors: pose_estimation"] == ["8", "0.25", "0", "2", "0"]
    assert rows["total"] == ["12.25", "8"]
    assert resources.main([*one_node, "--node", "CPU=96,GPU=8"]) == 0
    rows = _rows(capsys.readouterr().out)
    # 4 ranks x 1 GPU + 4 vLLM workers x 0.8 + 16 tool actors (4 tools x 4 workers) x 0.05 = 4 + 3.2 + 0.8 = 8 GPUs;
    # CPUs: 4 x 0.5 + 4 x 0.5 + 16 x 0.25 + 0.25 (the reward worker) = 8.25
    assert rows["trainer ranks (bundles)"] == ["4", "0.5", "1", "2", "4"]
    assert rows["rollout workers"] == ["4", "0.5", "0.8", "2", "3.2"]
    assert rows["tool actors: pose_estimation"] == ["4", "0.25", "0.05", "1", "0.2"]
    assert rows["total"] == ["8.25", "8"]
    assert resources.main([*one_node, "--node", "CPU=96,GPU=7"]) == 1  # one GPU short: refused
    assert "the actors ask for 8 GPU (" in capsys.readouterr().out
    assert resources.main([*two_nodes, "--node", "2xCPU=96,GPU=8"]) == 0
    assert _rows(capsys.readouterr().out)["total"] == ["16.25", "16"]  # 8 + 8 x 0.8 + 32 x 0.05
    assert resources.main([*two_nodes, "--node", "CPU=96,GPU=8"]) == 1
    capsys.readouterr()
    for command in (one_node, colocated, two_nodes):  # tools on cuda have a GPU share; the batch splits over ranks
        cfg = load_config(GrpoConfig, command[1:], videostar_grpo.DEFAULT_YAML)
        assert tool_device_problems(cfg.rollout) == []
        assert cfg.data.batch_size * cfg.rollout.n % cfg.trainer.world_size == 0
    # the command the README had: 8 trainer GPUs and one vLLM GPU on an 8-GPU node
    old = ["model.path=/models/Qwen2.5-VL-7B-Instruct", "cold_start.steps=0", "rollout.engine=vllm"]
    old += ["rollout.num_gpus=1", "trainer.num_gpus=1", "trainer.world_size=8"]
    assert resources.main(["recipes/videostar_grpo.py", *old, "--node", "CPU=96,GPU=8"]) == 1
    out = capsys.readouterr().out
    assert "the actors ask for 9 GPU (trainer ranks (bundles) 8 x 1, rollout workers 1 x 1) but the described " in out


def test_a_tool_on_a_gpu_needs_a_gpu_share():
    argv = ["rollout.tools.pose_estimation.device=cuda", "rollout.tools.video_description.describer.device=cuda:0"]
    with pytest.raises(ConfigError) as err:
        from recipes import grpo

        grpo.load(argv, videostar_grpo.DEFAULT_YAML)
    text = str(err.value)
    assert "rollout.tools.pose_estimation.device: 'cuda' (a GPU) but rollout.tool_pool.num_gpus is 0" in text
    assert "rollout.tools.video_description.describer.device: 'cuda:0' (a GPU) but " in text
    assert "human_detection" not in text  # device cpu (its default)
    cfg = _cfg(*argv, "rollout.tool_pool.num_gpus=0.05")
    assert tool_device_problems(cfg.rollout) == []


def test_before_ray_only_what_fitting_cannot_fix_is_a_problem(monkeypatch, tmp_path):
    cfg = _cfg("run.ray_num_cpus=2")
    assert resources.check_before_ray(cfg) == []  # the embedded default is fitted once Ray is up
    assert cfg.trainer.num_cpus == 0.5  # not yet: the check works on a copy
    cfg.model.path = str(tmp_path)
    assert resources.check_before_ray(cfg)[0].startswith("the actors ask for 2.75 CPU")
    monkeypatch.setenv("RAY_ADDRESS", "127.0.0.1:1")  # a cluster to join: nothing is known before joining it
    assert resources.check_before_ray(cfg) == []
    monkeypatch.delenv("RAY_ADDRESS")
    cfg.run.ray_address = "auto"
    assert resources.local_cluster(cfg.run) is None


def test_against_a_running_ray_the_plan_is_printed_and_the_default_fitted(ray_local, capsys):
    cfg = _cfg("run.ray_address=auto")  # the session's Ray (8 CPUs) as the cluster joined
    cluster = resources.ray_cluster(cfg.run)
    assert cluster.where == "the joined cluster" and cluster.total("CPU") == 8.0 and cluster.total("GPU") == 0.0
    assert len(cluster.nodes) == 1 and cluster.nodes[0].name.endswith("(head)")
    assert resources.check_cluster(cfg) == []
    out = capsys.readouterr().out
    assert "[resources] plan against the joined cluster (1 node):" in out and "scaled" not in out
    assert cluster.grows_to is None and "autoscaling" not in out  # a fixed cluster
    assert cfg.trainer.num_cpus == 0.5
    cfg = _cfg("run.ray_address=auto", "trainer.world_size=20")  # 20 x 0.5 + 1.75 = 11.75 > 8: scaled by 8/11.75
    assert resources.check_cluster(cfg) == []
    out = capsys.readouterr().out
    # 0.5 * 8 / 11.75 = 0.340425.. -> 0.3404; 0.25 * 8 / 11.75 = 0.170212.. -> 0.1702
    assert "trainer.num_cpus: 0.5 -> 0.3404" in out and "rollout.tool_pool.num_cpus: 0.25 -> 0.1702" in out
