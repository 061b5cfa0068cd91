"""Class-list files the action-recognition builders read: a user's base/novel split and zero-shot split lists,
in our JSON form or in the CSV form ViFi-CLIP (Rasheed et al. 2023) releases in its repository's `labels/` folder.

ViFi-CLIP's files (github.com/muzairkhattak/ViFi-CLIP, `labels/`) are CSVs with the header `id,name` and one class
per row, `id` counting from 0 and names quoted when they hold a comma:

    id,name
    0,pour
    5,"Removing something, revealing something behind"

`<dataset>_base_labels.csv` lists a dataset's base classes (the novel file lists the rest), `ZS_split{1,2,3}_K600.csv`
the 160 Kinetics-600 classes of each zero-shot split. Their names are words (`ride bike` for HMDB-51's `ride_bike`),
so names are matched to the dataset's own as lower-case words (`common.class_lists.readable`).
"""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from pathlib import Path

from common.class_lists import readable
from data_builders.builder import BuildError, where

K600_SPLIT_FILE = "ZS_split{k}_K600.csv"


def is_id_name_csv(path: Path) -> bool:
    """Whether the file's first non-empty line is the header `id,name` (ViFi-CLIP's label files)."""
    with path.open(encoding="utf-8-sig") as f:
        for line in f:
            if line.strip():
                return line.strip().replace(" ", "").lower() == "id,name"
    return False


def read_id_name_csv(path: Path) -> list[tuple[int, str]]:
    """(line number, name) of each row of an `id,name` CSV; BuildError naming file:line for a row that is not an
    integer id and a non-empty name."""
    rows = []
    with path.open(newline="", encoding="utf-8-sig") as f:
        reader = csv.reader(f)
        for row in reader:
            cells = [c.strip() for c in row]
            if not any(cells) or (reader.line_num == 1 and [c.lower() for c in cells] == ["id", "name"]):
                continue
            if len(cells) != 2 or not cells[0].isdigit() or not cells[1]:
                raise BuildError(f"{where(path, reader.line_num)}: expected 'id,name', got {','.join(row)!r}")
            rows.append((reader.line_num, cells[1]))
    return rows


def match_names(path: Path, rows: Sequence[tuple[int, str]], classes: Sequence[str]) -> list[str]:
    """The dataset's spelling of each (line number, name), in the file's order, matched as lower-case words;
    BuildError naming file:line for an unknown or repeated class."""
    by_words = {readable(c): c for c in classes}
    out: dict[str, int] = {}
    for lineno, name in rows:
        cls = by_words.get(readable(name))
        if cls is None:
            raise BuildError(f"{where(path, lineno)}: unknown class {name!r}")
        if cls in out:
            raise BuildError(f"{where(path, lineno)}: class {name!r} already listed at line {out[cls]}")
        out[cls] = lineno
    return list(out)


def read_class_list(path: str | Path, classes: Sequence[str]) -> list[str]:
    """A class list for one zero-shot split: ViFi-CLIP's `id,name` CSV, or one name per line (a line `<digits>,name`
    counts as the name). Names are matched to `classes` as lower-case words; BuildError names the file and line."""
    path = Path(path)
    if not path.is_file():
        raise BuildError(f"{path}: missing class list")
    if is_id_name_csv(path):
        return match_names(path, read_id_name_csv(path), classes)
    rows = []
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        name = line.strip()
        if "," in name and name.split(",", 1)[0].strip().isdigit():
            name = name.split(",", 1)[1].strip()
        if name and not (lineno == 1 and name.lower() == "name"):
            rows.append((lineno, name))
    return match_names(path, rows, classes)


def read_class_split(path: str | Path, classes: Sequence[str]) -> tuple[list[str], list[str]]:
    """A user's base/novel split, each half in `classes`' order. Either ViFi-CLIP's base-label CSV
    (`labels/<dataset>_base_labels.csv`: the base classes; novel are the other classes, as in its novel file) or a
    JSON object {"base": [...], "novel": [...]} of names as the dataset spells them. BuildError (naming the file)
    for unknown names, a class in both halves, or a missing key."""
    path = Path(path)
    if path.is_file() and is_id_name_csv(path):
        base = set(match_names(path, read_id_name_csv(path), classes))
        return [c for c in classes if c in base], [c for c in classes if c not in base]
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise BuildError(f"{path}: cannot read the class split ({e})") from None
    if not isinstance(obj, dict) or not all(isinstance(obj.get(k), list) for k in ("base", "novel")):
        raise BuildError(
            f'{path}: a class split is a JSON object {{"base": [...], "novel": [...]}} '
            "or an id,name CSV of the base classes"
        )
    known = set(classes)
    unknown = sorted(set(obj["base"]) - known | set(obj["novel"]) - known)
    if unknown:
        raise BuildError(f"{path}: unknown class(es) {unknown[:10]}")
    both = sorted(set(obj["base"]) & set(obj["novel"]))
    if both:
        raise BuildError(f"{path}: class(es) in both base and novel: {both[:10]}")
    order = {c: i for i, c in enumerate(classes)}
    return sorted(obj["base"], key=order.get), sorted(obj["novel"], key=order.get)


def vificlip_k600_files(folder: str | Path) -> list[Path]:
    """ViFi-CLIP's three K-600 zero-shot split files in `folder` (its `labels/` folder, or a clone of the repository
    holding one); BuildError naming the first file it cannot find."""
    folder = Path(folder).expanduser()
    paths = []
    for k in (1, 2, 3):
        name = K600_SPLIT_FILE.format(k=k)
        found = [p for p in (folder / name, folder / "labels" / name) if p.is_file()]
        if not found:
            raise BuildError(
                f"{folder / name}: missing ViFi-CLIP split file (labels/{name} of github.com/muzairkhattak/ViFi-CLIP)"
            )
        paths.append(found[0])
    return paths
