"""FineBench: AVA v2.2 boxes and actions -> `mcq` records (multiple-choice, human-centric video QA).

Expected layout (the official AVA v2.2 annotations, `ava_v2.2.zip`, and the movies):

    ROOT/ava_train_v2.2.csv, ava_val_v2.2.csv   (or under ROOT/annotations/) no header, one line per
                                                 (keyframe, person, action): video_id,timestamp,x1,y1,x2,y2,
                                                 action_id,person_id; boxes normalised to [0, 1]
    ROOT/ava_action_list_v2.2.pbtxt              label { name: "..." label_id: N label_type: PERSON_MOVEMENT |
                                                 OBJECT_MANIPULATION | PERSON_INTERACTION }
    ROOT/videos/<video_id>.<mp4|mkv|webm>

One question per annotated (keyframe, person, action), as FineBench builds them: the action's category gives the
question template (seeded choice among a few per category); the person is named by a spatial descriptor from the
boxes of everyone annotated at that keyframe (`common.spatial.spatial_descriptors`, which FineAgent's detector
localizer reads back); three distractors come from actions similar to the answer in the same category (a similarity
map: the user's JSON, else by default the all-MiniLM-L6-v2 cosine similarity of the action names, or with
`--similarity words` shared content words ranked by rapidfuzz's token_set_ratio), then from the rest of the
category, then from any action (seeded), never one that the person is annotated doing at that keyframe (so "watch (a
person)" is no distractor for someone who listens and watches); the options A-D are shuffled with the correct letter
balanced over each output (every run of four questions uses each letter once, in a seeded order). When a person has
two or more actions of one category at the same keyframe, one more question asks for all of them at once (the
correct option names them all, e.g. "listen to (a person) and watch (a person)"; a distractor swaps one of them for
a similar action). The clip is [t - w/2, t + w/2] around the keyframe's time t (AVA keyframes are whole seconds of
the movie; `--time-offset -900` for movies cut to their 15 annotated minutes); `meta.boxes` holds the person's box
at t for FineAgent's oracle localizer.

Outputs: train.jsonl (ava_train_v2.2.csv), val.jsonl (ava_val_v2.2.csv).

    python -m data_builders.finebench --root /data/ava --out /data/records/finebench [--similarity words]
"""

from __future__ import annotations

import re
import sys
import zlib
from collections import defaultdict
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from common.spatial import spatial_descriptors
from data_builders.builder import BuildError, Collector, base_parser, cli_main, load_json, read_csv_rows, where

COLUMNS = ("video_id", "timestamp", "x1", "y1", "x2", "y2", "action_id", "person_id")
CSV_FILES = {"train": "ava_train_v2.2.csv", "val": "ava_val_v2.2.csv"}
ACTION_LIST = "ava_action_list_v2.2.pbtxt"
VIDEO_EXTS = (".mp4", ".mkv", ".webm")
LETTERS = "ABCD"
CATEGORIES = {
    "PERSON_MOVEMENT": "person movement",
    "OBJECT_MANIPULATION": "object manipulation",
    "PERSON_INTERACTION": "person interaction",
}
TEMPLATES = {
    "person movement": (
        "How would you describe the movement of {person}?",
        "What is {person} doing with their body?",
        "Which option best describes the posture or motion of {person}?",
        "What movement is {person} performing?",
    ),
    "object manipulation": (
        "How is {person} interacting with the object?",
        "What is {person} doing with an object?",
        "Which object-related action is {person} performing?",
        "What is {person} doing with the things around them?",
    ),
    "person interaction": (
        "What social interaction is {person} engaged in?",
        "How is {person} interacting with other people?",
        "What is {person} doing toward another person?",
        "Which option best describes how {person} engages with others?",
    ),
}
PROMPT = "{question}\n{options}\nAnswer with the letter of the correct option."
# words that say nothing about which action it is: they must not make two actions "similar"
STOP_WORDS = frozenset(
    "a an the to from with of on in into at by e g eg self person people object group another".split()
)
MAX_SIMILAR = 5  # distractors are drawn from this many most similar actions
# how the similar actions are found when no map is given (--similarity), as stats.json names them
SIMILARITIES = {"embedding": "all-MiniLM-L6-v2 cosine", "words": "shared content words"}


@dataclass(frozen=True)
class Action:
    id: int
    name: str
    category: str  # one of CATEGORIES' values


def read_action_list(path: Path) -> dict[int, Action]:
    """{label_id: Action} from the AVA pbtxt; BuildError naming file:line of a block missing a field or with an
    unknown label_type."""
    text = path.read_text(encoding="utf-8")
    actions: dict[int, Action] = {}
    for m in re.finditer(r"label\s*\{(.*?)\}", text, flags=re.DOTALL):
        at = where(path, text.count("\n", 0, m.start()) + 1)
        body = m.group(1)
        name = re.search(r'name\s*:\s*"([^"]*)"', body)
        lid = re.search(r"label_id\s*:\s*(\d+)", body)
        ltype = re.search(r"label_type\s*:\s*(\w+)", body)
        if not (name and lid and ltype):
            raise BuildError(f"{at}: a label needs name, label_id and label_type")
        if ltype.group(1) not in CATEGORIES:
            raise BuildError(f"{at}: unknown label_type {ltype.group(1)!r}; known: {sorted(CATEGORIES)}")
        actions[int(lid.group(1))] = Action(int(lid.group(1)), name.group(1), CATEGORIES[ltype.group(1)])
    if not actions:
        raise BuildError(f"{path}: no `label {{ ... }}` blocks")
    return actions


def content_words(name: str) -> set[str]:
    """The words of an action name that tell actions apart (parenthesised examples and filler words removed).

    >>> sorted(content_words("give/serve (an object) to (a person)"))
    ['give', 'serve']
    """
    bare = re.sub(r"\([^)]*\)", " ", name.lower())
    return {w for w in re.split(r"[^a-z]+", bare) if w and w not in STOP_WORDS}


def word_similarity(names: Sequence[str]) -> dict[str, list[str]]:
    """For each name, the other names sharing a content word, most similar first (rapidfuzz token_set_ratio of
    the content words, ties by name), at most MAX_SIMILAR.

    >>> word_similarity(["hand clap", "hand wave", "hand shake", "hug (a person)"])["hand wave"]
    ['hand shake', 'hand clap']
    """
    from rapidfuzz import fuzz

    words = {n: content_words(n) for n in names}
    out = {}
    for a in names:
        others = [b for b in names if b != a and words[a] & words[b]]
        score = {b: fuzz.token_set_ratio(" ".join(sorted(words[a])), " ".join(sorted(words[b]))) for b in others}
        out[a] = sorted(others, key=lambda b: (-score[b], b))[:MAX_SIMILAR]
    return out


def rank_by_cosine(names: Sequence[str], vectors: np.ndarray) -> dict[str, list[str]]:
    """For each name, the MAX_SIMILAR other names whose unit vectors have the largest dot product (the cosine
    similarity), most similar first; scores are rounded to 6 decimals so that ties, and near-ties that differ only
    by floating-point noise between machines, are broken by name.

    >>> v = np.array([[1.0, 0.0], [0.8, 0.6], [0.6, 0.8], [0.8, -0.6]])
    >>> rank_by_cosine(["a", "b", "c", "d"], v)["a"]
    ['b', 'd', 'c']
    """
    scores = np.round(vectors @ vectors.T, 6)
    out = {}
    for i, a in enumerate(names):
        others = [j for j in range(len(names)) if j != i]
        out[a] = [names[j] for j in sorted(others, key=lambda j: (-scores[i, j], names[j]))[:MAX_SIMILAR]]
    return out


def embedding_similarity(names: Sequence[str]) -> dict[str, list[str]]:
    """`rank_by_cosine` of the all-MiniLM-L6-v2 embeddings of the names as the pbtxt writes them (their
    parenthesised examples, e.g. "ride (e.g., a bike, a car, a horse)", say what the action is about)."""
    from common.embeddings import embed

    return rank_by_cosine(list(names), embed(list(names))) if names else {}


def similarity_map(actions: Mapping[int, Action], user_file: str | None, method: str = "embedding") -> dict:
    """{action name: similar action names of the same category}: the user's JSON map {name: [names]} when given
    (BuildError naming the file for an unknown name; names of another category are left out, since distractors
    stay in the answer's category), else `embedding_similarity` (method "embedding") or `word_similarity`
    (method "words") within each category. BuildError when the embedder is not installed, naming both ways out."""
    by_name = {a.name: a for a in actions.values()}
    if user_file:
        path = Path(user_file)
        raw = load_json(path)
        if not isinstance(raw, dict) or not all(isinstance(v, list) for v in raw.values()):
            raise BuildError(f"{path}: a similarity map is a JSON object {{action name: [similar names]}}")
        unknown = sorted({k for k in raw if k not in by_name} | {v for vs in raw.values() for v in vs} - set(by_name))
        if unknown:
            raise BuildError(f"{path}: unknown action name(s) {unknown[:10]}")
        return {k: [v for v in vs if by_name[v].category == by_name[k].category and v != k] for k, vs in raw.items()}
    if method not in SIMILARITIES:
        raise BuildError(f"unknown similarity {method!r}; known: {list(SIMILARITIES)}")
    rank = embedding_similarity if method == "embedding" else word_similarity
    out: dict[str, list[str]] = {}
    for cat in CATEGORIES.values():
        try:
            out |= rank(sorted(a.name for a in actions.values() if a.category == cat))
        except ImportError as e:
            raise BuildError(
                f"--similarity embedding: {e}; install it, or pass --similarity words (shared content words) "
                "or --similarity-map FILE"
            ) from e
    return out


def pick_distractors(
    answer: tuple[str, ...],
    similar: Mapping[str, Sequence[str]],
    category: Sequence[str],
    everything: Sequence[str],
    rng: np.random.Generator,
    true_actions: Collection[str] = (),
) -> list[tuple[tuple[str, ...], str]]:
    """Three distractors for `answer` (one action, or several of one category), each with the tier it came from.

    A distractor is the answer with one of its actions swapped for another; the swaps come first from the
    similar actions (seeded order), then from the rest of the category, then from any action, and no distractor
    equals the answer or another distractor as a set of actions. An action in `true_actions` (everything the
    person is annotated doing at that keyframe) is never swapped in: "watch (a person)" is no wrong option for a
    person who listens to and watches someone. Fewer than three when the vocabulary is too small.

    >>> rng = np.random.default_rng(0)
    >>> pick_distractors(("listen",), {"listen": ["watch", "talk"]}, ["listen", "watch", "talk", "hug"], [], rng,
    ...                  true_actions={"listen", "watch"})
    [(('talk',), 'similar'), (('hug',), 'category')]
    """
    chosen: list[tuple[tuple[str, ...], str]] = []
    seen = {frozenset(answer)}
    barred = set(true_actions) | set(answer)  # a swap must not bring in something the person really does
    tiers = (
        ("similar", lambda a: similar.get(a, ())),
        ("category", lambda a: category),
        ("any", lambda a: everything),
    )
    for tier, swaps in tiers:
        swapped = [(i, s) for i, a in enumerate(answer) for s in swaps(a) if s not in barred]
        cands = [answer[:i] + (s,) + answer[i + 1 :] for i, s in swapped]
        for j in rng.permutation(len(cands)) if cands else ():
            key = frozenset(cands[j])
            if key not in seen:
                seen.add(key)
                chosen.append((cands[j], tier))
                if len(chosen) == 3:
                    return chosen
    return chosen


def option_text(actions: Sequence[str]) -> str:
    """An option naming one or several actions.

    >>> option_text(["listen to (a person)"]), option_text(["sit", "talk to (a person)", "watch (a person)"])
    ('listen to (a person)', 'sit, talk to (a person) and watch (a person)')
    """
    return actions[0] if len(actions) == 1 else ", ".join(actions[:-1]) + " and " + actions[-1]


def correct_letter(n: int, seed: int, output: str) -> str:
    """The letter of the n-th question of an output: each block of four questions uses A-D once, in a seeded order,
    so the letters stay balanced (counts differ by at most one) and unpredictable."""
    perm = np.random.default_rng([seed, zlib.crc32(output.encode()), n // 4]).permutation(4)
    return LETTERS[perm[n % 4]]


@dataclass
class Person:
    box: list[float]
    at: str
    actions: dict[int, str] = field(default_factory=dict)  # action id -> file:line


def parse_row(row: dict, actions: Mapping[int, Action]) -> tuple[tuple, int, list[float], int] | str:
    """((video_id, timestamp), person_id, box, action_id) of a CSV row, or the reason it is unusable."""
    if None in row or any(c not in row for c in COLUMNS):
        return f"malformed row: expected {len(COLUMNS)} columns ({','.join(COLUMNS)})"
    try:
        ts = float(row["timestamp"])
        box = [float(row[k]) for k in ("x1", "y1", "x2", "y2")]
        aid, pid = int(row["action_id"]), int(row["person_id"])
    except ValueError as e:
        return f"malformed row: {e}"
    if not row["video_id"] or not all(0.0 <= v <= 1.0 for v in box) or box[0] >= box[2] or box[1] >= box[3]:
        return f"malformed row: needs a video_id and a box 0 <= x1 < x2 <= 1, 0 <= y1 < y2 <= 1, got {box}"
    if aid not in actions:
        return f"unknown action: action_id {aid} is not in {ACTION_LIST}"
    return (row["video_id"], ts), pid, box, aid


def read_keyframes(col: Collector, path: Path, actions: Mapping[int, Action], videos: Mapping[str, Path]) -> dict:
    """{(video_id, timestamp): {person_id: Person}} from one AVA CSV; unusable rows are dropped with file:line."""
    frames: dict[tuple, dict[int, Person]] = defaultdict(dict)
    for lineno, row in col.progress(read_csv_rows(path, COLUMNS, header=False), path.name):
        at = where(path, lineno)
        parsed = parse_row(row, actions)
        if isinstance(parsed, str):
            reason, _, detail = parsed.partition(": ")
            col.drop(reason, at, detail)
            continue
        key, pid, box, aid = parsed
        if key[0] not in videos:
            col.drop("video not found", at, f"no {key[0]}{{{','.join(VIDEO_EXTS)}}} in the videos folder")
            continue
        person = frames[key].setdefault(pid, Person(box, at))
        if aid in person.actions:
            col.drop("duplicate row", at, f"person {pid}, action {aid} already at {person.actions[aid]}")
            continue
        person.actions[aid] = at
    return frames


def index_videos(folder: Path) -> dict[str, Path]:
    """{stem: path} of the videos in `folder` (the first extension of VIDEO_EXTS wins for a stem found twice)."""
    if not folder.is_dir():
        raise BuildError(f"{folder}: missing videos folder (<video_id>.mp4|mkv|webm)")
    found: dict[str, Path] = {}
    for path in sorted(folder.iterdir(), key=lambda p: VIDEO_EXTS.index(p.suffix) if p.suffix in VIDEO_EXTS else 9):
        if path.suffix in VIDEO_EXTS and path.is_file():
            found.setdefault(path.stem, path.resolve())
    return found


@dataclass
class Vocabulary:
    """The actions and the distractor sources the questions draw on."""

    actions: dict[int, Action]
    similar: dict[str, list[str]]

    def __post_init__(self):
        self.by_category = {
            c: sorted(a.name for a in self.actions.values() if a.category == c) for c in CATEGORIES.values()
        }
        self.everything = sorted(a.name for a in self.actions.values())


def questions_of(person: Person, vocab: Vocabulary) -> list[tuple[list[Action], str]]:
    """(actions, file:line) of each question about one person at one keyframe: one per action, plus one per
    category in which the person has two or more actions (the combined question)."""
    acts = [(vocab.actions[a], at) for a, at in sorted(person.actions.items())]
    out = [([a], at) for a, at in acts]
    for cat in CATEGORIES.values():
        same = [(a, at) for a, at in acts if a.category == cat]
        if len(same) >= 2:
            out.append(([a for a, _ in same], same[0][1]))
    return out


def make_record(
    acts: list[Action], descriptor: str, letter: str, ctx: dict, vocab: Vocabulary, rng: np.random.Generator
) -> dict | str:
    """The `mcq` record of one question, or the reason it cannot be made."""
    category = acts[0].category
    answer = tuple(a.name for a in acts)
    ids = "+".join(str(a.id) for a in acts)
    distractors = pick_distractors(
        answer, vocab.similar, vocab.by_category[category], vocab.everything, rng, ctx["true_actions"]
    )
    if len(distractors) < 3:
        return f"only {len(distractors)} distinct distractors for {answer}"
    others = [d for d, _ in distractors]
    order = rng.permutation(3)
    options, k = {}, 0
    for letter_ in LETTERS:
        if letter_ == letter:
            options[letter_] = option_text(answer)
        else:
            options[letter_] = option_text(others[order[k]])
            k += 1
    template = TEMPLATES[category][int(rng.integers(len(TEMPLATES[category])))]
    question = template.format(person=descriptor)
    question = question[0].upper() + question[1:]
    t, half = ctx["t"], ctx["window"] / 2
    meta = {
        "dataset": "finebench",
        "split": ctx["split"],
        "class": option_text(answer),
        "video_id": ctx["video_id"],
        "timestamp": ctx["timestamp"],
        "keyframe_s": t,
        "person_id": ctx["person_id"],
        "boxes": [{"t": t, "box": ctx["box"]}],
        "num_people": ctx["num_people"],
        "descriptor": descriptor,
        "action_ids": [a.id for a in acts],
        "combined": len(acts) > 1,
        "distractor_sources": [s for _, s in distractors],
    }
    return {
        "id": f"finebench-{ctx['video_id']}-{ctx['timestamp']}-p{ctx['person_id']}-a{ids}",
        "task": "mcq",
        "video": str(ctx["video"]),
        "clip": [round(max(0.0, t - half), 3), round(t + half, 3)],
        "prompt": PROMPT.format(question=question, options="\n".join(f"{k}. {v}" for k, v in options.items())),
        "answer": letter,
        "options": options,
        "category": category,
        "meta": meta,
    }


def add_questions(col: Collector, output: str, frames: dict, vocab: Vocabulary, videos: dict, args) -> None:
    """The questions of one split, in a fixed order (video, time, person, action), into `output`."""
    n = 0
    for (video_id, ts), people in sorted(frames.items()):
        names = spatial_descriptors({pid: p.box for pid, p in people.items()})
        for pid in sorted(people):
            for acts, at in questions_of(people[pid], vocab):
                stamp = f"{int(ts):04d}" if ts == int(ts) else f"{ts:g}"
                ctx = {
                    "split": output,
                    "video_id": video_id,
                    "timestamp": stamp,
                    "t": round(ts + args.time_offset, 3),
                    "person_id": pid,
                    "box": people[pid].box,
                    "true_actions": {vocab.actions[a].name for a in people[pid].actions},
                    "num_people": len(people),
                    "video": videos[video_id],
                    "window": args.window,
                }
                ids = "+".join(str(a.id) for a in acts)
                rng = np.random.default_rng([args.seed, zlib.crc32(f"{video_id}/{stamp}/{pid}/{ids}".encode())])
                rec = make_record(acts, names[pid], correct_letter(n, args.seed, output), ctx, vocab, rng)
                if isinstance(rec, str):
                    col.drop("too few distractors", at, rec)
                elif col.add(output, rec, at):
                    n += 1


def find_annotation(root: Path, name: str) -> Path | None:
    for path in (root / name, root / "annotations" / name):
        if path.is_file():
            return path
    return None


def build(args, col: Collector) -> dict:
    root = Path(args.root).expanduser()
    pbtxt = find_annotation(root, ACTION_LIST)
    if pbtxt is None:
        raise BuildError(f"{root / ACTION_LIST}: missing action list (also looked in annotations/)")
    vocab_actions = read_action_list(pbtxt)
    videos = index_videos(Path(args.videos_dir) if args.videos_dir else root / "videos")
    found = {split: find_annotation(root, name) for split, name in CSV_FILES.items()}
    if not any(found.values()):
        raise BuildError(f"{root}: none of {sorted(CSV_FILES.values())} (also looked in annotations/)")
    # after the cheap checks: the embedder takes seconds to load
    vocab = Vocabulary(vocab_actions, similarity_map(vocab_actions, args.similarity_map, args.similarity))
    for split, path in found.items():
        if path is None:
            col.drop("missing file", str(root / CSV_FILES[split]))
            continue
        add_questions(col, split, read_keyframes(col, path, vocab.actions, videos), vocab, videos, args)
    return {
        "categories": vocab.by_category,
        "similarity": f"user file {args.similarity_map}" if args.similarity_map else SIMILARITIES[args.similarity],
        "window_s": args.window,
        "time_offset_s": args.time_offset,
    }


def parser():
    p = base_parser(__doc__)
    p.add_argument("--videos-dir", help="folder of <video_id>.mp4|mkv|webm (default ROOT/videos)")
    p.add_argument("--similarity-map", help="JSON {action name: [similar action names]} for the distractors")
    p.add_argument(
        "--similarity",
        choices=list(SIMILARITIES),
        default="embedding",
        help="without --similarity-map: all-MiniLM-L6-v2 cosine of the action names (default), or shared content "
        "words (needs no embedder)",
    )
    p.add_argument("--window", type=float, default=3.0, help="seconds of video around each keyframe (default 3)")
    p.add_argument(
        "--time-offset", type=float, default=0.0, help="add to AVA timestamps (-900 for 15-minute cut movies)"
    )
    return p


def main(argv: list[str] | None = None) -> int:
    return cli_main("finebench", parser(), build, argv)


if __name__ == "__main__":
    sys.exit(main())
