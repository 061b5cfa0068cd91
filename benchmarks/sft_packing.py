"""Sequence packing against padding for the SFT forward and backward: positions computed, seconds, and the loss.

Builds `--n` seeded conversations of mixed lengths with the tiny model's real processor (half with a video of
random frames, half text only; responses of 16 to `--max-response` tokens, the spread of tool-using chains) and
runs one SFT pass (forward, token-mean cross-entropy, backward) over them three ways, side by side in one run:

- padded:  micro-batches of `--micro-batch-size` in the given order, each right-padded to its longest sequence;
- grouped: the same after ordering longest first (`group_by_length`);
- packed:  first-fit packs of at most `--pack-tokens` tokens, one row each, no padding (`pack_max_tokens`).

It prints, for each, the sequence positions the forwards computed, the median seconds over `--repeats`, both as
ratios to padding, and the loss, which must agree across the three (the layout changes nothing a token sees).

Two effects make packing faster than padding beyond the padding it drops: a padded micro-batch computes logits at
the union of its rows' response positions in every row, a packed row only where a token is trained on. Against
that, sdpa and eager attention (CPU) compute a packed row's block-diagonal mask densely, so their attention cost
grows with the square of the pack: keep packs near the longest sequence there (the default). flash-attention's
variable-length kernel (GPU) has no such cost, and larger packs only help.

    python benchmarks/sft_packing.py                     # 32 conversations, tiny model
    python benchmarks/sft_packing.py --n 64 --max-response 1024 --model /path/to/Qwen2.5-VL-3B-Instruct \
        --device cuda --dtype bfloat16
    python benchmarks/sft_packing.py --device cuda --dtype bfloat16 --size 1024,8,8   # a random model of that size
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rollout.trajectory import Trajectory  # noqa: E402

METHODS = ("padded", "grouped", "packed")


def conversations(model_dir: str, n: int, max_response: int, seed: int = 0) -> list[Trajectory]:
    """`n` seeded SFT conversations: a chat prompt (every other one with an 8-frame video) and a random response
    of 16 to `max_response` plain-vocabulary tokens, all trained on."""
    import numpy as np
    from transformers import AutoProcessor

    rng = np.random.default_rng(seed)
    processor = AutoProcessor.from_pretrained(model_dir)
    video = processor.video_processor(videos=[rng.integers(0, 256, (8, 112, 112, 3), dtype=np.uint8)])
    video_mm = {
        "pixel_values_videos": np.asarray(video["pixel_values_videos"], dtype=np.float32),
        "video_grid_thw": np.asarray(video["video_grid_thw"]),
        "second_per_grid_ts": np.array([1.0], dtype=np.float32),
    }
    out = []
    for i in range(n):
        with_video = i % 2 == 0
        content = ([{"type": "video"}] if with_video else []) + [{"type": "text", "text": "What is the action?"}]
        text = processor.apply_chat_template(
            [{"role": "user", "content": content}], tokenize=False, add_generation_prompt=True
        )
        prompt = processor.tokenizer(text, add_special_tokens=False)["input_ids"]
        length = int(rng.integers(16, max_response + 1))
        response = [int(t) for t in rng.integers(100, 150000, size=length)]
        mm = dict(video_mm) if with_video else {}
        out.append(Trajectory(f"c{i}", 0, prompt, response, [1] * length, [0.0] * length, mm_inputs=mm))
    return out


def plans(lengths: list[int], micro_batch_size: int, pack_tokens: int) -> dict[str, list[list[int]]]:
    """Each method's forwards, as lists of sequence indices."""
    from rl.batch import length_order, pack_plan

    def cut(order):
        return [order[i : i + micro_batch_size] for i in range(0, len(order), micro_batch_size)]

    return {
        "padded": cut(list(range(len(lengths)))),
        "grouped": cut(length_order(lengths)),
        "packed": pack_plan(lengths, pack_tokens),
    }


def positions(lengths: list[int], forwards: list[list[int]], packed: bool) -> int:
    """Sequence positions the forwards compute: a padded forward is as wide as its longest sequence.

    >>> positions([5, 90, 7], [[0, 1], [2]], packed=False), positions([5, 90, 7], [[1, 2], [0]], packed=True)
    (187, 102)
    """
    if packed:
        return sum(lengths[i] for f in forwards for i in f)
    return sum(max(lengths[i] for i in f) * len(f) for f in forwards)


def sft_pass(model, batch, forwards: list[list[int]], packed: bool) -> float:
    """Forward, token-mean cross-entropy and backward over the given forwards; returns the loss."""
    from rl.batch import token_logprobs

    total = float(batch.response_mask.sum())
    loss_sum = 0.0
    for f in forwards:
        part = batch.reorder(f)
        logp = token_logprobs(model, part, packed=packed)
        loss = -(logp * part.response_mask.to(logp.device)).sum() / total
        loss.backward()
        loss_sum += float(loss.detach())
    model.zero_grad(set_to_none=True)
    return loss_sum


def load_model(model_dir: str, device: str, dtype: str, size: tuple[int, int, int] | None, attn: str = "sdpa"):
    """The model at `model_dir`, or with `size` (hidden, layers, heads) a random one of that size built from the
    tiny model's config (the real vocabulary and vision tower layout)."""
    import torch
    from transformers import AutoModelForImageTextToText, Qwen2_5_VLForConditionalGeneration

    from common.tiny_model import tiny_config

    torch.manual_seed(0)
    if size is None:
        model = AutoModelForImageTextToText.from_pretrained(model_dir, dtype=getattr(torch, dtype))
    else:
        model = Qwen2_5_VLForConditionalGeneration(tiny_config(*size)).to(getattr(torch, dtype))
    model.set_attn_implementation(attn)
    return model.to(device)


def measure(
    model_dir: str,
    n: int,
    max_response: int,
    micro_batch_size: int,
    pack_tokens: int,
    repeats: int,
    device: str = "cpu",
    dtype: str = "float32",
    size: tuple[int, int, int] | None = None,
    attn: str = "sdpa",
):
    import torch

    from rl.batch import build_batch

    model = load_model(model_dir, device, dtype, size, attn)
    model.train()
    merge = int(model.config.vision_config.spatial_merge_size)
    batch = build_batch(conversations(model_dir, n, max_response), merge)
    lengths = [len(s.input_ids) for s in batch.samples]
    if pack_tokens <= 0:  # packs no longer than the longest sequence: no pack attends over more than one row would
        pack_tokens = max(lengths)
    results = {}
    for method, forwards in plans(lengths, micro_batch_size, pack_tokens).items():
        packed = method == "packed"
        cuda = device.startswith("cuda")
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        loss = sft_pass(model, batch, forwards, packed)  # warm-up, and the loss to compare
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            sft_pass(model, batch, forwards, packed)
            if cuda:
                torch.cuda.synchronize()
            times.append(time.perf_counter() - start)
        results[method] = {
            "forwards": len(forwards),
            "positions": positions(lengths, forwards, packed),
            "seconds": statistics.median(times),
            "loss": loss,
        }
        if cuda:
            results[method]["peak_gib"] = torch.cuda.max_memory_allocated() / 2**30
    return results, {"sequences": n, "tokens": sum(lengths), "pack_tokens": pack_tokens}


def report(results: dict, info: dict) -> str:
    base = results["padded"]
    head = ("layout", "forwards", "positions", "vs padded", "seconds", "vs padded", "loss")
    lines = ["".join(f"{h:<9}" if k == 0 else f"{h:>{(9, 11, 11, 10, 11, 10)[k - 1]}}" for k, h in enumerate(head))]
    for method in METHODS:
        r = results[method]
        lines.append(
            f"{method:<9}{r['forwards']:>9}{r['positions']:>11,}{r['positions'] / base['positions']:>10.2f}x"
            f"{r['seconds']:>10.3f}{r['seconds'] / base['seconds']:>10.2f}x{r['loss']:>10.4f}"
            + (f"  peak {r['peak_gib']:.2f} GiB" if "peak_gib" in r else "")
        )
    spread = max(r["loss"] for r in results.values()) - min(r["loss"] for r in results.values())
    lines.append(
        f"({info['sequences']} sequences, {info['tokens']:,} real tokens, packs of <= {info['pack_tokens']:,} "
        f"tokens; loss spread across layouts {spread:.1e})"
    )
    return "\n".join(lines)


def main(argv: list[str]) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="embedded", help="a Qwen2.5-VL directory (default: the tiny model)")
    parser.add_argument("--n", type=int, default=32)
    parser.add_argument("--max-response", type=int, default=512)
    parser.add_argument("--micro-batch-size", type=int, default=4)
    parser.add_argument("--pack-tokens", type=int, default=0, help="0: the longest sequence's length")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"))
    parser.add_argument("--size", default="", help="HIDDEN,LAYERS,HEADS: a random model of that size instead")
    parser.add_argument("--attn", default="sdpa", help="attention implementation: sdpa, eager, flex_attention, ...")
    args = parser.parse_args(argv)
    size = tuple(int(x) for x in args.size.split(",")) if args.size else None
    model_dir = args.model
    if model_dir == "embedded":
        from common.tiny_model import build_tiny_model, default_model_dir

        model_dir = str(build_tiny_model(default_model_dir()))
    results, info = measure(
        model_dir,
        args.n,
        args.max_response,
        args.micro_batch_size,
        args.pack_tokens,
        args.repeats,
        args.device,
        args.dtype,
        size,
        args.attn,
    )
    print(report(results, info))
    print(f"(model: {args.size or model_dir}; {args.device}, {args.dtype}, {args.attn} attention)")
    return results


if __name__ == "__main__":
    main(sys.argv[1:])
