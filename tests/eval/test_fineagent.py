"""FineAgent's settings and its detector localizer on real frames: the bundled carphone_pristine.mp4 (one man in a
car), and that frame beside its mirror image (two men), where the localizer must pick the one the question names.
The expected boxes come from symmetry and from looking at the frame, not from the localizer's own output."""

from __future__ import annotations

import numpy as np
import pytest

from envs.base import Video
from eval.fineagent import (
    FineAgentError,
    check_fineagent,
    detect_box,
    fineagent_context,
    keyframe_index,
    parse_variant,
)


@pytest.fixture(scope="module")
def detector():
    import envs

    return envs.make("human_detection")


@pytest.fixture(scope="module")
def carphone() -> Video:
    from common.sample_data import build_sample_data, default_sample_dir
    from envs.video import read_video

    path = build_sample_data(default_sample_dir())["videos"] / "carphone_pristine.mp4"
    return read_video(path, num_frames=4, max_side=176)


def mirrored(video: Video) -> Video:
    """Each frame, a grey band half its width, and its mirror image: the man on the left, his mirror twin on the
    right (the band keeps their shoulders apart; without it the detector's boxes spill over the seam). The frame
    takes 2/5 of the width, the band 1/5."""

    def three(f):
        return np.concatenate([f, np.full((f.shape[0], f.shape[1] // 2, 3), 128, np.uint8), f[:, ::-1]], axis=1)

    frames = np.stack([three(f) for f in video.frames])
    return Video(frames=frames, timestamps=list(video.timestamps), path=video.path, key=video.key + "|mirrored")


def iou(a: list[float], b: list[float]) -> float:
    inter = max(0.0, min(a[2], b[2]) - max(a[0], b[0])) * max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    area = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / area


def test_the_only_person_on_a_real_frame(detector, carphone):
    box = detect_box({"prompt": "What social interaction is the only person engaged in?"}, carphone, detector)
    # by eye: head and shoulders from about a tenth of the width to the right edge, from near the top to the bottom
    assert box is not None and box[0] < 0.25 and box[2] > 0.9 and box[1] < 0.2 and box[3] > 0.9, box


def test_the_described_person_of_two(detector, carphone):
    two = mirrored(carphone)
    left = detect_box({"prompt": "What is the person on the left doing?"}, two, detector)
    right = detect_box({"prompt": "How is the person on the right interacting with other people?"}, two, detector)
    assert left is not None and right is not None
    assert left[2] < 0.42 and right[0] > 0.58  # each in its own part
    # the right man is the left one mirrored: his box is the left box mirrored about the frame's middle
    assert iou(right, [1 - left[2], left[1], 1 - left[0], left[3]]) > 0.9, (left, right)
    # and the left one is where he is in the frame alone, that frame now 2/5 of the width
    single = detect_box({"prompt": "the only person"}, carphone, detector)
    assert iou(left, [single[0] * 0.4, single[1], single[2] * 0.4, single[3]]) > 0.85, (left, single)


def test_nobody_found_adds_nothing(detector):
    dark = Video(frames=np.zeros((2, 96, 96, 3), dtype=np.uint8), timestamps=[0.0, 1.0])
    record = {"prompt": "What is the leftmost person doing?"}
    text, info = fineagent_context(record, dark, ["localizer:detector"], {"human_detection": detector})
    assert text == "" and info == {"localizer_box": None}


def test_keyframe_is_the_sampled_frame_nearest_the_annotated_time():
    video = Video(frames=np.zeros((4, 2, 2, 3), dtype=np.uint8), timestamps=[10.0, 10.8, 11.6, 12.4])
    assert keyframe_index({"meta": {"keyframe_s": 11.5}, "clip": [10.0, 12.4]}, video) == 2
    assert keyframe_index({"clip": [10.0, 12.4]}, video) == 1  # middle 11.2: 10.8 and 11.6 are 0.4 away: the first
    assert keyframe_index({}, video) == 1


@pytest.mark.parametrize(
    "value, message",
    [
        ("localizer", "say which localizer"),
        ("localizer:gt", "unknown module 'localizer:gt'"),
        ("localizer:oracle,localizer:detector", "one localizer at most"),
        ("descriptor,descriptor", "each module once"),
        (" , ", "no module given"),
    ],
)
def test_parse_variant_refuses(value, message):
    with pytest.raises(FineAgentError, match=message):
        parse_variant(value)


def test_check_fineagent():
    with_box = {"id": "a", "meta": {"boxes": [{"box": [0.1, 0.1, 0.5, 0.9]}]}}
    without = {"id": "b", "meta": {}}
    check_fineagent(["localizer:oracle"], [with_box])
    check_fineagent(["localizer:detector"], [without], {"human_detection": {"conf": 0.4}})
    with pytest.raises(FineAgentError, match=r"1 record\(s\) have none \(e.g. b\)"):
        check_fineagent(["localizer:oracle"], [with_box, without])
    with pytest.raises(FineAgentError, match="conff"):
        check_fineagent(["localizer:detector"], [without], {"human_detection": {"conff": 0.4}})
    with pytest.raises(FineAgentError, match="describer.kind"):
        check_fineagent(["descriptor"], [without], {"video_description": {"describer": {"kind": "endpont"}}})
    with pytest.raises(FineAgentError, match="no FineAgent tools"):
        check_fineagent(["descriptor"], [without], {"pose_estimation": {}})
