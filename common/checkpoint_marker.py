"""When is a checkpoint directory complete: the marker file a recipe's save writes last, and the check of it.

The trainer (rl/checkpoint.py) writes `<run_dir>/checkpoint-<step>/` into a hidden sibling first, writes
`COMPLETE` there once every rank's files are on disk, then renames the folder into place. `COMPLETE` is JSON:

    {"step": 40, "files": {"config.json": 1432, "model.safetensors": 8912, "trainer_state/trainer.json": 512, ...}}

every file of the checkpoint (the marker aside) with its size in bytes. A checkpoint is complete when its marker
is there and every file it lists is there with that size: a copy cut short, a truncated file or a deleted one
show. Retention may later drop a checkpoint's `trainer_state/` and keep its weights; the marker is then rewritten
without those files, so the weights stay a complete (evaluable) checkpoint that no longer resumes.

Training (rl/, recipes/) and evaluation (eval/) both read checkpoints by this rule; it lives here because eval/
may not import rl/.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

CHECKPOINT_PREFIX = "checkpoint-"  # a run directory's checkpoints: checkpoint-<step>/
MARKER = "COMPLETE"
STATE_DIR = "trainer_state"  # what exact resume needs besides the weights (rl/checkpoint.py)


def fsync_file(path: str | Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(path: str | Path) -> None:
    """Make the entries of directory `path` (new names, renames) durable."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_tree(root: str | Path) -> None:
    """fsync every file and directory under `root` (and `root` itself). A file that is gone by the time it is
    reached was another rank's temporary file, renamed by its writer (who fsyncs what it writes): skipped."""
    for folder, _, files in os.walk(root):
        for name in files:
            try:
                fsync_file(Path(folder) / name)
            except FileNotFoundError:
                continue
        fsync_dir(folder)


def list_files(directory: str | Path) -> dict[str, int]:
    """Every file under `directory` but the marker, as {relative posix path: size in bytes}.

    >>> import tempfile; d = Path(tempfile.mkdtemp()); _ = (d / "a.json").write_text("abc")
    >>> (d / STATE_DIR).mkdir(); _ = (d / STATE_DIR / "x.json").write_text("12345")
    >>> list_files(d)
    {'a.json': 3, 'trainer_state/x.json': 5}
    """
    root = Path(directory)
    out = {}
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        if path.is_file() and rel != MARKER:
            out[rel] = path.stat().st_size
    return out


def write_marker(directory: str | Path, step: int | None, files: dict[str, int] | None = None) -> dict[str, Any]:
    """Write `directory/COMPLETE` listing `files` (default: every file there now) and fsync it; returns its
    content. It replaces an existing marker by a rename, so a reader sees the old one or the new one whole."""
    directory = Path(directory)
    marker = {"step": step, "files": list_files(directory) if files is None else dict(files)}
    tmp = directory / f".{MARKER}.tmp"
    with open(tmp, "w") as f:
        json.dump(marker, f, indent=1, sort_keys=True)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, directory / MARKER)
    fsync_dir(directory)
    return marker


def read_marker(directory: str | Path) -> dict[str, Any] | None:
    """The marker's content, or None when there is none or it does not parse."""
    try:
        marker = json.loads((Path(directory) / MARKER).read_text())
    except (OSError, ValueError):
        return None
    return marker if isinstance(marker, dict) and isinstance(marker.get("files"), dict) else None


def incomplete_reason(directory: str | Path) -> str | None:
    """Why `directory` is not a complete checkpoint, or None when it is."""
    directory = Path(directory)
    marker = read_marker(directory)
    if marker is None:
        return f"no readable {MARKER} marker (the save did not finish)"
    for rel, size in marker["files"].items():
        path = directory / rel
        if not path.is_file():
            return f"{rel} is missing"
        if path.stat().st_size != size:
            return f"{rel} has {path.stat().st_size} bytes, the marker says {size}"
    return None


def is_resumable(directory: str | Path) -> bool:
    """A complete checkpoint that still has its trainer state (not one that retention cut to its weights)."""
    marker = read_marker(directory)
    return marker is not None and f"{STATE_DIR}/trainer.json" in marker["files"] and not incomplete_reason(directory)


def step_dirs(run_dir: str | Path) -> list[tuple[int, Path]]:
    """Every `checkpoint-<N>` directory of `run_dir`, complete or not, by step."""
    found = []
    for path in Path(run_dir).glob(CHECKPOINT_PREFIX + "*"):
        tail = path.name[len(CHECKPOINT_PREFIX) :]
        if tail.isdigit() and path.is_dir():
            found.append((int(tail), path))
    return sorted(found)


def complete_checkpoints(run_dir: str | Path, resumable: bool = False) -> list[tuple[int, Path]]:
    """The complete `checkpoint-<N>` directories of `run_dir` (with `resumable`, only those that still have their
    trainer state), by step."""
    check = is_resumable if resumable else (lambda p: incomplete_reason(p) is None)
    return [(step, path) for step, path in step_dirs(run_dir) if check(path)]
