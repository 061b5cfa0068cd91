"""Gold Points Sniper's staged inference (its "Prompting phase"): the policy model is walked through the four
reasoning stages it was fine-tuned on, each stage's output fed into the next stage's prompt.

    1. extract     "List the gold points of this video ..."                   -> gold points, one per line
    2. validate    "Are these gold points accurate and sufficient ...?"       -> yes / no
    3. question    only after a "no": "These gold points are not sufficient:
                   ... Ask yourself questions ... and answer them"           -> Q: ... / A: ... pairs
    4. describe    "Gold points: ... [Q/A pairs] Describe the person's ..."   -> the description that is scored

As in the paper (Sec. III, IV-A), one VLM plays every role: each stage is a prompt to the evaluated checkpoint, in
the eval actor's engine, on the record's video, with the run's system prompt, greedy by default. The prompts are
the SFT role prompts (`common.gps.ROLE_PROMPTS`, what `data_builders.gps_roles` trains on), so a fine-tuned model
is asked what it learned to answer. Only the evaluator that scores the final description is another model (the
`--judge`; the paper's is Llama-3.3-70B-Instruct).

Reading the replies: the points are the extraction's lines without numbering, bullets or a "Gold points:" header
(none read: the validation sees an empty list); the first "yes" or "no" of the validation decides, and a reply
with neither is taken as "no" (the questions can only add); the Q/A pairs are the "Q: ... / A: ..." lines of the
questioning reply (none read: the description prompt has no pairs). Selected with `python -m eval.run --gps-staged`
(a `describe` benchmark; each checkpoint is evaluated with the record's own prompt too, so one run gives the
paper's "+Finetuning" and "+Combined" rows, or for an untuned model its baseline and "+Prompting" rows).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from common.gps import ROLE_PROMPTS, numbered, parse_points, parse_qa, parse_yes_no, qa_text

STAGED = "gps:staged"  # the evaluation variant


def _ask(worker: Any, records: list[dict], prompts: list[str], sampling: Any) -> list[Any]:
    """One trajectory per record, each asked its prompt instead of the record's (same video, same settings)."""
    if not records:
        return []
    return worker.rollout([{**r, "prompt": p} for r, p in zip(records, prompts, strict=True)], 1, sampling)


def run_staged(worker: Any, records: list[dict], sampling: Any) -> tuple[list[Any], list[dict]]:
    """The four stages over `records` (one engine batch per stage); returns the description trajectory of each
    record (the extraction's, for a record whose video failed: no later stage runs) and what each stage wrote:
    {gold_points, points, validation, valid, socratic, qa, prompts: {validation, socratic, description},
    model_tokens}."""
    from rollout.worker import SAMPLE_ERRORS

    extracted = _ask(worker, records, [ROLE_PROMPTS["gold_points"]] * len(records), sampling)
    live = [i for i, t in enumerate(extracted) if t.finish_reason not in SAMPLE_ERRORS]
    info: dict[int, dict] = {i: {"gold_points": extracted[i].final_text} for i in range(len(records))}
    stages: dict[int, list] = {i: [extracted[i]] for i in live}
    for i in live:
        info[i].update(points=parse_points(extracted[i].final_text), socratic=None, qa=[], prompts={})

    def stage(name: str, which: list[int], prompt_of: Callable[[dict], str]) -> list[tuple[int, Any]]:
        prompts = [prompt_of(info[i]) for i in which]
        for i, p in zip(which, prompts):
            info[i]["prompts"][name] = p
        done = list(zip(which, _ask(worker, [records[i] for i in which], prompts, sampling)))
        for i, t in done:
            stages[i].append(t)
        return done

    for i, t in stage("validation", live, lambda x: ROLE_PROMPTS["validation"].format(points=numbered(x["points"]))):
        info[i].update(validation=t.final_text, valid=parse_yes_no(t.final_text))
    refine = [i for i in live if info[i]["valid"] is not True]  # "no", or neither word
    for i, t in stage("socratic", refine, lambda x: ROLE_PROMPTS["socratic"].format(points=numbered(x["points"]))):
        info[i].update(socratic=t.final_text, qa=parse_qa(t.final_text))
    final = list(extracted)
    for i, t in stage("description", live, _description_prompt):
        final[i] = t
        info[i]["model_tokens"] = sum(s.num_model_tokens for s in stages[i])
    return final, [info[i] for i in range(len(records))]


def _description_prompt(info: dict) -> str:
    return ROLE_PROMPTS["description"].format(points=numbered(info["points"]), qa=qa_text(info["qa"]))
