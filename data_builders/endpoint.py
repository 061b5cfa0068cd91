"""A minimal client of an OpenAI-compatible chat-completions endpoint (a vLLM server, a hosted API), for the
teachers, judges and annotators of the chain-of-thought builders; and the resumable JSONL output they share.

    client = ChatEndpoint("http://localhost:8000/v1", model="Qwen2.5-VL-72B-Instruct", api_key_env="OPENAI_API_KEY")
    text = client.chat([{"role": "user", "content": "..."}], images=[frame])   # frames as HxWx3 uint8 arrays

The API key is read from the named environment variable and sent as a bearer token; it is never printed or
written. An unreachable endpoint or an HTTP error raises `EndpointError` at once, naming the URL and the error,
so a builder stops instead of dropping every record; rerunning it resumes after the last record written.
"""

from __future__ import annotations

import base64
import io
import json
import os
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

PROMPTS_DIR = Path(__file__).resolve().parents[1] / "recipes" / "prompts"


class EndpointError(RuntimeError):
    """The endpoint could not be reached or answered with an HTTP error."""


def load_prompt(name: str) -> str:
    """The text of `recipes/prompts/<name>` (prompts are files, so they can be edited without touching code)."""
    path = PROMPTS_DIR / name
    if not path.is_file():
        raise FileNotFoundError(f"prompt file not found: {path}")
    return path.read_text(encoding="utf-8")


def image_data_url(frame: Any) -> str:
    """An HxWx3 uint8 RGB array as a base64 JPEG data URL (the OpenAI image_url content form)."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(frame).convert("RGB").save(buf, format="JPEG", quality=90)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


class ChatEndpoint:
    """POST {base_url}/chat/completions; returns the first choice's message content."""

    def __init__(
        self,
        base_url: str,
        model: str,
        api_key_env: str = "OPENAI_API_KEY",
        timeout_s: float = 120.0,
        temperature: float = 0.2,
        max_tokens: int = 1024,
    ):
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.model, self.api_key_env, self.timeout_s = model, api_key_env, timeout_s
        self.temperature, self.max_tokens = temperature, max_tokens
        self.name = f"endpoint:{model}"

    def chat(self, messages: list[dict[str, Any]], images: list[Any] | None = None) -> str:
        """Send `messages`; `images` are attached to the last user message. Raises EndpointError on any HTTP or
        connection failure, ValueError on a reply without a message."""
        messages = [dict(m) for m in messages]
        if images:
            last = messages[-1]
            content = last["content"]
            parts = [{"type": "text", "text": content}] if isinstance(content, str) else content
            urls = [{"type": "image_url", "image_url": {"url": image_data_url(f)}} for f in images]
            last["content"] = urls + list(parts)
        body = {"model": self.model, "messages": messages, "temperature": self.temperature}
        body["max_tokens"] = self.max_tokens
        headers = {"Content-Type": "application/json"}
        key = os.environ.get(self.api_key_env, "")
        if key:
            headers["Authorization"] = f"Bearer {key}"
        request = urllib.request.Request(self.url, data=json.dumps(body).encode(), headers=headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                reply = json.loads(response.read().decode("utf-8"))
        except urllib.error.HTTPError as err:
            detail = err.read().decode("utf-8", "replace")[:300]
            raise EndpointError(f"{self.url}: HTTP {err.code} {err.reason}: {detail}") from None
        except (urllib.error.URLError, TimeoutError, ConnectionError) as err:
            raise EndpointError(f"{self.url}: unreachable ({getattr(err, 'reason', err)})") from None
        try:
            return reply["choices"][0]["message"]["content"] or ""
        except (KeyError, IndexError, TypeError):
            raise ValueError(f"{self.url}: reply without choices[0].message.content: {str(reply)[:200]}") from None


class ResumableOutput:
    """Kept records go to `out` (JSONL), dropped ids with their reason to `<out>.dropped.jsonl`; both are appended
    one line per record, so a builder stopped midway resumes where it was (`done` holds every id seen)."""

    def __init__(self, out: str | Path, resume: bool = True):
        self.path = Path(out)
        self.dropped_path = self.path.with_name(self.path.name + ".dropped.jsonl")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if not resume:
            for p in (self.path, self.dropped_path):
                p.unlink(missing_ok=True)
        self.kept: Counter = Counter()
        self.dropped: Counter = Counter()
        self.done: set[str] = set()
        for path, counter in ((self.path, None), (self.dropped_path, self.dropped)):
            if path.is_file():
                for line in path.read_text(encoding="utf-8").splitlines():
                    if line.strip():
                        row = json.loads(line)
                        self.done.add(row.get("source_id") or row.get("meta", {}).get("source_id") or row["id"])
                        if counter is not None:
                            counter[row["reason"]] += 1
                        else:
                            self.kept["records"] += 1
        self.resumed = len(self.done)

    def keep(self, source_id: str, records: list[dict]) -> None:
        from common.schema import validate_record

        with self.path.open("a", encoding="utf-8") as f:
            for rec in records:
                errors = validate_record(rec)
                if errors:  # a builder bug, not bad input: stop loudly
                    raise RuntimeError(f"built record {rec.get('id')!r} breaks the schema: {'; '.join(errors)}")
                f.write(json.dumps(rec, ensure_ascii=False) + "\n")
        self.kept["records"] += len(records)
        self.done.add(source_id)

    def drop(self, source_id: str, reason: str, detail: str = "") -> None:
        with self.dropped_path.open("a", encoding="utf-8") as f:
            f.write(json.dumps({"id": source_id, "reason": reason, "detail": detail[:300]}) + "\n")
        self.dropped[reason] += 1
        self.done.add(source_id)

    def summary(self, total: int) -> dict[str, Any]:
        """Counts over the whole output (this run and any resumed one), also written to `<out>.summary.json`."""
        summary = {
            "input_records": total,
            "kept_records": self.kept["records"],
            "dropped": dict(sorted(self.dropped.items())),
            "resumed_from": self.resumed,
            "out": str(self.path),
        }
        self.path.with_name(self.path.name + ".summary.json").write_text(json.dumps(summary, indent=1))
        return summary


def print_summary(name: str, summary: dict[str, Any]) -> None:
    dropped = ", ".join(f"{k}: {v}" for k, v in summary["dropped"].items()) or "none"
    print(f"[{name}] {summary['input_records']} input records -> {summary['kept_records']} kept; dropped: {dropped}")
    print(f"[{name}] wrote {summary['out']}")


def read_input(path: str | Path) -> list[tuple[int, Any]]:
    """(line number, parsed JSON or the raw text when it does not parse) for every non-blank line: builders
    validate records one by one and drop bad ones with a counted reason instead of stopping."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"input records file not found: {path}")
    rows = []
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if line.strip():
            try:
                rows.append((lineno, json.loads(line)))
            except json.JSONDecodeError:
                rows.append((lineno, line))
    return rows


def source_id(lineno: int, row: Any) -> str:
    return str(row.get("id")) if isinstance(row, dict) and row.get("id") else f"line-{lineno}"


def resolve_video(row: dict, records_path: str | Path) -> dict:
    """A copy of `row` with its relative `video` made absolute against the records file's folder."""
    row = dict(row)
    video = row.get("video")
    if isinstance(video, str) and video and not Path(video).is_absolute():
        row["video"] = str((Path(records_path).resolve().parent / video).resolve())
    return row


def _made(
    make: Callable[[dict], list[dict]],
    rows: list[tuple[int, Any]],
    records_path: str | Path,
    workers: int,
    done: set[str],
) -> Iterator[tuple[int, Any, list[dict] | None, Exception | None]]:
    """(line number, row, what `make` returned or None, what it raised or None) for each row, in input order;
    `make` runs only on JSON objects whose id is not in `done` when their turn comes, in `workers` threads when
    more than one. Stopping the iteration cancels the calls not yet started."""

    def attempt(item: tuple[int, Any]) -> tuple[int, Any, list[dict] | None, Exception | None]:
        lineno, row = item
        if not isinstance(row, dict) or source_id(lineno, row) in done:
            return lineno, row, None, None
        try:
            return lineno, row, make(resolve_video(row, records_path)), None
        except Exception as err:  # handed to the caller, which drops the record or stops the build
            return lineno, row, None, err

    if workers <= 1:
        yield from map(attempt, rows)
        return
    pool = ThreadPoolExecutor(max_workers=workers)
    try:
        yield from pool.map(attempt, rows)
    finally:
        pool.shutdown(wait=False, cancel_futures=True)


def build_resumable(
    records_path: str | Path,
    out: str | Path,
    make: Callable[[dict], list[dict]],
    desc: str,
    drop_on: tuple[type[Exception], ...] = (ValueError,),
    resume: bool = True,
    progress: bool = True,
    workers: int = 1,
) -> dict:
    """The loop every chain builder runs: each input record (video path made absolute) goes through `make`, whose
    output records are appended to `out` in input order; records already there are skipped, so a rerun resumes. A
    `drop_on` exception drops that record under its `reason` (or the text before ": "), counted in the summary;
    anything else, e.g. EndpointError, stops the build (fail fast; a rerun resumes there). `workers` > 1 runs
    `make` on that many records at once, in threads (for a `make` that waits on an endpoint and is thread-safe)."""
    from tqdm import tqdm

    rows = read_input(records_path)
    output = ResumableOutput(out, resume=resume)
    todo = [(lineno, row) for lineno, row in rows if source_id(lineno, row) not in output.done]
    results = _made(make, todo, records_path, workers, output.done)
    for lineno, row, made, err in tqdm(results, desc=desc, unit="rec", total=len(todo), disable=not progress):
        sid = source_id(lineno, row)
        if sid in output.done:  # an id repeated in the input
            continue
        if not isinstance(row, dict):
            output.drop(sid, "bad_record", f"line {lineno} is not a JSON object")
        elif err is None:
            output.keep(sid, made)
        elif isinstance(err, drop_on):
            reason, _, detail = str(err).partition(": ")
            output.drop(sid, getattr(err, "reason", reason), getattr(err, "detail", detail))
        else:
            raise err
    return output.summary(len(rows))
