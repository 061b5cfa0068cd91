"""Benchmarks by name or by path, resolved to validated records before any actor starts.

A benchmark is a JSONL records file in the schema of `common/schema.py`. It can be named:
  - by a built-in name: the bundled sample data (`sample-ovar`, `sample-aqa`, ...), built on first use;
  - by a name registered with `register_benchmark(name, path)`, or listed in the JSON file that the
    `ACTIONRL_BENCHMARKS` environment variable points to ({"name": "/data/hmdb51/test.jsonl", ...});
  - by a records file `path/to/split.jsonl`;
  - by a dataset builder's output folder `<out>` (it writes `<out>/<split>.jsonl` and `stats.json`): its
    `test`, `eval` or `val` split, in that order, or `<out>:<split>` for another one.
The benchmark's task (every record must have the same one) picks its metrics and whether tools are used
(`eval.tasks.TASKS`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from eval.tasks import TASKS, TaskSpec

EVAL_SPLITS = ("test", "eval", "val")


def _sample(split: str) -> Callable[[], Path]:
    def build() -> Path:
        from common.sample_data import build_sample_data, default_sample_dir

        return Path(build_sample_data(default_sample_dir())[split])

    return build


# name -> a function returning the records file (built-ins build their data lazily)
_REGISTRY: dict[str, Callable[[], Path]] = {
    "sample-ovar": _sample("eval"),
    "sample-aqa": _sample("aqa_eval"),
    "sample-mcq": _sample("mcq_eval"),
    "sample-ovar-train": _sample("train"),
    "sample-aqa-train": _sample("aqa_train"),
    "sample-describe": _sample("describe_eval"),
    "sample-describe-train": _sample("describe_train"),
}


class BenchmarkError(ValueError):
    """A benchmark that cannot be resolved or read; the message says what was expected."""


@dataclass
class Benchmark:
    name: str
    path: Path
    task: str
    records: list[dict]

    @property
    def spec(self) -> TaskSpec:
        return TASKS[self.task]


def register_benchmark(name: str, path: str | Path | Callable[[], Path]) -> None:
    """Name a records file (or a function returning one). Refuses to rebind a name to something else."""
    target = path if callable(path) else (lambda p=Path(path): p)
    if name in _REGISTRY and not callable(path) and _REGISTRY[name]() != Path(path):
        raise ValueError(f"benchmark {name!r} is already registered as {_REGISTRY[name]()}")
    _REGISTRY[name] = target


def _user_registry() -> dict[str, str]:
    path = os.environ.get("ACTIONRL_BENCHMARKS")
    if not path:
        return {}
    try:
        table = json.loads(Path(path).read_text())
    except (OSError, ValueError) as e:
        raise BenchmarkError(f"ACTIONRL_BENCHMARKS={path}: not a readable JSON object of name -> path ({e})") from None
    if not isinstance(table, dict):
        raise BenchmarkError(f"ACTIONRL_BENCHMARKS={path}: expected a JSON object of name -> records file")
    return {str(k): str(v) for k, v in table.items()}


def available_benchmarks() -> list[str]:
    return sorted(set(_REGISTRY) | set(_user_registry()))


def _from_folder(folder: Path, split: str | None) -> Path:
    if split:
        path = folder / f"{split}.jsonl"
        if not path.is_file():
            raise BenchmarkError(f"{folder}: no split {split!r} ({path.name}); splits there: {_splits(folder)}")
        return path
    for name in EVAL_SPLITS:
        if (folder / f"{name}.jsonl").is_file():
            return folder / f"{name}.jsonl"
    raise BenchmarkError(
        f"{folder}: no {'/'.join(s + '.jsonl' for s in EVAL_SPLITS)}; name a split as {folder}:<split> "
        f"(splits there: {_splits(folder)})"
    )


def _splits(folder: Path) -> list[str]:
    return sorted(p.stem for p in folder.glob("*.jsonl"))


def resolve(name_or_path: str) -> Path:
    """The records file a benchmark argument names (see the module docstring); BenchmarkError otherwise."""
    if name_or_path in _REGISTRY:
        return Path(_REGISTRY[name_or_path]())
    user = _user_registry()
    if name_or_path in user:
        return Path(user[name_or_path]).expanduser()
    path = Path(name_or_path).expanduser()
    if path.is_file():
        return path
    if path.is_dir():
        return _from_folder(path, None)
    folder, _, split = name_or_path.rpartition(":")
    if folder and Path(folder).expanduser().is_dir():
        return _from_folder(Path(folder).expanduser(), split)
    raise BenchmarkError(
        f"unknown benchmark {name_or_path!r}: expected a records file (.jsonl), a dataset builder's output folder "
        f"(with test/eval/val.jsonl, or FOLDER:SPLIT), or one of the names {', '.join(available_benchmarks())}"
    )


def load_benchmark(name_or_path: str, limit: int | None = None) -> Benchmark:
    """Resolve, read and validate a benchmark (schema errors name the file and line); one task per benchmark."""
    from common.schema import RecordError, load_records

    path = resolve(name_or_path)
    try:
        records = load_records(path)
    except (RecordError, FileNotFoundError) as e:
        raise BenchmarkError(str(e)) from None
    if not records:
        raise BenchmarkError(f"{path}: no records")
    tasks = sorted({r["task"] for r in records})
    if len(tasks) != 1:
        raise BenchmarkError(f"{path}: records of several tasks {tasks}; a benchmark holds one task (split the file)")
    if limit:
        records = records[:limit]
    return Benchmark(name=name_or_path, path=path, task=tasks[0], records=records)
