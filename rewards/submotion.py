"""Video-STAR's sub-motion reward: ranked sub-motions in the reasoning, weighted by rank, credited when they match
the sub-motions of the (correctly) predicted action.

The format follows the paper's first reasoning stage, sub-motion decomposition ("shoot ball" is "body bending ->
leg extending -> feet-ball interaction"). Its one written form is defined in common/submotions.py, which the
system prompt asks for and the teachers write: inside `<think>`, a line of its own

    <think>Pose: frame 2: 1 person.
    Sub-motions: leg bending → torso jumping → arm extending
    Candidates: ... </think>
    <answer>shoot ball</answer>

The reader is lenient beyond that form: the marker in any case (`Submotions:`, `Sub motions:`), the items on the
marker's line separated by arrows (`→` or `->`; when the line has an arrow, arrows are the only separator, so an
item may hold a comma) or else by semicolons or commas, or as a numbered (`1.` / `1)`) or bulleted (`-`, `*`)
list on the following lines. A trailing period ends the one-line form's last item, and so does a tag. The ground
truth is the record's `sub_motions` (a ranked list of strings, the sub-motions of its action; see common/schema.py
and, for real data, the builders' `--sub-motions`, docs/datasets.md).
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from common.embeddings import sentence_embedder
from common.submotions import label_key, load_definitions
from rewards.helpers import submotion_weights
from rewards.registry import register
from rewards.videostar import THINK_CLOSE, THINK_OPEN, accuracy, normalize_label

if TYPE_CHECKING:
    from rollout.trajectory import Trajectory

_MARKER = re.compile(r"sub[- ]?motions\s*:", re.IGNORECASE)
MAX_ITEMS = 32  # a longer list is not a ranking; only the first MAX_ITEMS count (and share the weight)
MAX_ITEM_CHARS = 200
_ARROWS = re.compile(r"→|->")
_SPLIT = re.compile(r";|,")
_LIST_ITEM = re.compile(r"\s*(?:\d{1,3}\s*[.)]|[-*•])\s*(.*)")
MATCH_MODES = ("text", "embedding")


def _region(text: str) -> str:
    """The content of the last closed `<think>` block, or the whole text when there is none."""
    start = text.rfind(THINK_OPEN)
    end = text.find(THINK_CLOSE, start + len(THINK_OPEN)) if start >= 0 else -1
    return text[start + len(THINK_OPEN) : end] if end >= 0 else text


def parse_submotions(text: Any) -> list[str]:
    """The ranked sub-motions listed after the last `Sub-motions:` marker (case-insensitive; `Submotions:` and
    `Sub motions:` too) inside the last `<think>` block (or anywhere when there is none), in order, empty
    items dropped, at most `MAX_ITEMS`. Empty when there is no marker. Never raises.

    >>> parse_submotions("<think>Sub-motions: leg bending → arm extending.</think><answer>shoot</answer>")
    ['leg bending', 'arm extending']
    >>> parse_submotions("<think>Sub-motions: grip it → pull, twist or lift it open\\nCandidates: open</think>")
    ['grip it', 'pull, twist or lift it open']
    >>> parse_submotions("<think>sub-motions:\\n1. leg bending\\n2) arm extending\\nSo it is a shot.</think>")
    ['leg bending', 'arm extending']
    """
    if not isinstance(text, str):
        return []
    region = _region(text)
    last = None
    for last in _MARKER.finditer(region):  # noqa: B007  (we want the last match)
        pass
    if last is None:
        return []
    rest = region[last.end() :]
    first, _, following = rest.partition("\n")
    first = first.split("<", 1)[0]  # a tag ends the one-line form
    if first.strip():
        line = first.strip().rstrip(".")
        items = (_ARROWS if _ARROWS.search(line) else _SPLIT).split(line, maxsplit=MAX_ITEMS)
    else:
        items = []
        for line in following.split("\n", MAX_ITEMS + 1)[: MAX_ITEMS + 1]:
            m = _LIST_ITEM.match(line)
            if m is None:
                if not items and not line.strip():
                    continue  # blank lines between the marker and the list
                break
            items.append(m[1])
    return [item.strip()[:MAX_ITEM_CHARS] for item in items if item.strip()][:MAX_ITEMS]


def embedder() -> Any:
    """all-MiniLM-L6-v2 (sentence-transformers), loaded on CPU once per process (so once per reward worker)."""
    return sentence_embedder()


def similarity_matrix(listed: list[str], truth: list[str], match: str) -> list[list[float]]:
    """similarity[i][j] of listed sub-motion i and true sub-motion j: 1/0 for normalised text equality
    ("text"), cosine similarity of MiniLM embeddings ("embedding")."""
    if match == "text":
        keys = [normalize_label(t).replace(" ", "") for t in truth]
        return [[1.0 if normalize_label(s).replace(" ", "") == k else 0.0 for k in keys] for s in listed]
    vectors = embedder().encode(listed + truth, normalize_embeddings=True, convert_to_numpy=True)
    return (vectors[: len(listed)] @ vectors[len(listed) :].T).tolist()


def _truth(record: Any, definitions: str | None) -> list[str] | None:
    """The record's `sub_motions`, else its answer's entry in the definitions file, else None."""
    if not isinstance(record, dict):
        return None
    truth = record.get("sub_motions")
    if truth is None and definitions and isinstance(record.get("answer"), str):
        truth = load_definitions(str(definitions)).get(label_key(record["answer"]))
    if not isinstance(truth, list) or not truth or not all(isinstance(t, str) for t in truth):
        return None
    return truth


@register("submotion")
def submotion(
    traj: Trajectory,
    record: dict,
    scheme: str = "linear",
    match: str = "text",
    threshold: float = 0.7,
    definitions: str | None = None,
) -> float | None:
    """Video-STAR's sub-motion reward: the sum of the rank weights of the listed sub-motions that match a true
    sub-motion, when the answer is right; 0.0 when it is wrong. In [0, 1].

    The k-th of the n listed sub-motions (see `parse_submotions`) weighs `submotion_weights(n, scheme)[k]`:
    `linear` (n-k+1)/(1+...+n), the authors' released code and the default, or `exponential` 2^-(k-1)
    normalised, the paper's prose. Matching (`match`) is one-to-one, in rank order: each listed sub-motion takes
    the most similar true one not yet taken, if the similarity is >= `threshold`; "text" compares normalised
    text (case, spacing, punctuation do not matter), "embedding" the cosine similarity of all-MiniLM-L6-v2
    embeddings (loaded once per worker). Listing nothing scores 0.0.

    The true sub-motions are the record's `sub_motions`; for a record without them, `definitions` may name a
    JSON file {action label: [sub-motions]} (the action's definition), looked up by the record's answer. None
    when `accuracy` is None or there are no true sub-motions.

    >>> from rollout.trajectory import Trajectory
    >>> text = "<think>Sub-motions: leg bending → wave → arm extending</think><answer>shoot ball</answer>"
    >>> rec = {"answer": "shoot ball", "sub_motions": ["arm extending", "leg-bending"]}
    >>> submotion(Trajectory("v1", 0, [], [], [], [], final_text=text), rec)  # ranks 1 and 3 of 3: 3/6 + 1/6
    0.6666666666666666
    """
    if match not in MATCH_MODES:
        raise ValueError(f"submotion: match must be one of {MATCH_MODES}, got {match!r}")
    truth = _truth(record, definitions)
    if truth is None:
        return None
    right = accuracy(traj, record)
    if right is None:
        return None
    listed = parse_submotions(getattr(traj, "final_text", None)) if right == 1.0 else []
    if not listed:
        return 0.0
    weights = submotion_weights(len(listed), scheme)
    sims = similarity_matrix(listed, truth, match)
    taken: set[int] = set()
    total = 0.0
    for k, row in enumerate(sims):
        free = [j for j in range(len(truth)) if j not in taken]
        best = max(free, key=lambda j: row[j], default=None)
        if best is not None and row[best] >= threshold:
            taken.add(best)
            total += weights[k]
    return min(1.0, total)
