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


def make_video_groups(model_dir: str, seed: int = 0) -> list[Trajectory]:
    """Two GRPO groups of three trajectories, one over each of two different videos (8 frames of 112x112 px, grid
    (4, 8, 8); 4 frames of 56 px high and 112 px wide, grid (2, 4, 8)), then one text-only trajectory, in the order
    v0 v0 v1 v0 v1 v1 text, so that micro-batches of four mix the two videos. Within a group the trajectories share
    the video's arrays, as a rollout's group does, except the second of the first group, which holds a copy (equal
    content, other arrays). The last trajectory of the second group also carries a tool image (mask 0).
    """
    import numpy as np
    from transformers import AutoProcessor

    rng = np.random.default_rng(seed)
    processor = AutoProcessor.from_pretrained(model_dir)
    tok = processor.tokenizer

    def video_inputs(frames: int, height: int, width: int) -> dict:
        pixels = rng.integers(0, 256, size=(frames, height, width, 3), dtype=np.uint8)
        video = processor.video_processor(videos=[pixels], return_tensors="np")
        return {
            "pixel_values_videos": np.asarray(video["pixel_values_videos"], dtype=np.float32),
            "video_grid_thw": np.asarray(video["video_grid_thw"]),
            "second_per_grid_ts": np.array([1.0], dtype=np.float32),
        }

    videos = [video_inputs(8, 112, 112), video_inputs(4, 56, 112)]
    image = processor.image_processor(
        images=[rng.integers(0, 256, size=(112, 112, 3), dtype=np.uint8)], return_tensors="np"
    )
    image_mm = {"pixel_values": np.asarray(image["pixel_values"]), "image_grid_thw": image["image_grid_thw"]}
    tool = tok("<tool_response>\n", add_special_tokens=False)["input_ids"] + [VISION_START, IMAGE_PAD_ID, VISION_END]

    def prompt(video: bool) -> list[int]:
        content = ([{"type": "video"}] if video else []) + [{"type": "text", "text": "What is the person doing?"}]
        text = processor.apply_chat_template(
            [{"role": "user", "content": content}], tokenize=False, add_generation_prompt=True
        )
        return tok(text, add_special_tokens=False)["input_ids"]

    def traj(sample: int, g: int, mm: dict, with_tool: bool = False) -> Trajectory:
        ids = _random_ids(rng, int(rng.integers(3, 9)))
        mask = [1] * len(ids)
        if with_tool:
            tail = _random_ids(rng, 3)
            ids, mask = ids + tool + tail, mask + [0] * len(tool) + [1] * len(tail)
        logprobs = [float(-rng.uniform(0.1, 3.0)) if m else 0.0 for m in mask]
        return Trajectory(f"v{sample}", g, prompt(bool(mm)), ids, mask, logprobs, mm_inputs=mm)

    groups = [[traj(v, g, dict(videos[v])) for g in range(3)] for v in range(2)]
    groups[0][1].mm_inputs = {k: np.copy(a) for k, a in videos[0].items()}
    groups[1][2] = traj(1, 2, {**videos[1], **image_mm}, with_tool=True)
    (a0, a1, a2), (b0, b1, b2) = groups
    return [a0, a1, b0, a2, b1, b2, traj(2, 0, {})]
