"""What every dataset builder shares: the CLI, reading the official files with their file:line, collecting records
with the reasons some were dropped, and writing the outputs idempotently.

A builder is a function `build(args, col: Collector) -> dict` (the protocol facts for stats.json) that reads the
dataset folder `args.root` and calls `col.add(output_name, record, where)` for each record and
`col.drop(reason, where, detail)` for each input it cannot use. `run_builder` does the rest:

- every record is validated against the schema (`common.schema`) before it is kept; ids are unique per
  output file; a bad record is dropped with its source file and line, never lost silently;
- outputs are `<out>/<name>.jsonl` plus `<out>/stats.json` (records per output and class, dropped inputs by
  reason with the first problems' file:line), each written to a temp file and renamed, so a reader never sees
  half a file and the same inputs give byte-identical outputs;
- problems are printed on the console as `file:line: reason: detail`;
- the exit status is non-zero only when nothing usable remains, or with `--strict` when anything was dropped.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import pickle
import sys
import tempfile
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from common.schema import validate_record

MAX_PROBLEMS_KEPT = 200  # problems listed in stats.json (all are counted)
MAX_PROBLEMS_SHOWN = 20  # per reason on the console, then a count


class BuildError(Exception):
    """An input problem that leaves nothing to build from (a missing annotation file, renamed columns)."""


def where(path: str | Path, line: int | str | None = None) -> str:
    """A location for messages: `file:line` (or the file alone).

    >>> where("splits/a.txt", 3), where("labels.json")
    ('splits/a.txt:3', 'labels.json')
    """
    return f"{path}:{line}" if line is not None else str(path)


def require_file(path: str | Path, what: str) -> Path:
    """The path of a file the build cannot do without; BuildError naming it (and what it is) when absent."""
    path = Path(path)
    if not path.is_file():
        raise BuildError(f"{path}: missing {what}")
    return path


def read_csv_rows(
    path: str | Path, columns: tuple[str, ...], header: bool = True
) -> Iterator[tuple[int, dict[str, str]]]:
    """(line number, row) of a CSV file. With `header`, the file's first line must name every column in `columns`
    (a renamed or missing column is a BuildError naming the file and the columns found); without, rows are read
    positionally into `columns`. As in `csv.DictReader`, cells beyond the named columns are kept as a list under
    the key None and a short row lacks the keys of its missing cells, so callers can tell a malformed row.
    """
    path = Path(path)
    with path.open(newline="", encoding="utf-8") as f:
        reader = csv.reader(f)
        if header:
            names = [c.strip() for c in next(reader, [])]
            missing = [c for c in columns if c not in names]
            if missing:
                raise BuildError(f"{where(path, 1)}: missing column(s) {missing}; the header has {names}")
        else:
            names = list(columns)
        for row in reader:
            if not row or not any(cell.strip() for cell in row):
                continue
            cells = [cell.strip() for cell in row]
            out: dict = dict(zip(names, cells))
            if len(cells) > len(names):
                out[None] = cells[len(names) :]
            yield reader.line_num, out


def progress(items: Iterable, desc: str, total: int | None = None, quiet: bool = False) -> Iterable:
    """A tqdm bar on stderr for long loops (none when `quiet`)."""
    from tqdm import tqdm

    return tqdm(
        items, desc=desc, total=total, unit="item", file=sys.stderr, leave=False, mininterval=0.5, disable=quiet
    )


def class_key(rec: dict) -> str:
    """The class a record counts under in stats.json: meta.class, else label, else category."""
    meta = rec.get("meta") or {}
    return str(meta.get("class") or rec.get("label") or rec.get("category") or "?")


class Collector:
    """Records per output file, and the inputs dropped (by reason, with file:line)."""

    def __init__(self, dataset: str, quiet: bool = False):
        self.dataset = dataset
        self.quiet = quiet
        self.outputs: dict[str, list[dict]] = defaultdict(list)
        self.dropped: Counter = Counter()
        self.warnings: Counter = Counter()
        self.problems: list[dict] = []
        self._ids: dict[str, dict[str, str]] = defaultdict(dict)
        self._shown: Counter = Counter()

    def progress(self, items: Iterable, desc: str, total: int | None = None) -> Iterable:
        """A progress bar over `items`, hidden with --quiet."""
        return progress(items, desc, total, quiet=self.quiet)

    def drop(self, reason: str, at: str, detail: str = "") -> None:
        """Count one unusable input and report it (console and stats.json)."""
        self.dropped[reason] += 1
        if len(self.problems) < MAX_PROBLEMS_KEPT:
            self.problems.append({"reason": reason, "where": at, "detail": detail})
        self._shown[reason] += 1
        if not self.quiet and self._shown[reason] <= MAX_PROBLEMS_SHOWN:
            print(f"{at}: {reason}" + (f": {detail}" if detail else ""), file=sys.stderr)

    def warn(self, reason: str, at: str, detail: str = "") -> None:
        """Report something odd that is kept (e.g. a class name another list lacks): counted under `warnings` in
        stats.json, listed in `problems` with `"kept": true`, printed as `warning:` (even with --quiet, since
        nothing was dropped and it would otherwise pass unseen); --strict does not fail on it."""
        self.warnings[reason] += 1
        if len(self.problems) < MAX_PROBLEMS_KEPT:
            self.problems.append({"reason": reason, "where": at, "detail": detail, "kept": True})
        self._shown[reason] += 1
        if self._shown[reason] <= MAX_PROBLEMS_SHOWN:
            print(f"warning: {at}: {reason}" + (f": {detail}" if detail else ""), file=sys.stderr)

    def add(self, output: str, rec: dict, at: str) -> bool:
        """Keep a record in `output` if it is valid and its id is new there; otherwise drop it with the reason."""
        errors = validate_record(rec)
        if errors:
            self.drop("invalid record", at, f"record {rec.get('id', '?')!r}: " + "; ".join(errors))
            return False
        first = self._ids[output].get(rec["id"])
        if first is not None:
            self.drop("duplicate id", at, f"id {rec['id']!r} already read at {first}")
            return False
        self._ids[output][rec["id"]] = at
        self.outputs[output].append(rec)
        return True

    def stats(self, protocol: dict) -> dict:
        outputs = {}
        for name in sorted(self.outputs):
            recs = self.outputs[name]
            classes = Counter(class_key(r) for r in recs)
            splits = Counter(str((r.get("meta") or {}).get("base_or_novel", "")) for r in recs)
            entry = {"records": len(recs), "classes": dict(sorted(classes.items()))}
            if any(splits):
                entry["base_or_novel"] = dict(sorted(splits.items()))
            outputs[name] = entry
        return {
            "dataset": self.dataset,
            "protocol": protocol,
            "outputs": outputs,
            "dropped": dict(sorted(self.dropped.items())),
            "warnings": dict(sorted(self.warnings.items())),
            "problems": self.problems,
        }


def atomic_write_text(path: Path, text: str) -> None:
    """Write `text` to `path` through a temp file in the same folder and a rename: all or nothing."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_outputs(out_dir: Path, col: Collector, protocol: dict) -> dict:
    """Write each output as JSONL (records in the order added) and stats.json; returns the stats."""
    for name, recs in col.outputs.items():
        text = "".join(json.dumps(r, ensure_ascii=False, sort_keys=True) + "\n" for r in recs)
        atomic_write_text(out_dir / f"{name}.jsonl", text)
    stats = col.stats(protocol)
    atomic_write_text(out_dir / "stats.json", json.dumps(stats, indent=2, ensure_ascii=False) + "\n")
    return stats


def base_parser(description: str) -> argparse.ArgumentParser:
    """The arguments every builder takes: --root, --out, --seed, --strict, --quiet."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", required=True, help="the dataset folder, laid out as distributed")
    parser.add_argument("--out", required=True, help="folder to write <output>.jsonl files and stats.json to")
    parser.add_argument("--seed", type=int, default=0, help="seed of every random choice (same seed, same output)")
    parser.add_argument("--strict", action="store_true", help="exit non-zero when any input was dropped")
    parser.add_argument("--quiet", action="store_true", help="no progress bars, and do not print each dropped input")
    return parser


def run_builder(
    dataset: str, build: Callable[[argparse.Namespace, Collector], dict], args: argparse.Namespace
) -> tuple[int, dict | None]:
    """Run `build`, write the outputs, print a summary; returns (exit status, stats or None)."""
    col = Collector(dataset, quiet=args.quiet)
    try:
        protocol = build(args, col)
        source = getattr(args, "sub_motions", None)  # the action-recognition builders' --sub-motions
        if hasattr(source, "summary"):
            protocol = {**protocol, "sub_motions": source.summary()}
    except (BuildError, pickle.UnpicklingError) as e:  # the pickle reader's refusals name the file and what it found
        print(f"error: {e}", file=sys.stderr)
        return 2, None
    out = Path(args.out).expanduser().resolve()
    stats = write_outputs(out, col, protocol)
    total = sum(len(r) for r in col.outputs.values())
    for name, info in stats["outputs"].items():
        print(f"  {name:28s} {info['records']:7d} records, {len(info['classes'])} classes")
    if col.dropped:
        print("  dropped: " + ", ".join(f"{k}: {v}" for k, v in sorted(col.dropped.items())))
    if col.warnings:
        print("  warnings (kept): " + ", ".join(f"{k}: {v}" for k, v in sorted(col.warnings.items())))
    print(f"{dataset}: {total} records in {out} (stats in {out / 'stats.json'})")
    if total == 0:
        print("error: nothing usable remains", file=sys.stderr)
        return 1, stats
    if args.strict and col.dropped:
        print("error: --strict and some inputs were dropped", file=sys.stderr)
        return 1, stats
    return 0, stats


def cli_main(dataset: str, parser: argparse.ArgumentParser, build: Callable, argv: list[str] | None) -> int:
    """Parse the arguments, run the builder, return the exit status (for `sys.exit`)."""
    args = parser.parse_args(argv)
    return run_builder(dataset, build, args)[0]


def json_at(path: Path, index: int) -> str:
    """A location inside a JSON array file: `file:#index`.

    >>> json_at(Path("train.json"), 7)
    'train.json:#7'
    """
    return f"{path}:#{index}"


def load_json(path: Path) -> Any:
    """Read a JSON file; BuildError naming the file and line of a syntax error."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise BuildError(f"{where(path, e.lineno)}: not valid JSON ({e.msg})") from None
