"""The `video_description` tool: key frames chosen by body motion, described by a vision-language model.

Key frames are the sampled frames where people's joints moved most since the previous frame (YOLO11-pose, the
same model as `pose_estimation`; displacement per joint over the person's box height, people linked across frames
by box overlap). The describer is either

  - a local transformers vision-language model (`describer: {kind: local, model: <dir>}`; "embedded" is the tiny
    default model, whose random weights write noise: the plumbing is what the default exercises), or
  - an OpenAI-compatible endpoint (`describer: {kind: endpoint, base_url, model, api_key_env}`), e.g. a vLLM server.

The reply is the description text, with the key frames attached as images for the policy to look at.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from envs.base import ToolResult, Video, did_you_mean, option_problems, tool_class
from envs.geometry import link_identities

VISION_TOKEN_IDS = (151652, 151653, 151654, 151655, 151656)  # Qwen2-VL vision specials: never sampled as text
PROMPT = "Describe what the person does in these frames, in one or two sentences, focusing on body movement."


def motion_scores(frames_people: list[list[dict]], min_conf: float = 0.3) -> list[float]:
    """Per frame, the largest mean joint displacement (over box height) of any person since the previous frame;
    0 for the first frame and where nobody is seen in both.

    >>> kp = lambda dx: [[10.0 + dx, 10.0, 0.9]] * 17
    >>> box = [0, 0, 10, 20]
    >>> motion_scores([[{"box": box, "keypoints": kp(0)}], [{"box": box, "keypoints": kp(4)}], []])
    [0.0, 0.2, 0.0]
    """
    ids = link_identities([[p["box"] for p in people] for people in frames_people])
    scores = [0.0]
    for t in range(1, len(frames_people)):
        prev = {pid: p for pid, p in zip(ids[t - 1], frames_people[t - 1])}
        best = 0.0
        for pid, p in zip(ids[t], frames_people[t]):
            if pid not in prev:
                continue
            q = prev[pid]
            height = max(1e-6, (p["box"][3] - p["box"][1] + q["box"][3] - q["box"][1]) / 2)
            moves = [
                math.hypot(a[0] - b[0], a[1] - b[1])
                for a, b in zip(p["keypoints"], q["keypoints"])
                if a[2] >= min_conf and b[2] >= min_conf
            ]
            if moves:
                best = max(best, sum(moves) / len(moves) / height)
        scores.append(round(best, 4))
    return scores


def pick_key_frames(scores: list[float], k: int) -> list[int]:
    """The `k` frames with the largest scores (ties: the earlier), in time order; evenly spaced when all are 0.

    >>> pick_key_frames([0.0, 0.2, 0.05, 0.2, 0.1], 2), pick_key_frames([0.0, 0.0, 0.0, 0.0, 0.0], 2)
    ([1, 3], [0, 4])
    """
    k = min(k, len(scores))
    if not any(scores):
        return sorted({int(i) for i in np.rint(np.linspace(0, len(scores) - 1, k))})
    return sorted(sorted(range(len(scores)), key=lambda i: (-scores[i], i))[:k])


class LocalDescriber:
    """A transformers image-text-to-text model (Qwen2.5-VL class) describing a few images, greedy decoding."""

    def __init__(self, model: str = "embedded", max_new_tokens: int = 16, device: str = "cpu"):
        import torch
        from transformers import AutoModelForImageTextToText, AutoProcessor

        if model == "embedded":
            from common.tiny_model import build_tiny_model, default_model_dir

            model = str(build_tiny_model(default_model_dir()))
        self.name = model
        self.processor = AutoProcessor.from_pretrained(model)
        self.model = AutoModelForImageTextToText.from_pretrained(model, dtype=torch.float32).to(device).eval()
        self.max_new_tokens, self.device = max_new_tokens, device

    def describe(self, images: list[np.ndarray], prompt: str) -> str:
        import torch

        content = [{"type": "image"} for _ in images] + [{"type": "text", "text": prompt}]
        text = self.processor.apply_chat_template(
            [{"role": "user", "content": content}], add_generation_prompt=True, tokenize=False
        )
        inputs = self.processor(text=[text], images=list(images), return_tensors="pt").to(self.device)
        pad = self.processor.tokenizer.pad_token_id
        with torch.no_grad():
            out = self.model.generate(
                **inputs,
                max_new_tokens=self.max_new_tokens,
                do_sample=False,
                suppress_tokens=list(VISION_TOKEN_IDS),
                pad_token_id=pad,
            )
        new = out[0, inputs["input_ids"].shape[1] :]
        return self.processor.tokenizer.decode(new, skip_special_tokens=True).strip()


class EndpointDescriber:
    """A vision-language model behind an OpenAI-compatible chat-completions endpoint (images as data URLs)."""

    def __init__(
        self, base_url: str, model: str, api_key_env: str = "", max_new_tokens: int = 128, timeout_s: float = 60.0
    ):
        from common.openai_compat import ChatClient

        self.client = ChatClient(base_url, model, api_key_env=api_key_env, timeout_s=timeout_s)
        self.name, self.max_new_tokens = f"{model} at {base_url}", max_new_tokens

    def describe(self, images: list[np.ndarray], prompt: str) -> str:
        from common.openai_compat import image_part

        content = [image_part(im) for im in images] + [{"type": "text", "text": prompt}]
        return self.client.chat([{"role": "user", "content": content}], max_tokens=self.max_new_tokens).strip()


DESCRIBERS = {"local": LocalDescriber, "endpoint": EndpointDescriber}  # a describer spec's `kind` -> its class


def make_describer(config: dict[str, Any]) -> Any:
    config = dict(config)
    kind = config.pop("kind", "local")
    if kind not in DESCRIBERS:
        raise ValueError(f"video_description: describer kind must be 'local' or 'endpoint', got {kind!r}")
    return DESCRIBERS[kind](**config)


def describer_problems(spec: Mapping[str, Any], where: str) -> list[str]:
    """Problems of a describer spec (`envs.base.config_problems` format): its `kind`, then the keys of that kind.

    >>> describer_problems({"kind": "endpoint", "base_url": "http://vlm:8000/v1", "model": "m"}, "describer")
    []
    >>> print(*describer_problems({"kind": "endpont"}, "describer"))
    describer.kind: unknown kind 'endpont'; did you mean 'endpoint'? (valid: local, endpoint)
    """
    kind = spec.get("kind", "local")
    if not isinstance(kind, str) or kind not in DESCRIBERS:
        hint = did_you_mean(kind, DESCRIBERS) if isinstance(kind, str) else ""
        return [f"{where}.kind: unknown kind {kind!r}{hint} (valid: {', '.join(DESCRIBERS)})"]
    return option_problems(DESCRIBERS[kind], spec, where, extra=["kind"])


def pose_problems(config: Mapping[str, Any], where: str) -> list[str]:
    """Problems of the `pose` option: a `pose_estimation` config."""
    return option_problems(tool_class("pose_estimation"), config, where)


class VideoDescriptionTool:
    name = "video_description"
    # Options that are option mappings themselves, so that `envs.base.config_problems` checks their keys too.
    nested_options = {"describer": describer_problems, "pose": pose_problems}

    def __init__(
        self,
        describer: dict[str, Any] | None = None,
        pose: dict[str, Any] | None = None,
        key_frames: int = 2,
        max_key_frames: int = 4,
    ):
        from envs.pose import PoseEstimationTool

        self.pose = PoseEstimationTool(**(pose or {}))
        self.describer = make_describer(describer or {"kind": "local"})
        self.key_frames, self.max_key_frames = key_frames, max_key_frames
        self.schema = {
            "type": "function",
            "function": {
                "name": self.name,
                "description": (
                    "A short description of the key frames (where people move most), with the frames as images."
                ),
                "parameters": {
                    "type": "object",
                    "properties": {
                        "num_key_frames": {
                            "type": "integer",
                            "description": f"key frames (default {key_frames})",
                            "minimum": 1,
                            "maximum": max_key_frames,
                        },
                        "focus": {
                            "type": "string",
                            "description": "what the description should pay attention to",
                            "minLength": 1,
                            "maxLength": 200,
                        },
                    },
                    "additionalProperties": False,
                },
            },
        }

    def call(self, args: dict[str, Any], video: Video) -> ToolResult:
        people = self.pose.detect(list(video.frames))
        scores = motion_scores(people)
        keys = pick_key_frames(scores, int(args.get("num_key_frames", self.key_frames)))
        prompt = PROMPT + (f" Focus on: {args['focus']}" if args.get("focus") else "")
        images = [np.ascontiguousarray(video.frames[i]) for i in keys]
        text = self.describer.describe(images, prompt) or "(the describer wrote no text)"
        why = "largest joint displacement" if any(scores) else "evenly spaced: no body motion measured"
        frames = ", ".join(f"{i} (t={video.timestamps[i]:.2f}s)" for i in keys)
        data = {"key_frames": keys, "motion_scores": scores, "describer": self.describer.name, "description": text}
        return ToolResult(text=f"key frames {frames} ({why}):\n{text}", images=images, data=data)
