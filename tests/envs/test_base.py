"""envs.base: tools built by `make` and run by `run_tool` / `run_tool_batch` on a video path as well as a Video."""

from __future__ import annotations

import doctest
import os
import pickle
import re
from pathlib import Path

import pytest

import envs
import envs.base
from envs.base import ToolResult
from envs.video import DEFAULT_MAX_SIDE, DEFAULT_NUM_FRAMES, VideoDecodeError, read_video


class FrameShape:
    """A tool without a model: says how many frames of what size it got."""

    name = "frame_shape"
    schema = {
        "type": "function",
        "function": {"name": "frame_shape", "description": "", "parameters": {"type": "object", "properties": {}}},
    }

    def call(self, args, video):
        t, h, w = video.frames.shape[:3]
        return ToolResult(text=f"{t} frames of {w}x{h}")


@pytest.fixture
def frame_shape(monkeypatch):
    monkeypatch.setitem(envs.base._REGISTRY, "frame_shape", "tests.envs.test_base:FrameShape")
    return envs.make("frame_shape")


@pytest.fixture(scope="module")
def pose():
    return envs.make("pose_estimation", imgsz=320)


def test_doctests():
    assert doctest.testmod(envs.base).failed == 0


def test_defaults_are_the_rollout_config_defaults():
    assert (DEFAULT_NUM_FRAMES, DEFAULT_MAX_SIDE) == (8, 448)


def test_made_tool_decodes_a_path_with_the_defaults(frame_shape, bikes_path):
    # 640x272 shrunk so the longest side is 448: 272 * 448 / 640 = 190.4 -> 190
    assert frame_shape.call({}, str(bikes_path)).text == "8 frames of 448x190"
    assert frame_shape.call({}, bikes_path).text == "8 frames of 448x190"
    video = read_video(bikes_path, num_frames=4)
    assert frame_shape.call({}, video).text == "4 frames of 640x272"  # a Video is used as it is


def test_made_tool_is_the_registered_class_and_pickles(frame_shape, bikes_path):
    assert type(frame_shape) is FrameShape
    clone = pickle.loads(pickle.dumps(frame_shape))
    assert type(clone) is FrameShape and clone.call({}, bikes_path).text == "8 frames of 448x190"


@pytest.mark.parametrize("name, content", [("missing.mp4", None), ("empty.mp4", b""), ("notes.mp4", b"not a video")])
def test_bad_path_names_the_file(frame_shape, tmp_path, name, content):
    path = tmp_path / name
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(VideoDecodeError, match=re.escape(f"cannot decode video {path}")):
        frame_shape.call({}, path)
    reply = envs.run_tool(frame_shape, {}, path)  # run_tool never raises: the reply names the file
    assert not reply.ok and reply.error == "tool_failed"
    assert reply.text.startswith(f"error: frame_shape failed: VideoDecodeError: cannot decode video {path}: ")


def test_pose_tool_on_a_path_answers_like_on_the_decoded_video(pose, bikes_path):
    from envs.pose import PoseEstimationTool

    assert isinstance(pose, PoseEstimationTool)
    video = read_video(bikes_path, num_frames=8, max_side=448)
    expected = pose.call({"frames": [1, 3]}, video)
    on_path = pose.call({"frames": [1, 3]}, str(bikes_path))
    assert on_path.ok and on_path.text == expected.text
    assert on_path.text.startswith("frame 1 (t=1.44s)")  # frame 1 of 8 over 250 frames: index 36, 36 / 25 fps
    assert envs.run_tool(pose, {"frames": [1, 3]}, bikes_path).text == expected.text


def test_run_tool_batch_takes_paths(pose, bikes_path, tmp_path):
    video = read_video(bikes_path, num_frames=8, max_side=448)
    missing = tmp_path / "missing.mp4"
    calls = [({"frames": [2]}, bikes_path), ({"frames": [5]}, str(bikes_path)), ({"frames": [99]}, bikes_path)]
    results = envs.run_tool_batch(pose, calls + [({"frames": [2]}, missing)])
    assert [r.text for r in results[:2]] == [pose.call(a, video).text for a in ({"frames": [2]}, {"frames": [5]})]
    assert results[2].error == "bad_arguments" and "0..7" in results[2].text
    assert results[3].error == "tool_failed" and str(missing) in results[3].text


def test_plain_class_instance_takes_paths_through_run_tool(bikes_path):
    tool = FrameShape()  # not built by make: its own call wants a Video, run_tool decodes for it
    assert envs.run_tool(tool, {}, Path(bikes_path)).text == "8 frames of 448x190"
    assert [r.text for r in envs.run_tool_batch(tool, [({}, bikes_path)] * 2)] == ["8 frames of 448x190"] * 2


# ----- config_problems -----
TOOLS = "action_explanation, human_detection, pose_estimation, video_description"
POSE = "weights, device, imgsz, conf, max_frames, top_limbs"
DESCRIPTION = "describer, pose, key_frames, max_key_frames"
LOCAL = "kind, model, max_new_tokens, device"
ENDPOINT = "kind, base_url, model, api_key_env, max_new_tokens, timeout_s"
VLM = {"kind": "endpoint", "base_url": "http://vlm:8000/v1", "model": "Qwen2.5-VL-72B-Instruct", "api_key_env": "K"}


class AnyOptions:
    """A tool class that takes **kwargs: any key is accepted."""

    def __init__(self, weights: str = "", **options):
        self.options = options


@pytest.mark.parametrize(
    "name, config, where, expected",
    [
        ("pose_estimation", {"imgsz": 256, "device": "cpu"}, "rollout.tools", []),
        ("video_description", None, "", []),
        ("video_description", {"describer": VLM, "pose": {"imgsz": 256}, "key_frames": 3}, "rollout.tools", []),
        (
            "pose_estimaton",
            {},
            "rollout.tools",
            [f"rollout.tools.pose_estimaton: unknown tool; did you mean 'pose_estimation'? (available: {TOOLS})"],
        ),
        ("optical_flow", {"k": 1}, "", [f"optical_flow: unknown tool (available: {TOOLS})"]),
        (
            "pose_estimation",
            {"imgsize": 320, "conf": 0.5, "colour": "red"},
            "tools",
            [
                f"tools.pose_estimation.imgsize: unknown key; did you mean 'imgsz'? (valid: {POSE})",
                f"tools.pose_estimation.colour: unknown key (valid: {POSE})",
            ],
        ),
        ("human_detection", ["imgsz"], "tools", ["tools.human_detection: expected a mapping of options, got list"]),
        (
            "video_description",
            {"describer": {"kind": "local", "max_new_token": 8}},
            "rollout.tools",
            [
                "rollout.tools.video_description.describer.max_new_token: unknown key; did you mean 'max_new_tokens'? "
                f"(valid: {LOCAL})"
            ],
        ),
        (
            "video_description",
            {"describer": {"max_new_token": 8}},  # no kind: the local describer
            "",
            [
                "video_description.describer.max_new_token: unknown key; did you mean 'max_new_tokens'? "
                f"(valid: {LOCAL})"
            ],
        ),
        (
            "video_description",
            {"describer": {"kind": "endpoint", "model": "m", "api_key": "K"}},
            "",
            [
                f"video_description.describer.api_key: unknown key; did you mean 'api_key_env'? (valid: {ENDPOINT})",
                "video_description.describer.base_url: missing (required)",
            ],
        ),
        (
            "video_description",
            {"describer": {"kind": "remote", "url": "x"}},  # an unknown kind: its keys cannot be checked
            "",
            ["video_description.describer.kind: unknown kind 'remote' (valid: local, endpoint)"],
        ),
        (
            "video_description",
            {"describer": "endpoint"},
            "",
            ["video_description.describer: expected a mapping of options, got str"],
        ),
        (
            "video_description",
            {"pose": {"imgsize": 256}, "keyframes": 3},
            "",
            [
                f"video_description.keyframes: unknown key; did you mean 'key_frames'? (valid: {DESCRIPTION})",
                f"video_description.pose.imgsize: unknown key; did you mean 'imgsz'? (valid: {POSE})",
            ],
        ),
        ("any_options", {"weights": "a.pt", "whatever": 1}, "", []),
        ("frame_shape", {"size": 1}, "tools", ["tools.frame_shape.size: unknown key (valid: none)"]),
        (
            "broken",
            {},
            "",
            [
                "broken: cannot import 'tests.envs.no_such_module:Tool': ModuleNotFoundError: "
                "No module named 'tests.envs.no_such_module'"
            ],
        ),
    ],
)
def test_config_problems(monkeypatch, name, config, where, expected):
    if name in ("any_options", "frame_shape", "broken"):  # registered for this case only
        targets = {"any_options": "tests.envs.test_base:AnyOptions", "frame_shape": "tests.envs.test_base:FrameShape"}
        monkeypatch.setitem(envs.base._REGISTRY, name, targets.get(name, "tests.envs.no_such_module:Tool"))
    assert envs.config_problems(name, config, where=where) == expected


def test_config_problems_loads_no_model():
    import subprocess
    import sys

    code = (
        "import sys, envs\n"
        "for name in envs.available_tools(): assert envs.config_problems(name, {'x': 1}), name\n"
        "print(sorted(m for m in ('torch', 'ultralytics', 'transformers', 'ray') if m in sys.modules))\n"
    )
    root = str(Path(envs.__file__).parents[1])  # this checkout's envs, not an installed copy
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True, env=env
    )
    assert out.stdout.strip() == "[]"
