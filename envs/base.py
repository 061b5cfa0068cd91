"""The tool contract and the tool registry.

A tool has a `name`, a JSON `schema` of its arguments (shown to the model in the system prompt) and
`call(args, video) -> ToolResult`. `video` is a `Video`: decoded frames plus where they came from (a tool built by
`make`, `run_tool` and `run_tool_batch` also take a video path). A tool never raises to its caller for bad
arguments: `run_tool` validates them and turns every failure into an error reply the model can read.

The registry maps names to "module:Class" strings and imports on use, so ultralytics loads only when a recipe
uses the pose tool. `config_problems` checks a tool's config against its class before anything is built.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from common.hints import did_you_mean


@dataclass
class ToolResult:
    text: str
    images: list[np.ndarray] = field(default_factory=list)  # HxWx3 uint8 RGB
    ok: bool = True
    error: str | None = None  # short reason when ok is False: "bad_arguments", "tool_failed", "timeout", ...
    data: dict[str, Any] | None = None  # the numbers behind `text` (e.g. keypoints), for tests and rewards
    cached: bool = False  # True when a tool pool answered from its cache


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
    "human_detection": "envs.detection:HumanDetectionTool",
    "action_explanation": "envs.explanation:ActionExplanationTool",
    "video_description": "envs.description:VideoDescriptionTool",
}


class ToolArgumentError(ValueError):
    """Arguments that pass the schema but not the tool's own checks (e.g. a frame index past the video's end)."""


def validate_args(schema_parameters: dict[str, Any], args: Any) -> str | None:
    """Check `args` against a tool's JSON-schema `parameters`; return a short error text for the model, or None.

    >>> params = {"type": "object", "properties": {"k": {"type": "integer"}}, "additionalProperties": False}
    >>> validate_args(params, {"k": 1}) is None
    True
    >>> validate_args(params, {"k": "x"})
    "argument 'k': 'x' is not of type 'integer'"
    """
    import jsonschema

    if not isinstance(args, dict):
        return f"arguments must be a JSON object, got {type(args).__name__}"
    validator = jsonschema.Draft202012Validator(schema_parameters)
    error = jsonschema.exceptions.best_match(validator.iter_errors(args))
    if error is None:
        return None
    where = ".".join(str(p) for p in error.absolute_path)
    message = error.message if len(error.message) <= 200 else error.message[:200] + "..."
    return f"argument {where!r}: {message}" if where else message


def check_frame_indices(frames: list[int], num_frames: int) -> None:
    """Raise `ToolArgumentError` naming the valid range if an index is outside 0..num_frames-1."""
    bad = [i for i in frames if not 0 <= i < num_frames]
    if bad:
        raise ToolArgumentError(f"frame index {bad[0]} is out of range; valid frames are 0..{num_frames - 1}")


def run_tool(tool: Tool, args: Any, video: Video | str | os.PathLike) -> ToolResult:
    """Validate `args` against `tool.schema`, call the tool, and turn every failure into an error reply.

    `video` is a `Video`, or a path decoded first with `envs.video.as_video`. Never raises: bad arguments give
    `error="bad_arguments"`, any exception inside the tool (or a path that cannot be decoded, named in the reply)
    `error="tool_failed"`.
    """
    problem = validate_args(tool.schema["function"]["parameters"], args)
    if problem is not None:
        return ToolResult(text=f"error: {problem}", ok=False, error="bad_arguments")
    return _call_safely(tool, args, video)


def _call_safely(tool: Tool, args: dict[str, Any], video: Any, decoded: dict[str, Video] | None = None) -> ToolResult:
    try:
        return tool.call(args, _decode_path(video, decoded))
    except Exception as exc:  # a tool bug or a broken input must reach the model as text, not stop the rollout
        return failure_result(tool.name, exc)


def _decode_path(video: Any, decoded: dict[str, Video] | None = None) -> Any:
    """A path decoded by `envs.video.as_video` (once per path kept in `decoded`); a Video or object ref as it is."""
    if not isinstance(video, (str, os.PathLike)):
        return video
    from envs.video import as_video  # envs.video imports this module

    path = os.fspath(video)
    if decoded is None:
        return as_video(path)
    if path not in decoded:
        decoded[path] = as_video(path)
    return decoded[path]


def failure_result(name: str, exc: Exception) -> ToolResult:
    """The error reply for an exception raised inside tool `name` (its own argument checks, or a failure)."""
    if isinstance(exc, ToolArgumentError):
        return ToolResult(text=f"error: {exc}", ok=False, error="bad_arguments")
    detail = f"{type(exc).__name__}: {exc}"[:300]
    return ToolResult(text=f"error: {name} failed: {detail}", ok=False, error="tool_failed")


def run_tool_batch(tool: Tool, calls: list[tuple[Any, Video | str | os.PathLike]]) -> list[ToolResult]:
    """`run_tool` over many (args, video) calls, in order; a video path is decoded once for all its calls.

    A tool with `call_batch(calls)` gets all the valid calls at once (one model forward over all their frames); if
    that raises as a whole, each call runs alone, so one broken input cannot fail the others. Never raises."""
    out: list[ToolResult | None] = [None] * len(calls)
    todo: list[int] = []  # calls with valid arguments and a decoded video
    ready: list[tuple[dict[str, Any], Video]] = []
    decoded: dict[str, Video] = {}
    for i, (args, video) in enumerate(calls):
        problem = validate_args(tool.schema["function"]["parameters"], args)
        if problem is not None:
            out[i] = ToolResult(text=f"error: {problem}", ok=False, error="bad_arguments")
            continue
        try:
            ready.append((args, _decode_path(video, decoded)))
        except Exception as exc:  # a path that cannot be decoded: this call's reply names the file
            out[i] = failure_result(tool.name, exc)
            continue
        todo.append(i)
    batch_fn = getattr(tool, "call_batch", None)
    results: list[Any] = [None] * len(ready)
    if batch_fn is not None and len(ready) >= 2:
        try:
            results = batch_fn(ready)
        except Exception:
            pass  # run them one by one below
    for i, call, res in zip(todo, ready, results):
        if res is None:
            out[i] = _call_safely(tool, *call)
        elif isinstance(res, Exception):
            out[i] = failure_result(tool.name, res)
        else:
            out[i] = res
    return out  # type: ignore[return-value]


def register_tool(name: str, target: str) -> None:
    """Register a tool class by "module:Class" path. Refuses to overwrite a different target."""
    if name in _REGISTRY and _REGISTRY[name] != target:
        raise ValueError(f"tool {name!r} is already registered as {_REGISTRY[name]}")
    _REGISTRY[name] = target


def available_tools() -> list[str]:
    return sorted(_REGISTRY)


def tool_target(name: str) -> str:
    """The "module:Class" path registered for `name` (KeyError listing the tools if unknown)."""
    if name not in _REGISTRY:
        raise KeyError(f"unknown tool {name!r}; available: {', '.join(available_tools())}")
    return _REGISTRY[name]


def tool_class(name: str) -> type:
    if name not in _REGISTRY:
        raise KeyError(f"unknown tool {name!r}; available: {', '.join(available_tools())}")
    module, _, cls = _REGISTRY[name].partition(":")
    return getattr(importlib.import_module(module), cls)


def make(name: str, **config: Any) -> Tool:
    """Build the tool registered as `name` with its config (weights path, device, ...).

    The tool is an instance of the registered class whose `call` also takes a video path (str or os.PathLike),
    decoded with `envs.video.as_video`'s defaults, so a tool can be tried in two lines:

        pose = envs.make("pose_estimation")
        print(pose.call({"frames": [0, 4]}, "clip.mp4").text)
    """
    tool = tool_class(name)(**config)
    try:  # on the instance, so that the class, isinstance checks and pickling stay as they are
        tool.call = functools.partial(_call_on_path, tool)
    except AttributeError:  # a class with __slots__: paths then go through run_tool / run_tool_batch only
        pass
    return tool


def _call_on_path(tool: Tool, args: dict[str, Any], video: Video | str | os.PathLike) -> ToolResult:
    return type(tool).call(tool, args, _decode_path(video))


def config_problems(name: str, config: Mapping[str, Any] | None, where: str = "") -> list[str]:
    """What is wrong with the config of tool `name`, one line per problem naming its key path under `where`.

    Finds unknown tool names and unknown or missing keys: the keys are the keyword parameters of the registered
    class (imported through the registry, which loads no model), and of the option mappings the class lists in
    `nested_options` (e.g. video_description's `describer`). A class that takes **kwargs accepts any key.

    >>> config_problems("pose_estimation", {"imgsz": 320})
    []
    >>> print(*config_problems("pose_estimation", {"imgsize": 320}, where="tools"))  # doctest: +ELLIPSIS
    tools.pose_estimation.imgsize: unknown key; did you mean 'imgsz'? (valid: weights, device, imgsz, conf, ...)
    """
    path = _key_path(where, name)
    if name not in _REGISTRY:
        names = available_tools()
        return [f"{path}: unknown tool{did_you_mean(name, names)} (available: {', '.join(names)})"]
    try:
        cls = tool_class(name)
    except Exception as exc:  # a registered module that is missing or broken
        return [f"{path}: cannot import {_REGISTRY[name]!r}: {type(exc).__name__}: {exc}"]
    return option_problems(cls, config, path)


def option_problems(target: Callable, options: Any, where: str, extra: Sequence[str] = ()) -> list[str]:
    """Problems of `options` as the keyword arguments of `target` (a class or function), keys named `where`.key.

    `extra` are keys taken besides `target`'s parameters (e.g. a spec's `kind`). `target.nested_options`, if it
    has one, maps options that are option mappings themselves to a checker `(options, where) -> list[str]`.

    >>> def describe(model, max_new_tokens=16): ...
    >>> print(*option_problems(describe, {"kind": "local", "max_new_token": 8}, "describer", ["kind"]), sep="\\n")
    describer.max_new_token: unknown key; did you mean 'max_new_tokens'? (valid: kind, model, max_new_tokens)
    describer.model: missing (required)
    """
    if options is None:
        options = {}
    if not isinstance(options, Mapping):
        return [f"{where}: expected a mapping of options, got {type(options).__name__}"]
    try:
        params = inspect.signature(target).parameters.values()
    except (TypeError, ValueError):  # no signature to check against (a builtin): accept what is given
        return []
    params = [p for p in params if p.kind not in (p.POSITIONAL_ONLY, p.VAR_POSITIONAL)]  # not settable by key
    problems = []
    if not any(p.kind is p.VAR_KEYWORD for p in params):
        valid = [*extra, *(p.name for p in params)]
        for key in options:
            if key not in valid:
                hint = did_you_mean(str(key), valid)
                problems.append(f"{_key_path(where, key)}: unknown key{hint} (valid: {', '.join(valid) or 'none'})")
    required = [p.name for p in params if p.kind is not p.VAR_KEYWORD and p.default is p.empty]
    problems += [f"{_key_path(where, key)}: missing (required)" for key in required if key not in options]
    for key, check in getattr(target, "nested_options", {}).items():
        value = options.get(key)
        if value is None:
            continue
        if not isinstance(value, Mapping):
            problems.append(f"{_key_path(where, key)}: expected a mapping of options, got {type(value).__name__}")
        else:
            problems += check(value, _key_path(where, key))
    return problems


def _key_path(where: str, key: Any) -> str:
    return f"{where}.{key}" if where else str(key)
