"""Gold Points Sniper (GPS) SFT records: the four roles of one VLM, as separate records from one annotation.

From one `describe` annotation (its `gold_points`, the facts that are true of the video) come:

  gold_points   extract the key details                     -> "Gold points:\n1. ...\n2. ..."
  validation    are these extracted points sufficient?       -> "yes" (the full list) and "no" (a list missing
                                                                points), one record each
  socratic      (only for the invalid list) ask and answer   -> "Q: ...\nA: ..." pairs that recover what is missing
  description   the final description, given the points      -> one paragraph stating every gold point

`meta.annotated_gold_points` (an extractor's possibly incomplete list, e.g. from `data_builders.gold_points
--extraction`) replaces the made-up incomplete list when the annotation has one; with `meta.annotated_valid` true
(the annotator found that list sufficient for the label) it is validated "yes" and gets no Socratic pairs, else
"no" and the pairs. `meta.socratic` ([{q, a}]) and `meta.description` are used as given. What is missing is
written by the annotator: an OpenAI-compatible endpoint that sees `--frames` frames of the video (prompts
`recipes/prompts/gps_annotator_*.txt`) or the
deterministic template annotator (named as such: it restates the gold points, it does not look at the video).
Each output record is a `describe` record whose `prompt` is the role's prompt, `answer` and `chain` the target,
`meta.role` the role and `meta.source_id` the annotation's id.

    python -m data_builders.gps_roles --records describe_train.jsonl --out gps/train_roles.jsonl
    python -m data_builders.gps_roles --records describe_train.jsonl --out gps/train_roles.jsonl \\
        --annotator http://vllm-host:8000/v1 --annotator-model Qwen2.5-VL-72B-Instruct

Dropped, with a counted reason: `bad_record`, `annotator_unparsable`, `video_unreadable`. A rerun resumes after
the last annotation.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from common.gps import ROLE_PROMPTS, numbered, parse_qa, qa_text
from common.sample_describe import describe_from_ovar
from common.schema import validate_record
from data_builders.endpoint import (
    ChatEndpoint,
    build_resumable,
    load_prompt,
    print_summary,
)

ROLES = ("gold_points", "validation", "socratic", "description")
PROMPTS = ROLE_PROMPTS  # the role prompts live in common.gps: the staged evaluation asks the same questions


def _sentence(point: str) -> str:
    point = point.strip().rstrip(".")
    return point[:1].upper() + point[1:] + "."


class TemplateAnnotator:
    """The deterministic template annotator: Socratic pairs ask about each missing gold point and answer with it;
    the description states the gold points as sentences. It does not look at the video."""

    name = "template"

    def socratic(self, gold: list[str], partial: list[str], record: dict | None = None) -> list[dict[str, str]]:
        missing = [p for p in gold if p not in partial] or gold[-1:]
        return [
            {"q": f"Is there a detail beyond the listed points? ({i})", "a": _sentence(p)}
            for i, p in enumerate(missing, 1)
        ]

    def description(self, gold: list[str], record: dict | None = None) -> str:
        return " ".join(_sentence(p) for p in gold)


class EndpointAnnotator:
    """A VLM behind an OpenAI-compatible endpoint; it sees `frames` frames of the record's video (uniform over its
    clip, at most `max_side` pixels), as the paper's annotator sees X_v (Eqs. 10 and 13). `frames=0` sends none."""

    def __init__(self, client: ChatEndpoint, frames: int = 8, max_side: int = 448):
        self.client, self.name, self.frames, self.max_side = client, client.name, frames, max_side
        self._cache: tuple[str, list] | None = None  # the last record's frames: socratic and description share them

    def _images(self, record: dict | None) -> list:
        if not self.frames or not record or not record.get("video"):
            return []
        from envs.video import VideoDecodeError, read_video

        if self._cache is None or self._cache[0] != record["id"]:
            try:
                video = read_video(record["video"], self.frames, record.get("clip"), self.max_side)
            except VideoDecodeError as e:
                raise ValueError(f"video_unreadable: {e}") from None
            self._cache = (record["id"], list(video.frames))
        return self._cache[1]

    def socratic(self, gold: list[str], partial: list[str], record: dict | None = None) -> list[dict[str, str]]:
        prompt = load_prompt("gps_annotator_socratic.txt").format(
            gold_points=numbered(gold), annotated_points=numbered(partial)
        )
        pairs = parse_qa(self.client.chat([{"role": "user", "content": prompt}], images=self._images(record)))
        if not pairs:
            raise ValueError("annotator_unparsable: no 'Q: ... / A: ...' pair in the Socratic reply")
        return pairs

    def description(self, gold: list[str], record: dict | None = None) -> str:
        prompt = load_prompt("gps_annotator_description.txt").format(gold_points=numbered(gold))
        text = self.client.chat([{"role": "user", "content": prompt}], images=self._images(record)).strip()
        if not text:
            raise ValueError("annotator_unparsable: empty description")
        return text


def _record(base: dict, role: str, suffix: str, prompt: str, target: str) -> dict:
    meta = {**base.get("meta", {}), "role": role, "source_id": base["id"]}
    return {
        **base,
        "id": f"{base['id']}-{suffix}",
        "prompt": prompt,
        "answer": target,
        "chain": [target],
        "meta": meta,
    }


def role_records(annotation: dict[str, Any], annotator: Any) -> list[dict]:
    """The role records of one describe annotation (see the module docstring); ValueError("reason: detail")."""
    errors = validate_record(annotation)
    if errors or annotation.get("task") != "describe":
        raise ValueError("bad_record: " + ("; ".join(errors) or f"task {annotation.get('task')!r} is not describe"))
    gold = [g.strip() for g in annotation["gold_points"] if g.strip()]
    meta = annotation.get("meta", {})
    partial = meta.get("annotated_gold_points") or gold[:-1]  # an extraction that misses the last point
    out = [_record(annotation, "gold_points", "gpe", PROMPTS["gold_points"], "Gold points:\n" + numbered(gold))]
    out.append(
        _record(annotation, "validation", "gpv-yes", PROMPTS["validation"].format(points=numbered(gold)), "yes")
    )
    qa: list[dict[str, str]] = []
    if partial and set(partial) != set(gold) and meta.get("annotated_valid") is True:
        # the annotator judged the extraction sufficient for the label (GPS Eq. 5): a "yes", no Socratic pairs
        prompt = PROMPTS["validation"].format(points=numbered(partial))
        out.append(_record(annotation, "validation", "gpv-ann-yes", prompt, "yes"))
    elif partial and set(partial) != set(gold):
        qa = meta.get("socratic") or annotator.socratic(gold, partial, annotation)
        points = numbered(partial)
        out.append(_record(annotation, "validation", "gpv-no", PROMPTS["validation"].format(points=points), "no"))
        socratic = "\n".join(f"Q: {p['q']}\nA: {p['a']}" for p in qa)
        out.append(_record(annotation, "socratic", "sqr", PROMPTS["socratic"].format(points=points), socratic))
    description = meta.get("description") or annotator.description(gold, annotation)
    prompt = PROMPTS["description"].format(points=numbered(gold), qa=qa_text(qa))
    out.append(_record(annotation, "description", "des", prompt, description))
    return out


def build(
    records_path: str | Path, out: str | Path, annotator: Any, resume: bool = True, progress: bool = True
) -> dict:
    return build_resumable(
        records_path, out, lambda rec: role_records(rec, annotator), "GPS roles", resume=resume, progress=progress
    )


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--records", required=True, help="input JSONL of describe records (gold_points)")
    ap.add_argument("--out", required=True, help="output JSONL, four role records per annotation")
    ap.add_argument("--annotator", default="template", help="'template' or an OpenAI-compatible base URL (.../v1)")
    ap.add_argument("--annotator-model", default="Qwen2.5-VL-72B-Instruct")
    ap.add_argument("--api-key-env", default="OPENAI_API_KEY", help="environment variable holding the API key")
    ap.add_argument("--frames", type=int, default=8, help="frames the endpoint annotator sees (0: none)")
    ap.add_argument("--max-side", type=int, default=448, help="long side of those frames, in pixels")
    ap.add_argument("--no-resume", action="store_true")
    args = ap.parse_args(argv)
    annotator = (
        TemplateAnnotator()
        if args.annotator == "template"
        else EndpointAnnotator(
            ChatEndpoint(args.annotator, model=args.annotator_model, api_key_env=args.api_key_env),
            frames=args.frames,
            max_side=args.max_side,
        )
    )
    summary = build(args.records, args.out, annotator, resume=not args.no_resume)
    print_summary("gps_roles", summary)
    return summary


if __name__ == "__main__":
    main()


def embedded_sft_records(records_path: str | Path, out_dir: Path, rollout: Any = None) -> Path:
    """The SFT recipes' embedded default: describe annotations from the ovar records of `records_path` (their
    sub-motions and label as gold points), then the four roles by the template annotator."""
    from common.schema import load_records, write_records

    annotations = Path(out_dir) / "describe.jsonl"
    write_records(annotations, [describe_from_ovar(r) for r in load_records(records_path)])
    out = Path(out_dir) / "gps_roles.jsonl"
    summary = build(annotations, out, TemplateAnnotator(), progress=False)
    roles: dict[str, int] = {}
    for line in out.read_text().splitlines():
        role = json.loads(line)["meta"]["role"]
        roles[role] = roles.get(role, 0) + 1
    print(f"[gps] {summary['kept_records']} role records from {summary['input_records']} annotations: {roles}")
    return out
