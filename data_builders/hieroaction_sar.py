"""HieroAction SFT targets: Stepwise Action Reasoning (SAR) chains written from `aqa` annotations by templates.

No teacher is needed: everything the target states is in the annotation. For each `aqa` record the target is

    <look> ... who performs (by meta.dataset), the number of phases and the clip length ... </look>
    <recognition> Phase 1: take off, 0.00-0.40 s. Observation: ... Conclusion: ... </recognition>
    <assessment> take off: difficulty ..., score ... (per phase), then the whole action </assessment>
    <answer>{"action": ..., "sub_actions": [{"name", "start", "end"}, ...], "difficulty": ..., "score": ...}</answer>

which is exactly what `rewards.hieroaction` parses (every reward of the HieroAction mix gives it full marks).
The per-phase difficulty and score are the action's (annotations rarely have per-phase ones; they are stated
per phase so the assessment reads as the paper's judgement per step). Kept records are the input record plus
`chain` (one assistant turn) for `recipes/hieroaction_sft.py`.

    python -m data_builders.hieroaction_sar --records aqa_train.jsonl --out sar/aqa_train_sar.jsonl

`--style` picks the target form of HieroAction's Table 4 ablation: `sar` (the default, above), `cot`
(think-then-answer: the same facts as one `<think>` paragraph, then the same `<answer>`) or `direct` (the
`<answer>` alone). The answer JSON is the same in all three. For `cot` and `direct` the record's prompt is restyled
to ask for that form (`style_prompt`), so run the builder on the test records too (`--max-tokens 0`) to evaluate a
checkpoint on the prompts it was trained on; `meta.sar_style` names the style.

`--rewriter URL --rewriter-model NAME [--api-key-env VAR]` has an LLM behind an OpenAI-compatible endpoint rewrite
the prose of each SAR target's `<look>`, `<recognition>` and `<assessment>` blocks (`data_builders.sar_rewrite`), as
the paper has its chains polished by an LLM; the `<answer>` block stays the template's, byte for byte. A rewrite
that fails or is refused keeps the template target for that record (`meta.sar_rewritten` false, the reason in
`meta.sar_rewrite_failure`), counted at the end; `--rewriter-concurrency` requests are in flight at once.

Dropped, with a counted reason: `bad_record` (not an aqa record, or the schema fails), `no_phases` (empty
sub_actions), `too_long` (more tokens than `--max-tokens`), `prompt_not_sar` (a cot or direct target for a prompt
without the SAR reply instruction to restyle). A rerun resumes after the last record written.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from common.sample_data import AQA_REPLY
from common.schema import validate_record
from data_builders.endpoint import EndpointError, build_resumable, print_summary
from data_builders.sar_rewrite import SarRewriter, print_rewrite, rewrite_summary, rewriter_client

MAX_TOKENS = 3072
"""Targets longer than this are dropped: HieroAction's output budget, "a maximum output length of 3072 tokens"
(Implementation Details), which the SFT and GRPO stages share: a longer target could never be generated."""


STYLES = ("sar", "cot", "direct")
"""Target forms (`--style`): HieroAction's Table 4 ablation, Stepwise Action Reasoning against "CoT"
(think-then-answer) and "w/o CoT" (the answer alone)."""


PERFORMERS = {
    "finediving": ("A diver", "dive"),
    "finefs": ("A figure skater", "program"),
    "logo": ("A team of eight artistic swimmers", "routine"),  # LOGO: "a team of eight athletes" per video
    "sample": ("A person", "action"),
}
"""Who performs, and what, in the records of each `meta.dataset` (the aqa builders' names), for `look_sentence`."""


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


def look_sentence(record: dict[str, Any], n: int, end: float) -> str:
    """The `<look>` sentence: who performs what (`PERFORMERS` by `meta.dataset`; a dataset not listed names no
    performer), in how many phases, over how long. Nothing the annotation does not say (not how much is in view).

    >>> look_sentence({"meta": {"dataset": "logo"}}, 12, 171.2)
    'A team of eight artistic swimmers performs one routine in 12 phases over about 171.20 s.'
    >>> look_sentence({"meta": {"dataset": "my_gym"}}, 3, 4.0)
    'The clip shows one action in 3 phases over about 4.00 s.'
    """
    meta = record.get("meta") if isinstance(record.get("meta"), dict) else {}
    performer = PERFORMERS.get(str(meta.get("dataset", "")).lower())
    if performer is None:
        return f"The clip shows one action in {n} phases over about {end:.2f} s."
    who, what = performer
    return f"{who} performs one {what} in {n} phases over about {end:.2f} s."


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
    look = look_sentence(record, n, end)
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


def cot_target(record: dict[str, Any], brief: bool = False) -> str:
    """The think-then-answer target of Table 4's "CoT" row: the facts `sar_target` states (or, with `brief`,
    `brief_sar_target`), flattened into one `<think>` paragraph, then the same `<answer>`.

    >>> rec = {"label": "squat", "sub_actions": [{"name": "bend knees", "start": 0.0, "end": 1.0},
    ...        {"name": "stand up", "start": 1.0, "end": 2.0}], "difficulty": 2.0, "score": 70.0,
    ...        "score_range": [0.0, 100.0]}
    >>> print(cot_target(rec, brief=True).split("<answer>")[0])
    <think>2 phases, 2.00 s: bend knees; stand up. good: difficulty 2.0, score 70.0.</think>
    <BLANKLINE>
    """
    answer = sar_answer(record)
    subs, n = answer["sub_actions"], len(answer["sub_actions"])
    end = max(s["end"] for s in subs)
    quality, diff, score = _quality(record), answer["difficulty"], answer["score"]
    if brief:
        phases = "; ".join(s["name"] for s in subs)
        think = f"{n} phases, {end:.2f} s: {phases}. {quality}: difficulty {diff}, score {score}."
    else:
        steps = ", then ".join(f"{s['name']} from {s['start']:.2f} to {s['end']:.2f} s" for s in subs)
        think = (
            f"{look_sentence(record, n, end)} The phases are {steps}. Each phase is {quality}, so the "
            f"{answer['action']} as a whole is {quality}: difficulty {diff}, score {score}."
        )
    return f"<think>{think}</think>\n<answer>{json.dumps(answer)}</answer>"


def direct_target(record: dict[str, Any]) -> str:
    """The answer-only target of Table 4's "w/o CoT" row: `<answer>` and the JSON `sar_target` ends with.

    >>> rec = {"label": "squat", "sub_actions": [{"name": "bend knees", "start": 0.0, "end": 1.0}],
    ...        "difficulty": 2.0, "score": 70.0, "score_range": [0.0, 100.0]}
    >>> direct_target(rec)
    '<answer>{"action": "squat", "sub_actions": [{"name": "bend knees", "start": 0.0, "end": 1.0}], \
"difficulty": 2.0, "score": 70.0}</answer>'
    """
    return f"<answer>{json.dumps(sar_answer(record))}</answer>"


def target(record: dict[str, Any], style: str = "sar", brief: bool = False) -> str:
    """The target of `style` (one of `STYLES`) for an aqa record; `brief` shortens the sar and cot reasoning."""
    if style == "sar":
        return brief_sar_target(record) if brief else sar_target(record)
    if style == "cot":
        return cot_target(record, brief)
    if style == "direct":
        return direct_target(record)
    raise ValueError(f"target style must be one of {', '.join(STYLES)}, got {style!r}")


def style_prompt(prompt: str, style: str) -> str:
    """`prompt` with its SAR reply instruction (`common.sample_data.AQA_REPLY["sar"]`, which every aqa builder's
    prompt holds) replaced by that of `style`, so that the prompt asks for the form the target has. Raises
    ValueError("prompt_not_sar: ...") when a cot or direct prompt is asked of a prompt without it.

    >>> style_prompt("Assess. " + AQA_REPLY["sar"] + "<answer> JSON </answer>.", "direct")
    'Assess. Reply with one block, without reasoning: <answer> JSON </answer>.'
    """
    if style == "sar":
        return prompt
    if AQA_REPLY["sar"] not in prompt:
        raise ValueError(f"prompt_not_sar: the prompt lacks the SAR reply instruction to restyle as {style}")
    return prompt.replace(AQA_REPLY["sar"], AQA_REPLY[style], 1)


def build_record(
    record: dict[str, Any],
    max_tokens: int | None = None,
    count_tokens: Any = None,
    brief: bool = False,
    style: str = "sar",
    rewriter: SarRewriter | None = None,
) -> dict:
    """The input record plus `chain` = [the target of `style`] (`target`, its prose rewritten by `rewriter` when
    given: `_rewrite`), its prompt asking for that form (`style_prompt`); raises ValueError("reason: detail") when
    it is dropped."""
    errors = validate_record(record)
    if errors or record.get("task") != "aqa":
        raise ValueError("bad_record: " + ("; ".join(errors) or f"task {record.get('task')!r} is not aqa"))
    if not record["sub_actions"]:
        raise ValueError("no_phases: sub_actions is empty")
    text = target(record, style, brief)
    too_long = (lambda t: count_tokens(t) > max_tokens) if max_tokens and count_tokens else (lambda t: False)
    if too_long(text):
        raise ValueError(f"too_long: {count_tokens(text)} tokens > {max_tokens}")
    meta = {**record.get("meta", {}), "sar": "template-brief" if brief else "template", "sar_style": style}
    if rewriter is not None:
        text, rewrite_meta = _rewrite(rewriter, text, too_long)
        meta |= rewrite_meta
    return {**record, "prompt": style_prompt(record["prompt"], style), "chain": [text], "meta": meta}


def _rewrite(rewriter: SarRewriter, text: str, too_long: Any) -> tuple[str, dict[str, Any]]:
    """The rewritten SAR target, or the template `text` when the rewrite is refused or over the budget; and what
    the record's meta says about it (`sar_rewritten`, `sar_rewrite_failure`, `sar_rewriter`)."""
    new, failure = rewriter.rewrite(text)
    if failure is None and too_long(new):
        new, failure = text, "too_long"
    meta = {"sar_rewritten": failure is None, "sar_rewriter": rewriter.client.name}
    return new, meta | ({"sar_rewrite_failure": failure} if failure else {})


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
    style: str = "sar",
    rewriter: SarRewriter | None = None,
    workers: int = 1,
) -> dict:
    """Write the `style` targets of the aqa records of `records_path` to `out` (resumed when it exists), SAR ones
    rewritten by `rewriter` when given, `workers` records at a time; the summary (with `rewrite`:
    `sar_rewrite.rewrite_summary` of the whole output, when rewriting)."""
    if style not in STYLES:
        raise ValueError(f"target style must be one of {', '.join(STYLES)}, got {style!r}")
    if rewriter is not None and style != "sar":
        raise ValueError(f"the rewriter rewrites the SAR blocks: use it with style sar, not {style!r}")
    count = _token_counter() if max_tokens else None
    summary = build_resumable(
        records_path,
        out,
        lambda rec: [build_record(rec, max_tokens, count, brief, style, rewriter)],
        "SAR targets",
        resume=resume,
        progress=progress,
        workers=workers,
    )
    if rewriter is not None:
        summary["rewrite"] = rewrite_summary(out)
        Path(str(out) + ".summary.json").write_text(json.dumps(summary, indent=1))
    return summary


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], prog="python -m data_builders.hieroaction_sar")
    ap.add_argument("--records", required=True, help="input JSONL of aqa records")
    ap.add_argument("--out", required=True, help="output JSONL (records + chain); resumed when it exists")
    ap.add_argument(
        "--max-tokens",
        type=int,
        default=MAX_TOKENS,
        help=f"drop targets longer than this, the output budget of SFT and GRPO (default {MAX_TOKENS}, the paper's; "
        "0: no limit)",
    )
    ap.add_argument(
        "--style",
        choices=STYLES,
        default="sar",
        help="target form: sar (the four SAR blocks, default), cot (<think> then <answer>, Table 4's CoT row), "
        "direct (<answer> alone, Table 4's w/o CoT row); cot and direct also restyle the record's prompt",
    )
    ap.add_argument("--brief", action="store_true", help="one line of reasoning per block (sar and cot styles)")
    ap.add_argument("--rewriter", help="an OpenAI-compatible base URL (.../v1) of an LLM that rewrites the SAR prose")
    ap.add_argument("--rewriter-model", help="the model name the rewriter endpoint serves (required with --rewriter)")
    ap.add_argument("--api-key-env", default="OPENAI_API_KEY", help="environment variable holding the rewriter's key")
    ap.add_argument("--rewriter-timeout", type=float, default=120.0, help="seconds per rewrite request")
    ap.add_argument("--rewriter-concurrency", type=int, default=8, help="rewrite requests in flight at once")
    ap.add_argument("--no-resume", action="store_true")
    return ap


def main(argv: list[str] | None = None) -> dict:
    ap = parser()
    args = ap.parse_args(argv)
    rewriter = None
    if args.rewriter:
        if not args.rewriter_model or args.style != "sar" or args.rewriter_concurrency < 1:
            ap.error("--rewriter needs --rewriter-model, --style sar and a --rewriter-concurrency of 1 or more")
        client = rewriter_client(
            args.rewriter, args.rewriter_model, args.api_key_env, args.rewriter_timeout, args.max_tokens or MAX_TOKENS
        )
        rewriter = SarRewriter(client)
        try:
            rewriter.check()
        except (EndpointError, ValueError) as err:
            print(f"error: the rewriter endpoint does not answer: {err}", file=sys.stderr)
            raise SystemExit(2) from None
    summary = build(
        args.records,
        args.out,
        args.max_tokens or None,
        resume=not args.no_resume,
        brief=args.brief,
        style=args.style,
        rewriter=rewriter,
        workers=args.rewriter_concurrency if rewriter else 1,
    )
    print_summary("hieroaction_sar", summary)
    if rewriter is not None:
        print_rewrite(summary["rewrite"], client.name)
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
