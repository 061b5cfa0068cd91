"""The trainer's memory and speed options side by side: precision, activation checkpointing, length balancing,
shared video encoding and CPU offload.

Builds a random-initialised Qwen2.5-VL of a given shape (nothing is downloaded) -- `--shape 7b`, the published
Qwen2.5-VL-7B-Instruct sizes, or `--shape tiny`, the project's tiny model (`common.tiny_model`) for CPU and CI --
and runs `--steps` GRPO updates on synthetic trajectories (a video of `--frames` frames of `--frame-size` pixels,
`--response-tokens` trained tokens, `--group` rollouts per prompt) through the trainer's own code:
`rl.trainer.TrainerRank` (FSDP2, `rl.strategies`, `rl.batch`, `rl.grpo`), in this process with torch.distributed
(gloo on CPU, NCCL on GPU), `--world-size` processes when more than one, no Ray. Only model loading differs: the
policy and the reference are built from the config on the device.

Each option runs on and off (the rest at the device's defaults) and the table shows, per setting: peak memory per
rank (GPU: `torch.cuda.max_memory_allocated`; CPU: the bytes of live tensors counted op by op, and the process's
peak RSS growth), the planned peak (`benchmarks.scale_plan.memory_plan`), seconds per step (the mean after the
first when `--steps` > 1), tokens/s (every sequence position over all ranks), MFU on GPU and the share of
weights that changed after the first step (at `--lr`, 1e-6 by default: bf16-pure loses updates below half a
bf16 ulp). MFU = step FLOPs / (seconds * world size * `--peak-tflops` * 1e12), step FLOPs from
`benchmarks.scale_plan.step_flops`: 6 N T for the decoder layers, the lm_head at trained positions, causal
attention, the vision tower, and a third more for the reference's forward; recomputation not counted.

It then prints a memory plan for FSDP2 over `--plan-world-size` ranks of `--plan-gpu-gb` GiB each, computed, not
measured, for every precision with and without activation checkpointing.

    python benchmarks/trainer_scale.py --shape tiny --steps 2                    # CPU, a minute
    python benchmarks/trainer_scale.py --shape tiny --world-size 2 --options balance_lengths
    python benchmarks/trainer_scale.py --plan-only                               # the 7B plan, no model built
    bash benchmarks/gpu_check.sh                                                 # one GPU, 7B shape
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import gc
import json
import os
import socket
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.scale_measure import LiveBytes, plain_grpo_loss, proc_status, reset_peak_rss  # noqa: E402
from benchmarks.scale_plan import (  # noqa: E402
    GIB,
    Forward,
    Shape,
    format_plan,
    memory_plan,
    param_counts,
    plan_rows,
    step_flops,
    video_grid,
)
from rl.trainer import TrainerRank, resolve_activation_checkpointing, resolve_attn_implementation  # noqa: E402

# Published sizes of Qwen2.5-VL-7B-Instruct (its config.json); the special-token ids are the tokenizer's.
QWEN25_VL_7B = {
    "text": {
        "vocab_size": 152064,
        "hidden_size": 3584,
        "intermediate_size": 18944,
        "num_hidden_layers": 28,
        "num_attention_heads": 28,
        "num_key_value_heads": 4,
        "max_position_embeddings": 128000,
        "rms_norm_eps": 1e-6,
        "hidden_act": "silu",
        "rope_parameters": {"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": [16, 24, 24]},
        "tie_word_embeddings": False,
        "bos_token_id": 151643,
        "eos_token_id": 151645,
    },
    "vision": {
        "depth": 32,
        "hidden_size": 1280,
        "intermediate_size": 3420,
        "num_heads": 16,
        "out_hidden_size": 3584,
        "patch_size": 14,
        "spatial_merge_size": 2,
        "temporal_patch_size": 2,
        "window_size": 112,
        "fullatt_block_indexes": [7, 15, 23, 31],
        "tokens_per_second": 2,
        "hidden_act": "silu",
        "in_channels": 3,
    },
}
VISION_START, VIDEO_PAD, VISION_END = 151652, 151656, 151653
OPTIONS = ("precision", "activation_checkpointing", "balance_lengths", "share_video_encoding", "offload")


def shape_config(shape: str, layers: int = 0):
    """The transformers config of `shape` ("7b" or "tiny"), with `layers` text decoder layers when > 0."""
    from transformers import Qwen2_5_VLConfig

    from common.tiny_model import tiny_config

    if shape == "tiny":
        return tiny_config(layers=layers or 2)
    if shape != "7b":
        raise ValueError(f"--shape must be 7b or tiny, got {shape!r}")
    text = dict(QWEN25_VL_7B["text"])
    text["num_hidden_layers"] = text["max_window_layers"] = layers or text["num_hidden_layers"]
    return Qwen2_5_VLConfig(
        text_config=text,
        vision_config=dict(QWEN25_VL_7B["vision"]),
        image_token_id=151655,
        video_token_id=VIDEO_PAD,
        vision_start_token_id=VISION_START,
        vision_end_token_id=VISION_END,
        tie_word_embeddings=False,
    )


def synthetic_batch(s: Shape, args) -> list:
    """`--prompts` x `--group` trajectories: a short text prompt around one video placeholder and a response of
    plain-vocabulary tokens, all trained on. Response lengths fall linearly from `--response-tokens` by up to
    `--response-spread` of it over the batch, so the contiguous split gives the first rank the longest."""
    import numpy as np

    from rollout.trajectory import Trajectory

    rng = np.random.default_rng(args.seed)
    t, h, w = video_grid(s, args.frames, args.frame_size)
    pixels = rng.standard_normal((t * h * w, 3 * s.temporal_patch * s.patch**2), dtype=np.float32)
    video = {"pixel_values_videos": pixels, "video_grid_thw": np.array([[t, h, w]]), "second_per_grid_ts": [1.0]}
    words = [int(x) for x in rng.integers(100, 150000, size=24)]
    prompt = words[:12] + [VISION_START, VIDEO_PAD, VISION_END] + words[12:]
    n = args.prompts * args.group
    out = []
    for k in range(n):
        length = max(1, round(args.response_tokens * (1 - args.response_spread * k / max(n - 1, 1))))
        ids = [int(x) for x in rng.integers(100, 150000, size=length)]
        out.append(
            Trajectory(
                f"p{k // args.group}",
                k % args.group,
                prompt,
                ids,
                [1] * length,
                [-1.0] * length,
                mm_inputs=dict(video),
            )
        )
    return out


class ShapeRank(TrainerRank):
    """A `TrainerRank` whose policy and reference are random-initialised from a config on the rank's device, with
    the same seed on every rank (so the reference starts equal to the policy)."""

    def __init__(self, rank: int, cfg, config, seed: int = 0):
        super().__init__(rank, cfg, "", seed, 1.0, 0)
        self.shape_config = config

    def _load(self, path: str, dtype, keep_on_cpu: bool = False):
        import copy

        import torch
        from transformers import Qwen2_5_VLForConditionalGeneration

        attn = resolve_attn_implementation(self.cfg.attn_implementation, self.device.type)
        torch.manual_seed(self.seed)
        with torch.device("cpu" if keep_on_cpu else self.device):  # offloaded shards live in CPU memory
            return Qwen2_5_VLForConditionalGeneration._from_config(
                copy.deepcopy(self.shape_config), dtype=dtype, attn_implementation=attn
            )


def option_runs(args, device_type: str) -> list[tuple[str, str, dict]]:
    """(option, setting, TrainerConfig overrides) of every row: the defaults, then each option on and off."""
    from rl.config import TrainerConfig

    fields = TrainerConfig.__dataclass_fields__
    runs = [("defaults", _describe({}, device_type), {})]
    if "precision" in args.options:
        runs += [("precision", p, {"precision": p}) for p in args.precisions]
    switches = ["activation_checkpointing", "balance_lengths", "share_video_encoding"]
    for name in switches:
        # share_video_encoding is compared once TrainerConfig has the field; the memory plan does not model it yet
        if name not in args.options or name not in fields:
            continue
        if name == "balance_lengths" and args.world_size == 1:
            continue
        runs += [(name, setting, {name: value}) for setting, value in (("on", True), ("off", False))]
    if "offload" in args.options and "offload" in fields:  # the memory plan does not model it: measured only
        runs += [("offload", value, {"offload": value}) for value in ("none", "reference", "all")]
    return runs


def resolved(overrides: dict, device_type: str) -> dict:
    """The settings a run really uses (auto values resolved for the device): runs with equal ones run once."""
    from rl.config import TrainerConfig
    from rl.strategies import resolve_precision

    cfg = TrainerConfig(**overrides)
    out = {
        "precision": resolve_precision(cfg.precision, device_type),
        "activation_checkpointing": resolve_activation_checkpointing(cfg.activation_checkpointing, device_type),
    }
    for name in ("balance_lengths", "share_video_encoding", "offload"):
        if hasattr(cfg, name):
            out[name] = getattr(cfg, name)
    return out


def _describe(overrides: dict, device_type: str) -> str:
    settings = resolved(overrides, device_type)
    return f"{settings['precision']}, AC {'on' if settings['activation_checkpointing'] else 'off'}"


def _local(param):
    return param.to_local() if hasattr(param, "to_local") else param


def _changed_share(trainer, before: list) -> float:
    """The share of weight entries (over all ranks' shards) that differ from `before`."""
    changed = total = 0
    for param, old in zip(trainer.model.parameters(), before):
        new = _local(param).detach()
        changed += int((new != old.to(new.device)).sum())
        total += new.numel()
    changed, total = trainer._all_reduce([float(changed), float(total)])
    return changed / max(total, 1.0)


def measure(rank: int, world: int, args, config, batch: list, advantages: list, settings: dict, port: int) -> dict:
    """Set up a rank with `settings`, run `args.steps` GRPO steps, and return its measurements (maxima over ranks)."""
    from rl.config import TrainerConfig

    cuda = args.device == "cuda"
    cfg = TrainerConfig(
        world_size=world,
        lr=args.lr,
        kl_coef=args.kl_coef,
        micro_batch_size=args.micro_batch_size,
        backend="nccl" if cuda else "gloo",
        **settings,
    )
    problems = cfg.validate()
    if problems:
        raise ValueError("bad trainer settings:\n  " + "\n  ".join(problems))
    import torch

    rss0 = proc_status("VmRSS") if not cuda and reset_peak_rss() else None
    threads = torch.get_num_threads()  # a CPU rank runs on one thread (rl.trainer); give the caller its own back
    trainer = ShapeRank(rank, cfg, config, seed=args.seed)
    trainer.setup("127.0.0.1", port)
    try:
        return _steps(trainer, args, batch, advantages, rss0)
    finally:
        trainer.shutdown()
        torch.set_num_threads(threads)


def _steps(trainer, args, batch: list, advantages: list, rss0: int | None) -> dict:
    import torch

    cuda = args.device == "cuda"
    tracker = None if cuda else LiveBytes()
    if tracker is not None:  # what exists before the first step: weights and buffers of the policy and reference
        for model in filter(None, (trainer.model, trainer.ref)):
            for tensor in [*model.parameters(), *model.buffers()]:
                tracker.add(tensor)
    else:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    times, share, loss = [], None, float("nan")
    for step in range(args.steps):
        before = [_local(p).detach().to("cpu", copy=True) for p in trainer.model.parameters()] if step == 0 else None
        start = time.perf_counter()
        with tracker.counting() if tracker is not None else contextlib.nullcontext():
            loss = trainer.train_step(batch, advantages)["train/loss"]
        if cuda:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
        if before is not None:
            share = _changed_share(trainer, before)
            del before
    peak = torch.cuda.max_memory_allocated() if cuda else tracker.peak
    rss = proc_status("VmHWM") - rss0 if rss0 is not None else -1
    peak, rss = trainer._all_reduce([float(peak), float(rss)], op="max")
    seconds = sum(times[1:]) / (len(times) - 1) if len(times) > 1 else times[0]
    return {"peak": peak, "rss": rss, "seconds": seconds, "changed": share, "loss": loss}


def _installed(name: str) -> bool:
    import importlib.util

    try:
        return importlib.util.find_spec(name) is not None
    except ValueError:  # a module set to None in sys.modules: blocked
        return False


def run_rank(rank: int, world: int, args, settings: list[dict], ports: list[int], out: str | None = None) -> list:
    """Every run on this rank, one after another (rank 0 prints each as it finishes and writes them to `out`)."""
    import torch

    if args.device == "cuda":
        torch.cuda.set_device(rank)
    if not _installed("verl"):
        import rl.grpo

        rl.grpo.grpo_loss = plain_grpo_loss
        if rank == 0:
            print("(verl is not installed here: the GRPO loss is the benchmark's torch transcription of it)")
    config = shape_config(args.shape, args.layers)
    batch = synthetic_batch(Shape.of(config), args)
    advantages = [1.0 if k % 2 == 0 else -1.0 for k in range(len(batch))]
    results = []
    for k, run in enumerate(settings):
        try:
            results.append(measure(rank, world, args, config, batch, advantages, run, ports[k]))
        except torch.cuda.OutOfMemoryError:  # one rank in this process: record it and go on with the next run
            if world > 1:
                raise
            results.append({"peak": float("nan"), "rss": -1, "seconds": float("nan"), "changed": None, "loss": None})
        if rank == 0:
            r = results[-1]
            print(f"measured {run}: peak {r['peak'] / GIB:.3f} GiB, {r['seconds']:.2f} s/step", flush=True)
        gc.collect()
        if args.device == "cuda":
            torch.cuda.empty_cache()
    if out and rank == 0:
        Path(out).write_text(json.dumps(results))
    return results


def _free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def run_all(args, settings: list[dict]) -> list[dict]:
    """Measure every setting: in this process on one rank, else in `--world-size` spawned processes."""
    ports = _free_ports(len(settings))
    if args.world_size == 1:
        return run_rank(0, 1, args, settings, ports)
    import torch.multiprocessing as mp

    with tempfile.TemporaryDirectory(prefix="trainer-scale-") as tmp:
        out = os.path.join(tmp, "results.json")
        mp.spawn(run_rank, args=(args.world_size, args, settings, ports, out), nprocs=args.world_size, join=True)
        return json.loads(Path(out).read_text())


PROMPT_TEXT = 24  # plain tokens around the video in the synthetic prompt (plus vision start and end)


def responses(args) -> list[int]:
    """The response length of every trajectory (see `synthetic_batch`)."""
    n = args.prompts * args.group
    return [max(1, round(args.response_tokens * (1 - args.response_spread * k / max(n - 1, 1)))) for k in range(n)]


def sequence_length(s: Shape, args, response: int) -> int:
    """Tokens of a synthetic sequence after its video placeholder is expanded."""
    t, h, w = video_grid(s, args.frames, args.frame_size)
    return PROMPT_TEXT + 2 + t * h * w // s.merge**2 + response


def largest_forward(s: Shape, args) -> Forward:
    """A rank's largest forward: `micro_batch_size` sequences padded to the longest."""
    t, h, w = video_grid(s, args.frames, args.frame_size)
    mb, longest = args.micro_batch_size, max(responses(args))
    per_rank = args.prompts * args.group // args.world_size
    return Forward(mb, mb * sequence_length(s, args, longest), mb * t * h * w, mb * longest, per_rank * t * h * w)


def rank_loads_line(s: Shape, args) -> str:
    """The largest rank's tokens with the contiguous split and balanced (`rl.balance`), against the mean."""
    from rl.balance import balanced_shards, contiguous_shards, rank_loads

    costs = [sequence_length(s, args, r) for r in responses(args)]
    world, mean = args.world_size, sum(costs) / args.world_size
    contiguous = max(rank_loads(costs, contiguous_shards(len(costs), world)))
    balanced = max(rank_loads(costs, balanced_shards(costs, world)))
    return (
        f"tokens on the busiest rank: {contiguous:,.0f} contiguous, {balanced:,.0f} balanced "
        f"(mean {mean:,.0f}; {contiguous / mean:.2f}x and {balanced / mean:.2f}x)"
    )


def table_rows(args, s: Shape, runs: list, keys: list[int], results: list[dict]) -> list[dict]:
    """One row per (option, setting): measured values, the planned peak at the measured world size, MFU on GPU."""
    grid = video_grid(s, args.frames, args.frame_size)
    seqs = [(sequence_length(s, args, r), r, grid) for r in responses(args)]
    tokens = sum(t for t, _, _ in seqs)
    flops = step_flops(s, seqs, reference=args.kl_coef != 0)
    cuda = args.device == "cuda"
    rows = []
    for (option, setting, overrides), k in zip(runs, keys):
        r, settings = results[k], resolved(overrides, args.device)
        plan = memory_plan(
            s,
            largest_forward(s, args),
            precision=settings["precision"],
            checkpointing=settings["activation_checkpointing"],
            world=args.world_size,
            reference=args.kl_coef != 0,
            cuda=cuda,
            first_step=args.steps == 1,
        )
        rows.append(
            {
                "option": option,
                "setting": setting,
                "peak_gib": r["peak"] / GIB,
                "planned_gib": plan["peak"] / GIB,
                "rss_gib": r["rss"] / GIB if r["rss"] >= 0 else None,
                "seconds": r["seconds"],
                "tokens_per_s": tokens / r["seconds"],
                "changed": r["changed"],
                "loss": r["loss"],
                "mfu": flops / (r["seconds"] * args.world_size * args.peak_tflops * 1e12) if cuda else None,
            }
        )
    return rows


def format_table(rows: list[dict], cuda: bool) -> str:
    peak = "peak GiB (max allocated)" if cuda else "peak GiB (tensors)"
    head = f"{'option':<26}{'setting':<18}{peak:>25}{'planned':>9}{'RSS+ GiB':>10}{'s/step':>9}{'tokens/s':>11}"
    lines = [head + f"{'MFU':>7}{'weights changed':>17}"]
    for r in rows:
        if r["seconds"] != r["seconds"]:  # NaN: out of memory
            lines.append(f"{r['option']:<26}{r['setting']:<18}{'out of memory':>25}{r['planned_gib']:>9.3f}")
            continue
        rss = f"{r['rss_gib']:.3f}" if r["rss_gib"] is not None else "-"
        mfu = f"{r['mfu']:.1%}" if r["mfu"] is not None else "-"
        lines.append(
            f"{r['option']:<26}{r['setting']:<18}{r['peak_gib']:>25.3f}{r['planned_gib']:>9.3f}{rss:>10}"
            f"{r['seconds']:>9.2f}{r['tokens_per_s']:>11,.0f}{mfu:>7}{r['changed']:>17.2%}"
        )
    return "\n".join(lines)


def choose_layers(args, budget: float) -> int:
    """The most decoder layers (up to the shape's) at which every run's planned peak fits in `budget` bytes."""
    full = Shape.of(shape_config(args.shape))
    runs = [resolved(o, args.device) for _, _, o in option_runs(args, args.device)]
    for layers in range(full.layers, 0, -1):
        s = dataclasses.replace(full, layers=layers)
        fwd = largest_forward(s, args)
        worst = max(
            memory_plan(
                s,
                fwd,
                precision=r["precision"],
                checkpointing=r["activation_checkpointing"],
                world=args.world_size,
                reference=args.kl_coef != 0,
                cuda=args.device == "cuda",
            )["peak"]
            for r in runs
        )
        if worst <= budget:
            print(
                f"--layers auto: {layers} of {full.layers} decoder layers, planned peak {worst / GIB:.1f} GiB "
                f"within {budget / GIB:.1f} GiB"
            )
            return layers
    raise SystemExit(f"--layers auto: not even one decoder layer fits {budget / GIB:.1f} GiB at these lengths")


SHAPE_DEFAULTS = {  # frames, frame size, response tokens, group
    "7b": (16, 448, 4096, 8),
    "tiny": (8, 112, 128, 4),
}


def parse_args(argv: list[str]):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", default="7b", choices=tuple(SHAPE_DEFAULTS))
    parser.add_argument("--layers", default="0", help="text decoder layers: 0 the shape's, N, or auto (what fits)")
    parser.add_argument("--frames", type=int, help="video frames per sequence (7b: 16, tiny: 8)")
    parser.add_argument("--frame-size", type=int, help="square frame side in pixels (7b: 448, tiny: 112)")
    parser.add_argument("--response-tokens", type=int, help="trained tokens of the longest response (7b: 4096)")
    parser.add_argument("--response-spread", type=float, default=0.0, help="how much shorter the shortest response is")
    parser.add_argument("--group", type=int, help="rollouts per prompt, G (7b: 8, tiny: 4)")
    parser.add_argument("--prompts", type=int, default=0, help="prompts per step (0: one per rank)")
    parser.add_argument("--world-size", type=int, default=1)
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--micro-batch-size", type=int, default=1)
    parser.add_argument("--lr", type=float, default=1e-6)
    parser.add_argument("--kl-coef", type=float, default=0.01, help="0 drops the reference policy")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--options", default=",".join(OPTIONS), help=f"which of {', '.join(OPTIONS)} to compare")
    parser.add_argument("--precisions", default="bf16-mixed,bf16-pure,fp32")
    parser.add_argument("--device", default="", help="cpu or cuda (default: cuda when there is one)")
    parser.add_argument("--peak-tflops", type=float, default=989.0, help="the card's dense bf16 peak (H100/H200)")
    parser.add_argument("--plan-world-size", type=int, default=8)
    parser.add_argument("--plan-gpu-gb", type=float, default=80.0, help="each card's memory in the plan, GiB")
    parser.add_argument("--gpu-memory-gb", type=float, default=0.0, help="for --layers auto (0: the card's)")
    parser.add_argument("--fit-fraction", type=float, default=0.85, help="--layers auto keeps the plan below this")
    parser.add_argument("--plan-only", action="store_true", help="print the memory plan; build and run nothing")
    args = parser.parse_args(argv)
    frames, size, response, group = SHAPE_DEFAULTS[args.shape]
    args.frames, args.frame_size = args.frames or frames, args.frame_size or size
    args.response_tokens, args.group = args.response_tokens or response, args.group or group
    args.prompts = args.prompts or args.world_size
    args.options = [o for o in args.options.split(",") if o]
    args.precisions = [p for p in args.precisions.split(",") if p]
    unknown = [o for o in args.options if o not in OPTIONS]
    if unknown:
        parser.error(f"--options: unknown {unknown}; choose from {', '.join(OPTIONS)}")
    return args


def _resolve_device_and_layers(args) -> None:
    import torch

    args.device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if args.layers != "auto":
        args.layers = int(args.layers)
        return
    budget = args.gpu_memory_gb * 1e9
    if not budget and args.device == "cuda":
        budget = torch.cuda.get_device_properties(0).total_memory
    if not budget:
        raise SystemExit("--layers auto needs a GPU or --gpu-memory-gb")
    args.layers = choose_layers(args, budget * args.fit_fraction)


def main(argv: list[str]) -> dict:
    """Measure the options (unless `--plan-only`) and print the table and the plan; returns both."""
    args = parse_args(argv)
    _resolve_device_and_layers(args)
    s = Shape.of(shape_config(args.shape, args.layers))
    n, fwd = param_counts(s), largest_forward(s, args)
    print(
        f"shape {args.shape}: {s.layers} decoder layers, {n['total'] / 1e9:.3f} B parameters (decoder layers "
        f"{n['text_layers'] / 1e9:.3f} B, vision {n['vision'] / 1e9:.3f} B, embeddings and lm_head "
        f"{(n['embed'] + n['lm_head']) / 1e9:.3f} B); {args.prompts * args.group} sequences of up to "
        f"{fwd.tokens // fwd.sequences:,} tokens ({args.frames} frames of {args.frame_size} px, "
        f"{max(responses(args)):,} response tokens) per step on {args.world_size} rank(s), {args.device}"
    )
    out: dict = {"layers": s.layers, "rows": []}
    if not args.plan_only:
        if "balance_lengths" in args.options and args.world_size == 1:
            print("(balance_lengths: nothing to balance on one rank; run with --world-size 2 or more)")
        if "balance_lengths" in args.options and args.world_size > 1:
            print(rank_loads_line(s, args))
        runs = option_runs(args, args.device)
        unique = []
        for _, _, overrides in runs:
            if resolved(overrides, args.device) not in [resolved(u, args.device) for u in unique]:
                unique.append(overrides)
        keys = [[resolved(u, args.device) for u in unique].index(resolved(o, args.device)) for _, _, o in runs]
        results = run_all(args, unique)
        out["rows"] = table_rows(args, s, runs, keys, results)
        print(format_table(out["rows"], args.device == "cuda"))
    # the plan: one prompt's group on each of --plan-world-size ranks
    plan_fwd = dataclasses.replace(fwd, rank_patches=args.group * fwd.patches // fwd.sequences)
    out["plan"] = plan_rows(s, plan_fwd, args.plan_world_size, args.kl_coef != 0)
    print(format_plan(out["plan"], s, plan_fwd, args.plan_world_size, args.plan_gpu_gb))
    return out


if __name__ == "__main__":
    main(sys.argv[1:])
