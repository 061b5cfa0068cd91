"""Tools the policy can call during rollouts (pose, human detection, action explanation, video description),
video decoding, and the pooled tool actors.

Importing this package is light: numpy only. ultralytics, torch and ray load when a tool or a pool is used;
`config_problems` checks tool configs without loading them.
"""

from envs.base import (
    Tool,
    ToolArgumentError,
    ToolResult,
    Video,
    available_tools,
    config_problems,
    make,
    register_tool,
    run_tool,
    run_tool_batch,
    validate_args,
)
from envs.pool import ToolPool
from envs.video import VideoDecodeError, read_video

__all__ = [
    "Tool",
    "ToolArgumentError",
    "ToolPool",
    "ToolResult",
    "Video",
    "VideoDecodeError",
    "available_tools",
    "config_problems",
    "make",
    "read_video",
    "register_tool",
    "run_tool",
    "run_tool_batch",
    "validate_args",
]
