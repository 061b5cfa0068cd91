"""Several gold points per `describe` record (Gold Points Sniper), from an annotator that watches the video or from
a file of your own.

GPS's ground-truth gold points are a list of facts about the person's action, intention and context, written by an
annotator model that sees the frames and is given the action label as a prior, the last point stating the label
(Sec. III-C; the paper's annotator is LLaVA-OneVision-Qwen2-72B-ov-chat). The CAP builder (`data_builders.cap`)
gives each record only that last point; this pass replaces it with the full list:

    # an OpenAI-compatible endpoint (a vLLM server, a hosted API); the frames go as images, the key from $ANNOTATOR_KEY
    python -m data_builders.gold_points --records cap/tuning.jsonl --out cap/tuning_gold.jsonl \\
        --annotator http://vlm-host:8000/v1 --annotator-model llava-onevision-qwen2-72b-ov-chat \\
        --api-key-env ANNOTATOR_KEY --frames 8 --extraction
    # or your own points: a JSONL file, one {"id": "<record id>", "gold_points": ["...", ...]} per line
    python -m data_builders.gold_points --records cap/held_out.jsonl --out cap/held_out_gold.jsonl \\
        --points-file my_points.jsonl

The annotator's prompt is `recipes/prompts/gps_annotator_gold_points.txt`. The label is `meta.class` (CAP's activity
folder) or `label`; when the annotator's last point does not name it, the label's own sentence is appended, so the
last point always states it. `--extraction` also writes what GPS trains the extractor on (Sec. III-A/B): the
annotator's points without the label (`meta.annotated_gold_points`) and its yes/no on whether they suffice to
recognise the labelled action (`meta.annotated_valid`, prompt `gps_annotator_validity.txt`); the SFT role builder
(`data_builders.gps_roles`) turns them into the validation and Socratic records.

Each output record is its input with `gold_points` replaced and `meta.gold_points_source` ("annotator:<model>" or
"file:<name>"). Dropped, with a counted reason (`<out>.dropped.jsonl`): `bad_record`, `video_unreadable`,
`annotator_unparsable`, `not_in_points_file`. An endpoint that fails stops the pass; a rerun resumes after the
last record written.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Any

from common.class_lists import readable
from common.gps import numbered, parse_points, parse_yes_no
from common.schema import validate_record
from data_builders.endpoint import ChatEndpoint, build_resumable, load_prompt, print_summary

DEFAULT_ANNOTATOR = "llava-onevision-qwen2-72b-ov-chat"  # the paper's data annotator (Sec. III)
LABEL_HINT = 'The person\'s action is labelled "{label}". The last point must state this action.'
_WORD = re.compile(r"[a-z0-9]+")


def record_label(record: dict) -> str | None:
    """The action label of a record, as words: `meta.class` (CAP's activity folder name), else `label`.

    >>> record_label({"meta": {"class": "person_pulls_out_chair"}}), record_label({"label": "wave"})
    ('person pulls out chair', 'wave')
    """
    meta = record.get("meta") if isinstance(record.get("meta"), dict) else {}
    label = meta.get("class") or record.get("label")
    return readable(label) if isinstance(label, str) and label.strip() else None


def label_sentence(label: str) -> str:
    """The gold point a label states.

    >>> label_sentence("person pulls out chair"), label_sentence("wave")
    ('The person pulls out chair.', 'The action is wave.')
    """
    if label.startswith("person "):
        return "The " + label + "."
    return f"The action is {label}."


def states_label(point: str, label: str) -> bool:
    """Whether `point` has every word of `label` but "person" (a loose check: the annotator may inflect nothing).

    >>> states_label("The man pulls out a chair.", "person pulls out chair"), states_label("He sits.", "sit down")
    (True, False)
    """
    words = set(_WORD.findall(point.lower()))
    return all(w in words for w in _WORD.findall(label.lower()) if w != "person")


def read_points_file(path: str | Path) -> dict[str, list[str]]:
    """{record id: gold points} from a JSONL file of {"id": str, "gold_points": [str, ...]} lines; ValueError naming
    the file and line for a line that is not such an object, an empty list or an id given twice."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"gold points file not found: {path}")
    out: dict[str, list[str]] = {}
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError as e:
            raise ValueError(f"{path}:{lineno}: not JSON ({e})") from None
        points = row.get("gold_points") if isinstance(row, dict) else None
        if not isinstance(row, dict) or not isinstance(row.get("id"), str):
            raise ValueError(f'{path}:{lineno}: expected {{"id": "<record id>", "gold_points": ["...", ...]}}')
        if not isinstance(points, list) or not points or not all(isinstance(p, str) and p.strip() for p in points):
            raise ValueError(f"{path}:{lineno}: record {row['id']!r}: gold_points must be a non-empty list of strings")
        if row["id"] in out:
            raise ValueError(f"{path}:{lineno}: record {row['id']!r} is listed twice")
        out[row["id"]] = [p.strip() for p in points]
    return out


class FilePoints:
    """Gold points from the user's file (`read_points_file`)."""

    def __init__(self, path: str | Path):
        self.points, self.name = read_points_file(path), f"file:{Path(path).name}"

    def annotate(self, record: dict) -> dict[str, Any]:
        if record["id"] not in self.points:
            raise ValueError(f"not_in_points_file: record {record['id']!r} has no line in {self.name[5:]}")
        return {"gold_points": list(self.points[record["id"]])}


class EndpointPoints:
    """Gold points written by a VLM behind an OpenAI-compatible endpoint that sees `frames` frames of the video
    (sampled uniformly over the record's clip, at most `max_side` pixels on the long side)."""

    def __init__(self, client: ChatEndpoint, frames: int = 8, max_side: int = 448, extraction: bool = False):
        if frames < 1:
            raise ValueError(f"--frames must be >= 1, got {frames}")
        self.client, self.frames, self.max_side, self.extraction = client, frames, max_side, extraction
        self.name = f"annotator:{client.model}"

    def _frames(self, record: dict) -> list:
        from envs.video import VideoDecodeError, read_video

        try:
            video = read_video(record["video"], self.frames, record.get("clip"), self.max_side)
        except VideoDecodeError as e:
            raise ValueError(f"video_unreadable: {e}") from None
        return list(video.frames)

    def _points(self, frames: list, label: str | None) -> list[str]:
        hint = LABEL_HINT.format(label=label) if label else ""
        prompt = load_prompt("gps_annotator_gold_points.txt").format(label_hint=hint)
        points = parse_points(self.client.chat([{"role": "user", "content": prompt}], images=frames))
        if not points:
            raise ValueError("annotator_unparsable: no gold point in the reply")
        return points

    def annotate(self, record: dict) -> dict[str, Any]:
        frames, label = self._frames(record), record_label(record)
        gold = self._points(frames, label)
        if label and not states_label(gold[-1], label):
            gold.append(label_sentence(label))  # GPS's last ground-truth point states the label
        out: dict[str, Any] = {"gold_points": gold}
        if self.extraction:
            annotated = self._points(frames, None)  # without the label, as the extractor will see the video
            out["meta"] = {"annotated_gold_points": annotated}
            if label:
                prompt = load_prompt("gps_annotator_validity.txt").format(label=label, points=numbered(annotated))
                valid = parse_yes_no(self.client.chat([{"role": "user", "content": prompt}], images=frames))
                if valid is None:
                    raise ValueError("annotator_unparsable: the validity reply says neither yes nor no")
                out["meta"]["annotated_valid"] = valid
        return out


def annotate_record(record: dict, source: Any) -> list[dict]:
    """The record with the gold points of `source` (FilePoints or EndpointPoints); ValueError("reason: detail")."""
    errors = validate_record(record)
    if errors or record.get("task") != "describe":
        raise ValueError("bad_record: " + ("; ".join(errors) or f"task {record.get('task')!r} is not describe"))
    found = source.annotate(record)
    meta = {**record.get("meta", {}), **found.get("meta", {}), "gold_points_source": source.name}
    return [{**record, "gold_points": found["gold_points"], "meta": meta}]


def build(records: str | Path, out: str | Path, source: Any, resume: bool = True, progress: bool = True) -> dict:
    """Annotate every record of `records` into `out` (resumable; see the module docstring); the summary."""
    return build_resumable(
        records, out, lambda rec: annotate_record(rec, source), "gold points", resume=resume, progress=progress
    )


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], prog="python -m data_builders.gold_points")
    ap.add_argument("--records", required=True, help="input JSONL of describe records (e.g. the CAP builder's)")
    ap.add_argument("--out", required=True, help="output JSONL: the records with their gold points")
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--annotator", help="an OpenAI-compatible base URL (.../v1) of a VLM that sees the frames")
    src.add_argument("--points-file", help='JSONL, one {"id": ..., "gold_points": [...]} per line')
    ap.add_argument("--annotator-model", default=DEFAULT_ANNOTATOR, help="the model name the endpoint serves")
    ap.add_argument("--api-key-env", default="OPENAI_API_KEY", help="environment variable holding the API key")
    ap.add_argument("--frames", type=int, default=8, help="frames sent to the annotator, uniform over the clip")
    ap.add_argument("--max-side", type=int, default=448, help="long side of the frames sent, in pixels")
    ap.add_argument("--extraction", action="store_true", help="also the label-free points and their validity")
    ap.add_argument("--no-resume", action="store_true")
    return ap


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        if args.points_file:
            source: Any = FilePoints(args.points_file)
        else:
            client = ChatEndpoint(args.annotator, model=args.annotator_model, api_key_env=args.api_key_env)
            source = EndpointPoints(client, args.frames, args.max_side, args.extraction)
        summary = build(args.records, args.out, source, resume=not args.no_resume)
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print_summary("gold_points", summary)
    return 0 if summary["kept_records"] else 1


if __name__ == "__main__":
    sys.exit(main())
