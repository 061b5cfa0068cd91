"""When each actor is busy: Ray's task events (`ray.timeline()`) turned into one row of bars per actor, as a PNG.

    spans = busy_spans(ray.timeline(), start, end)     # {row label: [(start s, end s, method)]}, times from `start`
    plot_timeline(spans, Path("timeline.png"), title="two GRPO steps")

A bar is one actor method call, from the moment the actor took it up (its arguments deserialising) until its
result was stored; the driver's own rows are left out. Rows are labelled by the actor's class (and a number when
there are several of one class), ordered rollout workers, trainer ranks, reward workers, tools, the rest.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

ORDER = ("RolloutWorker", "TrainerRank", "RewardWorker")


def busy_spans(events: list[dict], start: float, end: float) -> dict[str, list[tuple[float, float, str]]]:
    """The actor method calls of Ray timeline `events` (chrome-trace dicts: ts and dur in microseconds) that overlap
    [start, end] (unix seconds), clipped to it, in seconds from `start`, by row label.

    >>> ev = [{"cat": "task::RolloutWorker.rollout", "tid": "worker:a", "ts": 10.5e6, "dur": 2e6, "ph": "X"},
    ...       {"cat": "task::TrainerRank.train_step", "tid": "worker:b", "ts": 11e6, "dur": 5e6, "ph": "X"},
    ...       {"cat": "task:execute", "tid": "worker:b", "ts": 11e6, "dur": 5e6, "ph": "X"},
    ...       {"cat": "submit_task", "tid": "driver:c", "ts": 11e6, "dur": 1e6, "ph": "X"}]
    >>> busy_spans(ev, 11.0, 14.0)
    {'RolloutWorker': [(0.0, 1.5, 'rollout')], 'TrainerRank': [(0.0, 3.0, 'train_step')]}
    """
    calls: dict[str, list[tuple[float, float, str, str]]] = {}
    for e in events:
        cat = str(e.get("cat", ""))
        if e.get("ph") != "X" or not cat.startswith("task::") or "." not in cat:
            continue
        begin, finish = e["ts"] / 1e6, (e["ts"] + e["dur"]) / 1e6
        if finish < start or begin > end:
            continue
        cls, method = cat[len("task::") :].rsplit(".", 1)
        calls.setdefault(str(e["tid"]), []).append((max(begin, start) - start, min(finish, end) - start, cls, method))
    return _label_rows(calls)


def _label_rows(calls: dict[str, list[tuple[float, float, str, str]]]) -> dict[str, list[tuple[float, float, str]]]:
    """One row per actor process, labelled by its most frequent class, numbered within a class of several."""
    classes = {tid: Counter(c for *_, c, _ in spans).most_common(1)[0][0] for tid, spans in calls.items()}
    per_class = Counter(classes.values())

    def rank(tid: str) -> tuple:
        cls = classes[tid]
        first = min(s for s, *_ in calls[tid])
        return (ORDER.index(cls) if cls in ORDER else len(ORDER), cls, first)

    rows, seen = {}, Counter()
    for tid in sorted(calls, key=rank):
        cls = classes[tid]
        seen[cls] += 1
        label = cls if per_class[cls] == 1 else f"{cls} {seen[cls] - 1}"
        rows[label] = sorted((s, e, m) for s, e, _, m in calls[tid])
    return rows


FIXED_COLOURS = {"rollout": "tab:orange", "train_step": "tab:blue", "sync_weights": "tab:green", "score": "tab:red"}


def method_colour(method: str) -> Any:
    """The same colour for a method in every plot: fixed ones for the main phases, the others by a hash of the name.

    >>> method_colour("rollout"), method_colour("call_batch") == method_colour("call_batch")
    ('tab:orange', True)
    """
    import zlib

    import matplotlib

    if method in FIXED_COLOURS:
        return FIXED_COLOURS[method]
    return matplotlib.colormaps["tab20"](zlib.crc32(method.encode()) % 20)


def plot_timeline(spans: dict[str, list[tuple[float, float, str]]], out: Path, title: str = "") -> Path:
    """A PNG with one row per actor and one bar per method call, coloured by method, with a legend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    methods = sorted({m for row in spans.values() for *_, m in row})
    colours = {m: method_colour(m) for m in methods}
    fig, ax = plt.subplots(figsize=(10, 0.45 * len(spans) + 1.6))
    for y, row in enumerate(reversed(list(spans.values()))):
        for begin, finish, method in row:
            ax.barh(y, finish - begin, left=begin, height=0.7, color=colours[method])
    ax.set_yticks(range(len(spans)), list(reversed(list(spans))), fontsize=8)
    ax.set_xlabel("seconds")
    ax.set_title(title or "when each actor is busy")
    handles = [plt.Rectangle((0, 0), 1, 1, color=colours[m]) for m in methods]
    ax.legend(handles, methods, fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out
