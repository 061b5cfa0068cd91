"""The tool contract and the tool registry.

A tool has a `name`, a JSON `schema` of its arguments (shown to the model in the system prompt) and
`call(args, video) -> ToolResult`. `video` is a `Video`: decoded frames plus where they came from. A tool never
raises to its caller for bad arguments: `run_tool` validates them and turns every failure into an error reply the
model can read.

The registry maps names to "module:Class" strings and imports on use, so ultralytics loads only when a recipe
uses the pose tool.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np


@dataclass
class ToolResult:
    text: str
    images: list[np.ndarray] = field(default_factory=list)  # HxWx3 uint8 RGB
    ok: bool = True
    error: str | None = None  # short reason when ok is False


@dataclass
class Video:
    """Decoded frames of one sample, as the tools see them."""

    frames: np.ndarray  # T x H x W x 3 uint8 RGB
    timestamps: list[float]  # seconds, one per frame
    path: str = ""
    key: str = ""  # identity for caching: path + clip + sampling


class Tool(Protocol):
    name: str
    schema: dict[str, Any]  # {"type": "function", "function": {"name", "description", "parameters"}}

    def call(self, args: dict[str, Any], video: Video) -> ToolResult: ...


_REGISTRY: dict[str, str] = {
    "pose_estimation": "envs.pose:PoseEstimationTool",
}


def register_tool(name: str, target: str) -> None:
    """Register a tool class by "module:Class" path. Refuses to overwrite a different target."""
    if name in _REGISTRY and _REGISTRY[name] != target:
        raise ValueError(f"tool {name!r} is already registered as {_REGISTRY[name]}")
    _REGISTRY[name] = target


def available_tools() -> list[str]:
    return sorted(_REGISTRY)


def tool_class(name: str) -> type:
    if name not in _REGISTRY:
        raise KeyError(f"unknown tool {name!r}; available: {', '.join(available_tools())}")
    module, _, cls = _REGISTRY[name].partition(":")
    return getattr(importlib.import_module(module), cls)


def make(name: str, **config: Any) -> Tool:
    """Build the tool registered as `name` with its config (weights path, device, ...)."""
    return tool_class(name)(**config)
