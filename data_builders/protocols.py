"""The open-vocabulary protocols of Video-STAR, shared by the action-recognition builders.

Base-to-novel (Video-STAR follows ViFi-CLIP, Rasheed et al. 2023, whose split files it cites as "prior work"):
each dataset's classes are ranked by how many training videos they have (HMDB-51 and UCF-101: split 1's
training list; Kinetics-400 and SSv2: the training set); the most frequent half, ceil(n/2), is `base`, the rest
`novel` (HMDB-51 26/25, UCF-101 51/50, K-400 200/200, SSv2 87/87). Ties keep the class-list order and the later
classes go to base: ViFi-CLIP's released HMDB-51 split, where every class has 70 training videos, has the last
26 classes alphabetically (pour ... wave) as base, which this rule reproduces. Models train on base classes
(split 1 train) and are evaluated on the test videos of split 1 (HMDB-51, UCF-101) or on the validation set
(K-400, SSv2): one benchmark file, `b2n_eval`, holds both halves, each record tagged `meta.base_or_novel` and
offered its own half's names, so one evaluation reports base, novel and their harmonic mean. `--class-split FILE`
replaces the rule with the user's split (`data_builders.label_files.read_class_split`: ViFi-CLIP's base-label CSV
or a JSON object {"base": [...], "novel": [...]}).

Cross-dataset: train on all of HMDB-51 (one of its three splits), evaluate on UCF-101 (each of its three test
lists) and on Kinetics-600's 220 classes that are not in Kinetics-400, in three splits of 160 classes each (as in
ER-ZSAR / X-CLIP / ViFi-CLIP: ViFi-CLIP's released split files, or a seeded sample of 160 of the 220 per split
when they are not given); the papers report the mean and std of top-1 over the three splits. Besides one file per
split, `xd_eval` holds the three splits together, each record tagged `meta.fold` (1, 2, 3), so one evaluation
reports the mean and std over the folds.

    >>> frequency_base_novel({"a": 5, "b": 9, "c": 5, "d": 1}, ["a", "b", "c", "d"])
    (['b', 'c'], ['a', 'd'])
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace

import numpy as np

from common.class_lists import class_list, readable
from data_builders.builder import BuildError, Collector
from data_builders.label_files import read_class_split
from data_builders.sub_motions import SOURCES_HELP, SubMotionSource, sub_motion_source

OVAR_PROMPT = "What action is the person performing? Choose one of: {candidates}."
K600_NOVEL_COUNT = 220
K600_SPLIT_SIZE = 160
K600_NUM_SPLITS = 3
# meta.base_or_novel of the full-split files: their train part is what a model sees (base); their test part is what
# the cross-dataset protocol evaluates a model trained on another dataset on (novel to it)
FULL_ROLE = {"train": "base", "test": "novel"}


def frequency_base_novel(train_counts: Mapping[str, int], classes: Sequence[str]) -> tuple[list[str], list[str]]:
    """(base, novel), each in class-list order: base is the ceil(n/2) classes with the most training videos.

    Classes are sorted by (count, position in `classes`) ascending; the first floor(n/2) are novel. With equal
    counts the later classes are base (this reproduces ViFi-CLIP's released HMDB-51 split).
    """
    order = sorted(range(len(classes)), key=lambda i: (train_counts.get(classes[i], 0), i))
    novel_idx = set(order[: len(classes) // 2])
    base = [c for i, c in enumerate(classes) if i not in novel_idx]
    novel = [c for i, c in enumerate(classes) if i in novel_idx]
    return base, novel


def base_novel(args, train_counts: Mapping[str, int], classes: Sequence[str]) -> tuple[list[str], list[str], str]:
    """The split the CLI asked for: the user's file (`--class-split`) or the frequency rule; plus its source."""
    if getattr(args, "class_split", None):
        return (*read_class_split(args.class_split, classes), f"user file {args.class_split}")
    return (*frequency_base_novel(train_counts, classes), "frequency rule (ViFi-CLIP)")


def k600_novel_classes(k600: Sequence[str], k400: Iterable[str]) -> list[str]:
    """Kinetics-600 classes whose name is not a Kinetics-400 class (names compared as lower-case words).

    >>> k600_novel_classes(["abseiling", "acting in play", "Air drumming"], ["abseiling", "air_drumming"])
    ['acting in play']
    """
    seen = {readable(c) for c in k400}
    return [c for c in k600 if readable(c) not in seen]


def k600_zero_shot_splits(novel: Sequence[str], seed: int, size: int = K600_SPLIT_SIZE) -> list[list[str]]:
    """Three seeded samples of `size` classes from `novel` (in `novel`'s order); split k uses the seed [seed, k]."""
    if len(novel) < size:
        raise BuildError(f"only {len(novel)} Kinetics-600 classes are absent from Kinetics-400; need {size}")
    splits = []
    for k in range(1, K600_NUM_SPLITS + 1):
        pick = set(np.random.default_rng([seed, k]).choice(len(novel), size=size, replace=False).tolist())
        splits.append([c for i, c in enumerate(novel) if i in pick])
    return splits


def cross_check_vocabulary(col: Collector, classes: Iterable[str], gluoncv_name: str, source: str) -> list[str]:
    """Names of `classes` that gluoncv's list for the dataset does not have (compared as lower-case words); each
    is kept and reported as a warning (a likely renamed class or a wrong file), never counted as dropped."""
    known = {readable(c) for c in class_list(gluoncv_name)}
    odd = [c for c in classes if readable(c) not in known]
    for c in odd:
        col.warn("class not in the gluoncv list", source, repr(c))
    return odd


@dataclass
class Clip:
    """One video of an action-recognition dataset, before it becomes a record."""

    id: str
    video: str  # absolute path
    cls: str  # the class as the dataset spells it
    at: str  # file:line it came from
    clip: list[float] | None = None
    meta: dict = field(default_factory=dict)


def subsample_shots(clips: list[Clip], shots: int | None, seed: int) -> list[Clip]:
    """At most `shots` clips per class, a seeded choice (ViFi-CLIP's K-shot base training); all when None."""
    if not shots:
        return clips
    by_class: dict[str, list[int]] = {}
    for i, c in enumerate(clips):
        by_class.setdefault(c.cls, []).append(i)
    keep = set()
    rng = np.random.default_rng([seed, shots])
    for cls in sorted(by_class):
        idx = by_class[cls]
        keep.update(idx if len(idx) <= shots else rng.choice(idx, size=shots, replace=False).tolist())
    return [c for i, c in enumerate(clips) if i in keep]


def pick_candidates(label: str, pool: Sequence[str], k: int | None, rng: np.random.Generator) -> list[str]:
    """The names the prompt offers: the whole `pool` in its order (k None or >= its size), or `label` plus k-1
    others drawn from it, shuffled."""
    if not k or k >= len(pool):
        return list(pool)
    others = [c for c in pool if c != label]
    chosen = [others[i] for i in rng.choice(len(others), size=k - 1, replace=False)]
    cands = [label, *chosen]
    rng.shuffle(cands)
    return cands


def default_names(clip: Clip, classes: Sequence[str]) -> tuple[str, list[str]]:
    """Class names as words for the prompt: (the clip's label, the label set)."""
    return readable(clip.cls), [readable(c) for c in classes]


def add_ovar(
    col: Collector,
    output: str,
    clips: Iterable[Clip],
    label_set: Sequence[str],
    *,
    dataset: str,
    split: str,
    base_or_novel: str,
    seed: int,
    num_candidates: int | None = None,
    names: Callable[[Clip, Sequence[str]], tuple[str, list[str]]] = default_names,
    sub_motions: SubMotionSource | None = None,
    stream: str | None = None,
) -> None:
    """Add an `ovar` record per clip whose class is in `label_set` to `output`; the candidates come from the label
    set (all of it, or `num_candidates` of it with the label), so base and novel names never mix. With a
    `sub_motions` source, a record whose class (or label) has an entry gets its ranked `sub_motions`. The i-th
    clip's candidates are drawn with the seed [seed, crc32(stream or output), i]."""
    allowed = set(label_set)
    for i, c in enumerate(clips):
        if c.cls not in allowed:
            continue
        label, pool = names(c, label_set)
        rng = np.random.default_rng([seed, zlib.crc32((stream or output).encode()), i])
        cands = pick_candidates(label, pool, num_candidates, rng)
        meta = {"dataset": dataset, "split": split, "base_or_novel": base_or_novel, "class": c.cls} | c.meta
        rec = {
            "id": c.id,
            "task": "ovar",
            "video": c.video,
            "prompt": OVAR_PROMPT.format(candidates=", ".join(cands)),
            "answer": label,
            "label": label,
            "candidates": cands,
            "meta": meta,
        }
        if c.clip:
            rec["clip"] = c.clip
        motions = sub_motions(c.cls, label) if sub_motions is not None else None
        if motions:
            rec["sub_motions"] = motions
        col.add(output, rec, c.at)


def add_base_to_novel(
    col: Collector,
    train: list[Clip],
    evals: list[Clip],
    base: Sequence[str],
    novel: Sequence[str],
    args,
    dataset: str,
    names: Callable = default_names,
) -> None:
    """The base-to-novel outputs: b2n_train_base (base classes' training clips) and b2n_eval (the evaluation clips of
    both halves, base first, each among its own half's names, tagged by `meta.base_or_novel`)."""
    common = {"dataset": dataset, "seed": args.seed, "num_candidates": args.num_candidates, "names": names}
    common["sub_motions"] = getattr(args, "sub_motions", None)
    shots = subsample_shots([c for c in train if c.cls in set(base)], args.shots, args.seed)
    add_ovar(col, "b2n_train_base", shots, base, split="train", base_or_novel="base", **common)
    add_ovar(col, "b2n_eval", evals, base, split="eval", base_or_novel="base", **common)
    add_ovar(col, "b2n_eval", evals, novel, split="eval", base_or_novel="novel", **common)


def fold_clips(clips: Iterable[Clip], k: int) -> list[Clip]:
    """The clips of split k as records of a file that holds every split: `meta.fold` k, and `-fold<k>` after the
    id (a video is in the test lists of several splits, and ids are unique per file).

    >>> [(c.id, c.meta) for c in fold_clips([Clip("v1", "/v1.avi", "run", "list:1")], 2)]
    [('v1-fold2', {'fold': 2})]
    """
    return [replace(c, id=f"{c.id}-fold{k}", meta=c.meta | {"fold": k}) for c in clips]


def add_folds(col: Collector, output: str, folds: Mapping[int, tuple[list[Clip], Sequence[str]]], **kwargs) -> None:
    """One benchmark file of a protocol with several splits: `folds` is {k: (split k's clips, its label set)};
    each split's clips become records with `meta.fold` k (`fold_clips`), their candidates drawn from a stream of
    their own. `kwargs` go to `add_ovar`."""
    for k in sorted(folds):
        clips, label_set = folds[k]
        add_ovar(col, output, fold_clips(clips, k), label_set, stream=f"{output}/fold{k}", **kwargs)


def add_official_splits(
    col: Collector, splits: dict, train_counts: Mapping[str, int], names: Sequence[str], args, dataset: str
) -> dict:
    """The outputs of a dataset with three official train/test splits (HMDB-51, UCF-101): base-to-novel on split
    1 (the frequency rule over `train_counts`, or --class-split), every split's full train and test files, and
    xd_eval, the three test lists in one file with `meta.fold` (the cross-dataset target, reported as mean and std
    over the splits). `splits` is {k: {"train": clips, "test": clips}}. Returns the summary entry for stats.json."""
    base, novel, source = base_novel(args, train_counts, names)
    add_base_to_novel(col, splits[1]["train"], splits[1]["test"], base, novel, args, dataset)
    common = {"dataset": dataset, "seed": args.seed, "num_candidates": args.num_candidates}
    common["sub_motions"] = getattr(args, "sub_motions", None)
    for k, parts in splits.items():
        for part, clips in parts.items():
            add_ovar(col, f"split{k}_{part}", clips, names, split=part, base_or_novel=FULL_ROLE[part], **common)
    folds = {k: (parts["test"], names) for k, parts in splits.items()}
    add_folds(col, "xd_eval", folds, split="test", base_or_novel=FULL_ROLE["test"], **common)
    return {"base_to_novel": {"split": 1, "base": base, "novel": novel, "source": source}, "classes": names}


def add_ovar_arguments(parser, class_split: bool = True) -> None:
    """CLI options shared by the action-recognition builders."""
    if class_split:
        parser.add_argument(
            "--class-split",
            help="the base/novel split replacing the frequency rule: ViFi-CLIP's base-label CSV (labels/"
            '<dataset>_base_labels.csv; novel are the other classes) or JSON {"base": [...], "novel": [...]}',
        )
    parser.add_argument("--shots", type=int, default=None, help="at most K training videos per base class (seeded)")
    parser.add_argument(
        "--num-candidates", type=int, default=None, help="offer K names in the prompt (default: the whole label set)"
    )
    parser.add_argument("--sub-motions", type=sub_motion_source, default="kb", metavar="SOURCE", help=SOURCES_HELP)
