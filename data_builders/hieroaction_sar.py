"""HieroAction SFT targets: Stepwise Action Reasoning (SAR) chains written from `aqa` annotations by templates.

No teacher is needed: everything the target states is in the annotation. For each `aqa` record the target is

    <look> ... the setting, the number of phases and the clip length ... </look>
    <recognition> Phase 1: take off, 0.00-0.40 s. Observation: ... Conclusion: ... </recognition>
    <assessment> take off: difficulty ..., score ... (per phase), then the whole action </assessment>
    <answer>{"action": ..., "sub_actions": [{"name", "start", "end"}, ...], "difficulty": ..., "score": ...}</answer>

which is exactly what `rewards.hieroaction` parses (every reward of the HieroAction mix gives it full marks).
The per-phase difficulty and score are the action's (annotations rarely have per-phase ones; they are stated
per phase so the assessment reads as the paper's judgement per step). Kept records are the input record plus
`chain` (one assistant turn) for `recipes/hieroaction_sft.py`.

    python -m data_builders.hieroaction_sar --records aqa_train.jsonl --out sar/aqa_train_sar.jsonl

Dropped, with a counted reason: `bad_record` (not an aqa record, or the schema fails), `no_phases` (empty
sub_actions), `too_long` (more tokens than `--max-tokens`). A rerun resumes after the last record written.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from common.schema import validate_record
from data_builders.endpoint import (
    build_resumable,
    print_summary,
)

MAX_TOKENS = 3072
"""Targets longer than this are dropped: HieroAction's output budget, "a maximum output length of 3072 tokens"
(Implementation Details), which the SFT and GRPO stages share: a longer target could never be generated."""


def _num(x: float) -> float:
    return round(float(x), 3)


def sar_answer(record: dict[str, Any]) -> dict[str, Any]:
    """The answer object of an aqa record: action, timed sub-actions, difficulty, score.

    >>> rec = {"label": "dive", "sub_actions": [{"name": "entry", "start": 1.2, "end": 1.5}], "difficulty": 3.2,
    ...        "score": 81.5}
    >>> sar_answer(rec)
    {'action': 'dive', 'sub_actions': [{'name': 'entry', 'start': 1.2, 'end': 1.5}], 'difficulty': 3.2, 'score': 81.5}
    """
    subs = [{"name": s["name"], "start": _num(s["start"]), "end": _num(s["end"])} for s in record["sub_actions"]]
    action = record.get("label") or record.get("meta", {}).get("action") or "action"
    difficulty, score = _num(record["difficulty"]), _num(record["score"])
    return {"action": action, "sub_actions": subs, "difficulty": difficulty, "score": score}


def _quality(record: dict[str, Any]) -> str:
    lo, hi = record["score_range"]
    share = (float(record["score"]) - lo) / (hi - lo)
    return "excellent" if share >= 0.85 else "good" if share >= 0.6 else "fair" if share >= 0.35 else "poor"


def brief_sar_target(record: dict[str, Any]) -> str:
    """The four SAR blocks in one line each: the phases in order (their times are in the answer), one judgement,
    the answer. Under half of `sar_target`'s tokens, for a tiny model's cold start on a CPU (the embedded GRPO
    default).

    >>> rec = {"label": "squat", "sub_actions": [{"name": "bend knees", "start": 0.0, "end": 1.0},
    ...        {"name": "stand up", "start": 1.0, "end": 2.0}], "difficulty": 2.0, "score": 70.0,
    ...        "score_range": [0.0, 100.0]}
    >>> print(brief_sar_target(rec).split("<answer>")[0])
    <look>2 phases, 2.00 s.</look>
    <recognition>bend knees; stand up</recognition>
    <assessment>good: difficulty 2.0, score 70.0.</assessment>
    <BLANKLINE>
    """
    answer = sar_answer(record)
    subs = answer["sub_actions"]
    phases = "; ".join(s["name"] for s in subs)
    return (
        f"<look>{len(subs)} phases, {max(s['end'] for s in subs):.2f} s.</look>\n"
        f"<recognition>{phases}</recognition>\n"
        f"<assessment>{_quality(record)}: difficulty {answer['difficulty']}, score {answer['score']}.</assessment>\n"
        f"<answer>{json.dumps(answer)}</answer>"
    )


def sar_target(record: dict[str, Any]) -> str:
    """The four SAR blocks for an aqa record (see the module docstring).

    >>> rec = {"label": "squat", "sub_actions": [{"name": "bend knees", "start": 0.0, "end": 1.0},
    ...        {"name": "stand up", "start": 1.0, "end": 2.0}], "difficulty": 2.0, "score": 70.0,
    ...        "score_range": [0.0, 100.0]}
    >>> text = sar_target(rec)
    >>> text.split("</recognition>")[0].split("<recognition>")[1].strip().splitlines()[0]
    'Phase 1: bend knees, 0.00-1.00 s. Observation: bend knees. Conclusion: phase 1 of 2 done.'
    """
    answer = sar_answer(record)
    subs, n = answer["sub_actions"], len(answer["sub_actions"])
    end = max(s["end"] for s in subs)
    look = (
        f"A person performs one action in {n} phases over about {end:.2f} s; "
        f"the whole body is visible throughout the clip."
    )
    phases = [
        f"Phase {i}: {s['name']}, {s['start']:.2f}-{s['end']:.2f} s. Observation: {s['name']}. "
        f"Conclusion: phase {i} of {n} done."
        for i, s in enumerate(subs, 1)
    ]
    quality, diff, score = _quality(record), answer["difficulty"], answer["score"]
    steps = [f"{s['name']}: {quality}, difficulty {diff}, score {score}." for s in subs]
    overall = f"Overall the {answer['action']} is {quality}: difficulty {diff}, score {score}."
    return (
        f"<look>{look}</look>\n<recognition>\n" + "\n".join(phases) + "\n</recognition>\n"
        "<assessment>\n" + "\n".join(steps) + f"\n{overall}\n</assessment>\n"
        f"<answer>{json.dumps(answer)}</answer>"
    )


def build_record(
    record: dict[str, Any], max_tokens: int | None = None, count_tokens: Any = None, brief: bool = False
) -> dict:
    """The input record plus `chain` = [SAR target] (`brief_sar_target` with `brief`); raises
    ValueError("reason: detail") when it is dropped."""
    errors = validate_record(record)
    if errors or record.get("task") != "aqa":
        raise ValueError("bad_record: " + ("; ".join(errors) or f"task {record.get('task')!r} is not aqa"))
    if not record["sub_actions"]:
        raise ValueError("no_phases: sub_actions is empty")
    target = brief_sar_target(record) if brief else sar_target(record)
    if max_tokens and count_tokens and count_tokens(target) > max_tokens:
        raise ValueError(f"too_long: {count_tokens(target)} tokens > {max_tokens}")
    style = "template-brief" if brief else "template"
    return {**record, "chain": [target], "meta": {**record.get("meta", {}), "sar": style}}


def _token_counter():
    from tokenizers import Tokenizer

    from common.tiny_model import qwen_tokenizer_dir

    tok = Tokenizer.from_file(str(qwen_tokenizer_dir() / "tokenizer.json"))
    return lambda text: len(tok.encode(text).ids)


def build(
    records_path: str | Path,
    out: str | Path,
    max_tokens: int | None = MAX_TOKENS,
    resume: bool = True,
    progress: bool = True,
    brief: bool = False,
) -> dict:
    """Write SAR records for the aqa records of `records_path` to `out` (resumed when it exists); the summary."""
    count = _token_counter() if max_tokens else None
    return build_resumable(
        records_path,
        out,
        lambda rec: [build_record(rec, max_tokens, count, brief)],
        "SAR targets",
        resume=resume,
        progress=progress,
    )


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--records", required=True, help="input JSONL of aqa records")
    ap.add_argument("--out", required=True, help="output JSONL (records + chain); resumed when it exists")
    ap.add_argument(
        "--max-tokens",
        type=int,
        default=MAX_TOKENS,
        help=f"drop targets longer than this, the output budget of SFT and GRPO (default {MAX_TOKENS}, the paper's; "
        "0: no limit)",
    )
    ap.add_argument("--brief", action="store_true", help="one line per SAR block (brief_sar_target)")
    ap.add_argument("--no-resume", action="store_true")
    args = ap.parse_args(argv)
    summary = build(args.records, args.out, args.max_tokens or None, resume=not args.no_resume, brief=args.brief)
    print_summary("hieroaction_sar", summary)
    return summary


if __name__ == "__main__":
    main()


def embedded_sft_records(records_path: str | Path, out_dir: Path, rollout: Any) -> Path:
    """The SFT recipes' embedded default: SAR targets for the aqa records of `records_path`, within the response
    budget of `rollout` (a RolloutConfig)."""
    out = Path(out_dir) / "hieroaction_sar.jsonl"
    summary = build(records_path, out, max_tokens=rollout.max_response_tokens, progress=False)
    print(f"[sar] {summary['kept_records']}/{summary['input_records']} kept, dropped {summary['dropped']}")
    return out


def embedded_brief_records(records_path: str | Path, out_dir: Path, rollout: Any) -> Path:
    """The HieroAction GRPO recipe's cold start on the embedded default: brief SAR targets (`brief_sar_target`)
    for the aqa records of `records_path`, within the response budget of `rollout` (a RolloutConfig)."""
    out = Path(out_dir) / "hieroaction_sar_brief.jsonl"
    summary = build(records_path, out, max_tokens=rollout.max_response_tokens, progress=False, brief=True)
    print(f"[sar] {summary['kept_records']}/{summary['input_records']} kept, dropped {summary['dropped']}")
    return out
