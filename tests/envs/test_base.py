"""envs.base: tools built by `make` and run by `run_tool` / `run_tool_batch` on a video path as well as a Video."""

from __future__ import annotations

import doctest
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
