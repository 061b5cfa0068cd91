"""Ranked sub-motions for the action-recognition records, the truth of Video-STAR's sub-motion reward.

The builders (hmdb51, ucf101, kinetics, ssv2) take `--sub-motions SOURCE` and write each record's `sub_motions`
from it, looked up by the record's class as the dataset spells it, then by its label (compared by
`common.submotions.label_key`: case, spaces, underscores and punctuation do not count):

- `kb` (the default): the template knowledge base's phase templates (`common.action_kb.VERB_PHASES`, the phases
  the `action_explanation` tool's embedded knowledge base gives): labels whose first word is one of its movement
  verbs (stand, sit, jump, run, walk, climb, ride, throw, kick, punch, hit, swing, catch, push, pull, lift, wave,
  clap, squat, fall, turn, dive, swim, eat, drink, talk, dance, brush, play, shoot, pick, put, open, close, with
  their -s / -ing forms). Other labels get none: the template writer's generic get-ready / main movement /
  finish would only repeat the label.
- a knowledge base JSONL written by `python -m data_builders.action_kb` (best with `--writer llm`): each entry's
  phases, looked up by its action and label, except the template writer's generic ones.
- a JSON definitions file `{"label": ["sub-motion", ...]}`, the file the reward's `definitions` argument reads.
- `none`: no `sub_motions`.

A record whose label has no entry is written without `sub_motions`; the sub-motion reward then returns None for
it (not applicable: it is left out of that component's mean, and the other rewards train). `stats.json` says,
under `protocol.sub_motions`, the source and which classes got sub-motions and which did not.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path

from common.action_kb import entry_sub_motions, load_kb, verb_phases
from common.submotions import clean_submotion, label_key, load_definitions

SOURCES_HELP = (
    "where each record's ranked sub_motions come from: 'kb' (default: the template knowledge base's verb phases), "
    "a knowledge-base JSONL (python -m data_builders.action_kb), a JSON file {label: [sub-motion, ...]}, or 'none'"
)


class SubMotionSource:
    """Looks up the ranked sub-motions of a class; remembers which classes had an entry, for stats.json."""

    def __init__(self, name: str, lookup: Callable[[str], list[str] | None]):
        self.name, self._lookup = name, lookup
        self.found: set[str] = set()
        self.missing: set[str] = set()

    def __call__(self, cls: str, label: str) -> list[str] | None:
        """The sub-motions of the class `cls` (else of `label`), cleaned to the one-line format; None when neither
        has an entry."""
        for name in (cls, label):
            motions = self._lookup(name)
            cleaned = [c for c in (clean_submotion(m) for m in motions or []) if c]
            if cleaned:
                self.found.add(cls)
                return cleaned
        self.missing.add(cls)
        return None

    def summary(self) -> dict:
        """{source, classes_with, classes_without (the names)} for stats.json."""
        return {
            "source": self.name,
            "classes_with": len(self.found),
            "classes_without": sorted(self.missing - self.found),
        }


def _kb_file(path: Path) -> Callable[[str], list[str] | None]:
    table: dict[str, list[str]] = {}
    for entry in load_kb(path):
        motions = entry_sub_motions(entry)
        if motions:
            for name in (entry.get("label"), entry.get("action")):
                if isinstance(name, str):
                    table.setdefault(label_key(name), motions)
    return lambda name: table.get(label_key(name))


def sub_motion_source(value: str) -> SubMotionSource | None:
    """The `--sub-motions` argument as a source (an argparse `type`); None for `none`. A file that cannot be read
    is an argparse error naming it."""
    if value == "none":
        return None
    if value == "kb":
        return SubMotionSource("kb (template verb phases, common.action_kb)", verb_phases)
    path = Path(value).expanduser()
    if not path.is_file():
        raise argparse.ArgumentTypeError(f"{path}: no such file (give 'kb', 'none', a KB .jsonl or a .json file)")
    try:
        if path.suffix == ".jsonl":
            return SubMotionSource(f"knowledge base {path}", _kb_file(path))
        table = load_definitions(str(path.resolve()))
    except (ValueError, json.JSONDecodeError) as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return SubMotionSource(f"definitions file {path}", lambda name: table.get(label_key(name)))
