"""The action knowledge base behind the `action_explanation` tool: one definition per action, decomposed into
transitional phases ("stand: transit from sitting or lying to standing"), stored as JSONL with its embeddings.

Labels come from dataset class lists (HMDB-51, UCF-101, Kinetics-400/700, SSv2, read from gluoncv's files), from
records (their `label`, and their `sub_motions` as phases when given) and from plain text files (one label a line).
The template writer (offline, deterministic) writes phase templates for common movement verbs, a generic
get-ready / main movement / finish decomposition otherwise; an entry says which writer wrote it. This module
holds what runs with the tool: reading (`load_kb`, `search_text`), writing (`build_kb`) and the embedded default
KB (`build_default_kb`); the command line and the LLM writer belong to the offline builder,
`python -m data_builders.action_kb`.

Next to `kb.jsonl` sits `kb.npy` (all-MiniLM-L6-v2 embeddings of each entry's search text); the tool embeds at
load time when the file is missing or stale.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from common.class_lists import class_list, readable

KB_VERSION = "1"
DEFAULT_LISTS = ("hmdb51", "ucf101")  # the embedded default: small enough to embed in seconds
# verb -> phases; "{x}" is the rest of the label (the object), "" when there is none
VERB_PHASES: dict[str, tuple[str, ...]] = {
    "stand": ("transit from sitting or lying to standing", "straighten the legs and the trunk"),
    "sit": ("bend the knees and hips from standing", "lower the body onto a seat or the ground"),
    "jump": (
        "crouch by bending the knees",
        "push off the ground with both legs",
        "fly with the feet off the ground",
        "land by bending the knees",
    ),
    "run": (
        "lean forward",
        "legs alternate quickly with a moment where both feet are off the ground",
        "arms swing opposite to the legs",
    ),
    "walk": (
        "step one leg forward while the other supports the body",
        "legs alternate with one foot always on the ground",
        "arms swing beside the body",
    ),
    "climb": (
        "reach up with a hand or lift a foot to the next hold {x}",
        "pull or push the body upward",
        "bring the other limbs up and repeat",
    ),
    "ride": (
        "sit on or mount the {x}",
        "keep balance while it moves forward",
        "steer and propel it (legs pedal or hold on)",
    ),
    "throw": (
        "wind up by drawing the arm back with {x}",
        "rotate the trunk and swing the arm forward",
        "release {x}",
        "follow through",
    ),
    "kick": (
        "plant the support foot",
        "swing the kicking leg back",
        "swing it forward to strike {x}",
        "follow through and recover balance",
    ),
    "punch": ("raise the fists in guard", "extend one arm quickly toward the target", "retract the arm"),
    "hit": ("draw the arm or tool back", "swing it forward to strike {x}", "follow through"),
    "swing": ("draw {x} back", "swing it through in an arc", "follow through"),
    "catch": ("track {x} with the eyes", "reach out the hands toward it", "close the hands and absorb its motion"),
    "push": ("place the hands against {x}", "extend the arms and lean forward", "move {x} away from the body"),
    "pull": ("grip {x}", "lean back and bend the arms", "bring {x} toward the body"),
    "lift": ("bend the knees and grip {x}", "straighten the legs and raise {x}", "hold or lower it"),
    "wave": ("raise the hand", "move the hand side to side", "lower the hand"),
    "clap": ("bring the hands apart", "strike the palms together", "repeat"),
    "squat": ("stand with feet apart", "bend the knees and lower the hips", "rise back to standing"),
    "fall": ("lose balance", "the body drops toward the ground", "land on the ground"),
    "turn": ("shift the weight", "rotate the body or head {x}", "settle in the new direction"),
    "dive": ("stand at the edge", "push off and leave the platform", "fly head first", "enter the water"),
    "swim": (
        "lie in the water",
        "pull with the arms and kick with the legs in a cycle",
        "breathe by turning the head",
    ),
    "eat": ("bring food {x} to the mouth with the hand or a utensil", "bite and chew", "lower the hand"),
    "drink": ("raise the cup or bottle to the mouth", "tilt the head back and swallow", "lower the cup"),
    "talk": ("face the listener", "mouth opens and closes while speaking", "head and hands move with the speech"),
    "dance": ("move to a rhythm", "step and turn in a sequence", "arms and body move with the music"),
    "brush": ("hold the brush", "move it back and forth over {x}", "put it down"),
    "play": ("hold or face {x}", "move the hands (or body) in the pattern {x} needs", "repeat the movement"),
    "shoot": ("aim at the target", "release the shot {x}", "follow through"),
    "pick": ("bend toward {x}", "grasp it with the hand", "raise it up"),
    "put": ("hold {x}", "move it to the place", "release it"),
    "open": ("grip {x}", "pull, twist or lift it open", "release"),
    "close": ("grip {x}", "push or turn it shut", "release"),
}


def _verb(words: list[str]) -> str | None:
    """The phase-template verb of a label's first word, if any: crude stemming of -ing, -s, doubled consonants.

    >>> _verb(["climbing"]), _verb(["rides"]), _verb(["running"]), _verb(["ApplyEyeMakeup"])
    ('climb', 'ride', 'run', None)
    """
    if not words:
        return None
    w = words[0].lower()
    for cand in (w, w[:-3], w[:-3] + "e", w[:-4], w[:-1], w[:-2]):
        if cand in VERB_PHASES:
            return cand
    return None


def verb_phases(label: str) -> list[str] | None:
    """The phase template of the label's verb (`VERB_PHASES`, the rest of the label filling "{x}"), or None when
    its first word is none of those verbs.

    >>> verb_phases("ride_bike")[0], verb_phases("ApplyEyeMakeup")
    ('sit on or mount the bike', None)
    """
    words = readable(label).split()
    verb = _verb(words)
    if verb is None:
        return None
    obj = " ".join(words[1:])
    return [re.sub(r"\s+", " ", p.replace("{x}", obj)).strip() for p in VERB_PHASES[verb]]


def generic_phases(label: str) -> list[str]:
    """The template writer's decomposition of a label whose verb has no template: get ready, the main movement,
    finish. It names the action rather than describing a movement."""
    action = readable(label)
    return [f"get into position to {action}", f"perform the main movement of {action}", "return to a resting position"]


def template_entry(label: str, phases: list[str] | None = None) -> dict[str, Any]:
    """The template writer's entry for one label; `phases` (e.g. a record's sub_motions) replace the templates.

    >>> e = template_entry("stand")
    >>> e["definition"]
    'stand: transit from sitting or lying to standing, then straighten the legs and the trunk.'
    >>> template_entry("climb_stairs")["phases"][0]
    'reach up with a hand or lift a foot to the next hold stairs'
    """
    action = readable(label)
    phases = phases or verb_phases(label) or generic_phases(label)
    definition = f"{action}: " + ", then ".join(phases) + "."
    return {"action": action, "label": label, "definition": definition, "phases": list(phases), "writer": "template"}


def entry_sub_motions(entry: dict[str, Any]) -> list[str] | None:
    """A knowledge-base entry's phases as ranked sub-motions (in the order of the movement, as the paper's own
    example ranks them), or None for the template writer's generic decomposition (`generic_phases`), which would
    teach the policy to repeat the label rather than describe a movement.

    >>> entry_sub_motions(template_entry("wave")), entry_sub_motions(template_entry("ApplyEyeMakeup"))
    (['raise the hand', 'move the hand side to side', 'lower the hand'], None)
    """
    phases = entry.get("phases")
    if not isinstance(phases, list) or not phases or not all(isinstance(p, str) and p.strip() for p in phases):
        return None
    if entry.get("writer") == "template" and phases == generic_phases(entry.get("label") or entry.get("action", "")):
        return None
    return list(phases)


def collect_labels(lists: list[str], records: list[str], label_files: list[str]) -> dict[str, dict[str, Any]]:
    """readable action -> {label, sources, phases (from records' sub_motions, else None)}; duplicates merge."""
    out: dict[str, dict[str, Any]] = {}

    def add(label: str, source: str, phases: list[str] | None = None) -> None:
        entry = out.setdefault(readable(label), {"label": label, "sources": [], "phases": None})
        if source not in entry["sources"]:
            entry["sources"].append(source)
        if phases and not entry["phases"]:
            entry["phases"] = phases

    for name in lists:
        for label in class_list(name):
            add(label, name)
    for path in records:
        from common.schema import load_records

        for rec in load_records(path):
            if isinstance(rec.get("label"), str):
                subs = rec.get("sub_motions")
                add(rec["label"], f"records:{Path(path).name}", subs if isinstance(subs, list) else None)
    for path in label_files:
        for line in Path(path).read_text(encoding="utf-8").splitlines():
            if line.strip():
                add(line.strip(), f"labels:{Path(path).name}")
    return out


def search_text(entry: dict[str, Any]) -> str:
    """What is embedded for retrieval: the action, its definition and its phases."""
    return f"{entry['action']}. {entry['definition']} Phases: {'; '.join(entry['phases'])}"


def build_kb(
    labels: dict[str, dict[str, Any]],
    out: str | Path,
    writer: str = "template",
    llm_writer: Callable[[str], dict[str, Any] | None] | None = None,
    embed: bool = True,
) -> Path:
    """Write the knowledge base JSONL (and its embeddings, `.npy` beside it) for `labels` (see collect_labels).

    Writer "llm" needs `llm_writer(label)`: the entry a model wrote, or None to fall back to the template."""
    from tqdm import tqdm

    if writer not in ("template", "llm") or (writer == "llm" and llm_writer is None):
        raise ValueError("writer must be 'template', or 'llm' with an LLM writer")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    entries, fallbacks = [], 0
    for _action, info in tqdm(sorted(labels.items()), desc=f"writing definitions ({writer})", unit="action"):
        entry = None
        if writer == "llm" and not info["phases"]:
            entry = llm_writer(info["label"])
            fallbacks += entry is None
        entry = entry or template_entry(info["label"], info["phases"])
        if info["phases"]:
            entry["writer"] = "records"  # the dataset's own sub-motions
        entries.append({**entry, "sources": info["sources"]})
    if fallbacks:
        print(f"[action_kb] {fallbacks} LLM replies were not the JSON asked for: template definitions used there")
    with out.open("w", encoding="utf-8") as f:
        for e in entries:
            f.write(json.dumps(e) + "\n")
    if embed:
        import numpy as np

        from common.embeddings import embed as embed_texts

        np.save(out.with_suffix(".npy"), embed_texts([search_text(e) for e in entries]))
    print(f"[action_kb] {len(entries)} definitions -> {out}")
    return out


def load_kb(path: str | Path) -> list[dict[str, Any]]:
    """The entries of a knowledge-base JSONL; a bad line raises ValueError naming the file and line number."""
    entries = []
    for n, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            e = json.loads(line)
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}:{n}: not JSON ({err.msg})") from None
        missing = [k for k in ("action", "definition", "phases") if k not in e]
        if missing or not isinstance(e.get("phases"), list):
            raise ValueError(f"{path}:{n}: an entry needs action, definition and a list of phases (missing {missing})")
        entries.append(e)
    if not entries:
        raise ValueError(f"{path}: the knowledge base is empty")
    return entries


def default_kb_path() -> Path:
    from common.tiny_model import default_home

    return default_home() / "action_kb" / f"template-v{KB_VERSION}" / "kb.jsonl"


def build_default_kb(path: str | Path | None = None) -> Path:
    """The embedded default KB (template writer over HMDB-51, UCF-101 and the sample data's labels), built once."""
    path = Path(path or default_kb_path())
    if path.is_file() and path.with_suffix(".npy").is_file():
        return path
    from common.sample_data import build_sample_data, default_sample_dir

    samples = build_sample_data(default_sample_dir())
    records = [str(samples[k]) for k in ("train", "eval") if k in samples]
    tmp = path.with_name(path.name + ".partial.jsonl")  # a crash mid-build leaves no half KB under the real name
    build_kb(collect_labels(list(DEFAULT_LISTS), records, []), tmp)
    tmp.with_suffix(".npy").replace(path.with_suffix(".npy"))
    tmp.replace(path)
    return path
