"""Does the trainer score what a `generate` engine sampled? On any device, with torch and transformers only.

A random Qwen2.5-VL (the tiny shape by default; nothing downloaded, no tokenizer) gets a prompt with a video of
`--frames` frames sampled every `--seconds-per-frame` seconds (random pixels), samples `--new-tokens` tokens with
transformers `generate` at `--temperature`, and the trainer's scoring (`rl.batch.token_logprobs`) recomputes their
log-probs. Printed: how many rope positions transformers' own `get_rope_index` gives differently from
`rollout.positions` (vLLM's computation), and |engine - trainer| log-prob (mean, max) with our positions installed
in both, then with transformers' own in the engine (what a run would train on without the shared computation).

    python benchmarks/engine_agreement.py                                  # CPU, fp32
    python benchmarks/engine_agreement.py --device cuda --dtype bfloat16   # the GPU check (benchmarks/gpu_check.sh)
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

VISION_START, VISION_END = 151652, 151653


def build(args):
    import torch
    from transformers import Qwen2_5_VLForConditionalGeneration

    from common.tiny_model import tiny_config

    torch.manual_seed(0)
    config = tiny_config(hidden=args.hidden, layers=args.layers, heads=args.heads)
    return Qwen2_5_VLForConditionalGeneration(config).to(args.device, getattr(torch, args.dtype)).eval()


def prompt(args, config):
    """Unexpanded prompt ids (one video placeholder) and the processed video (numpy), random but valid."""
    import numpy as np

    from rollout.trajectory import VIDEO_PAD_ID

    vision, rng = config.vision_config, np.random.default_rng(0)
    grid = np.array([[args.frames // vision.temporal_patch_size, args.grid, args.grid]], dtype=np.int64)
    dim = vision.in_channels * vision.temporal_patch_size * vision.patch_size**2
    text = rng.integers(1000, 100_000, size=12).tolist()
    ids = text[:6] + [VISION_START, VIDEO_PAD_ID, VISION_END] + text[6:]
    mm = {
        "pixel_values_videos": rng.standard_normal((int(grid.prod()), dim)).astype(np.float32),
        "video_grid_thw": grid,
        "second_per_grid_ts": np.array([vision.temporal_patch_size * args.seconds_per_frame], dtype=np.float32),
    }
    return ids, mm


def sample(model, ids, mm, args):
    """`generate` on the expanded prompt: the new tokens and their processed (tempered) log-probs."""
    import torch

    from rollout.hf_engine import processed_logprobs
    from rollout.multimodal import VISION_TOKEN_IDS, mm_token_type_ids
    from rollout.trajectory import expand_placeholders

    full, _ = expand_placeholders(ids, video_grid_thw=mm["video_grid_thw"])
    x = torch.tensor([full], device=args.device)
    inputs = {k: torch.from_numpy(v).to(args.device) for k, v in mm.items()}
    inputs["pixel_values_videos"] = inputs["pixel_values_videos"].to(model.dtype)
    torch.manual_seed(1)
    with torch.no_grad():
        out = model.generate(
            input_ids=x,
            attention_mask=torch.ones_like(x),
            mm_token_type_ids=torch.tensor([mm_token_type_ids(full)], device=args.device),
            do_sample=True,
            temperature=args.temperature,
            top_k=0,
            max_new_tokens=args.new_tokens,
            min_new_tokens=args.new_tokens,
            suppress_tokens=list(VISION_TOKEN_IDS),
            return_dict_in_generate=True,
            output_scores=True,
            **inputs,
        )
    new = out.sequences[:, len(full) :]
    return new[0].tolist(), processed_logprobs(torch.stack(out.scores, 1), new)[0].tolist()


def score(model, ids, mm, tokens, logprobs, args) -> tuple[float, float]:
    """|engine - trainer| log-prob over the sampled tokens: mean and max."""
    import torch

    from rl.batch import build_batch, token_logprobs
    from rollout.trajectory import Trajectory

    traj = Trajectory("s", 0, ids, tokens, [1] * len(tokens), logprobs, mm_inputs=mm)
    batch = build_batch([traj])
    with torch.no_grad():
        ours = token_logprobs(model, batch, temperature=args.temperature).float().cpu()
    diff = (ours[0, : len(tokens)] - torch.tensor(logprobs)).abs()
    return float(diff.mean()), float(diff.max())


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--grid", type=int, default=8, help="patches per side of a frame (x14 px)")
    parser.add_argument("--seconds-per-frame", type=float, default=2 / 3)
    parser.add_argument("--temperature", type=float, default=0.7)
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--heads", type=int, default=2)
    args = parser.parse_args(argv)

    import torch

    from rollout import positions
    from rollout.trajectory import expand_placeholders

    model = build(args)
    ids, mm = prompt(args, model.config)
    full, _ = expand_placeholders(ids, video_grid_thw=mm["video_grid_thw"])
    x = torch.tensor([full])
    types = torch.tensor([[2 if t == 151656 else 0 for t in full]])
    theirs, _ = model.model.get_rope_index(
        x,
        types,
        video_grid_thw=torch.from_numpy(mm["video_grid_thw"]),
        second_per_grid_ts=torch.from_numpy(mm["second_per_grid_ts"]),
    )
    vision = model.config.vision_config
    ours, _ = positions.mrope_positions(
        full, None, mm["video_grid_thw"], mm["second_per_grid_ts"], vision.spatial_merge_size, vision.tokens_per_second
    )
    differ = int((theirs[:, 0].numpy() != ours).any(0).sum())
    print(
        f"device {args.device}, {args.dtype}; {len(full)} prompt positions, {differ} placed differently by "
        f"transformers' get_rope_index than by rollout.positions ({args.seconds_per_frame:.3g} s per frame)"
    )
    tokens_plain, logprobs_plain = sample(model, ids, mm, args)  # the engine with transformers' positions
    positions.install(model)
    tokens, logprobs = sample(model, ids, mm, args)
    mean, worst = score(model, ids, mm, tokens, logprobs, args)
    print(f"shared positions:        |engine - trainer| mean {mean:.2e}, max {worst:.2e} over {len(tokens)} tokens")
    mean, worst = score(model, ids, mm, tokens_plain, logprobs_plain, args)
    print(f"transformers' positions: |engine - trainer| mean {mean:.2e}, max {worst:.2e} (the trainer uses ours)")


if __name__ == "__main__":
    main()
