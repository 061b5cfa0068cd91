"""Hand-built trajectories for the rl tests: a real chat tokenised by the tiny model's processor, a video of
random frames and an image processed by its real vision processors, and random response tokens."""

from __future__ import annotations

from rollout.trajectory import IMAGE_PAD_ID, Trajectory

VISION_START, VISION_END = 151652, 151653


def _random_ids(rng, n: int) -> list[int]:
    # plain vocabulary ids: never the vision / special tokens (>= 151643)
    return [int(x) for x in rng.integers(100, 150000, size=n)]


def make_trajectories(model_dir: str, seed: int = 0) -> list[Trajectory]:
    """Four trajectories: text only, video, video + a tool response carrying an image (mask 0), text only."""
    import numpy as np
    from transformers import AutoProcessor

    rng = np.random.default_rng(seed)
    processor = AutoProcessor.from_pretrained(model_dir)
    tok = processor.tokenizer

    def prompt(question: str, video: bool) -> list[int]:
        content = ([{"type": "video"}] if video else []) + [{"type": "text", "text": question}]
        text = processor.apply_chat_template(
            [{"role": "user", "content": content}], tokenize=False, add_generation_prompt=True
        )
        return tok(text, add_special_tokens=False)["input_ids"]

    frames = rng.integers(0, 256, size=(8, 112, 112, 3), dtype=np.uint8)
    video = processor.video_processor(videos=[frames], return_tensors="np")
    video_mm = {
        "pixel_values_videos": np.asarray(video["pixel_values_videos"], dtype=np.float32),
        "video_grid_thw": np.asarray(video["video_grid_thw"]),
        "second_per_grid_ts": np.array([1.0], dtype=np.float32),
    }
    image = processor.image_processor(
        images=[rng.integers(0, 256, size=(112, 112, 3), dtype=np.uint8)], return_tensors="np"
    )
    image_mm = {
        "pixel_values": np.asarray(image["pixel_values"], dtype=np.float32),
        "image_grid_thw": np.asarray(image["image_grid_thw"]),
    }

    def traj(i: int, prompt_ids, segments, mm) -> Trajectory:
        ids, mask = [], []
        for seg_ids, m in segments:
            ids += seg_ids
            mask += [m] * len(seg_ids)
        logprobs = [float(-rng.uniform(0.1, 3.0)) if m else 0.0 for m in mask]
        return Trajectory(f"s{i // 2}", i % 2, prompt_ids, ids, mask, logprobs, mm_inputs=mm)

    tool = tok("<tool_response>\n", add_special_tokens=False)["input_ids"]
    tail = tok("pose\n</tool_response>", add_special_tokens=False)["input_ids"]
    tool += [VISION_START, IMAGE_PAD_ID, VISION_END] + tail
    return [
        traj(0, prompt("What is the person doing?", False), [(_random_ids(rng, 7), 1)], {}),
        traj(1, prompt("Describe the action.", True), [(_random_ids(rng, 5), 1)], dict(video_mm)),
        traj(
            2,
            prompt("Which sport?", True),
            [(_random_ids(rng, 4), 1), (tool, 0), (_random_ids(rng, 3), 1)],
            {**video_mm, **image_mm},
        ),
        traj(3, prompt("Count the jumps.", False), [(_random_ids(rng, 9), 1)], {}),
    ]
