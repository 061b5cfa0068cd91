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
(none read: the later prompts are their no-points forms, `common.gps.NO_POINTS_PROMPTS`); the first "yes" or "no"
of the validation decides, and a reply with neither is taken as "no" (the questions can only add); the Q/A pairs
are the "Q: ... / A: ..." lines of the questioning reply (none read: the description prompt has no pairs).
Selected with `python -m eval.run --gps-staged` (a `describe` benchmark; each checkpoint is evaluated with the
record's own prompt too, so one run gives the paper's "+Finetuning" and "+Combined" rows, or for an untuned model
its baseline and "+Prompting" rows).

The paper's Table III drops one stage at inference only, from a GPS-tuned model: `--gps-without NAMES` (any
comma-separated subset of gpe, gpv, sqr; repeatable, one variant each, named `gps:staged-gpe`, ...):

    gpe   no extraction: the validation decides from the video alone, and the questions and the description have
          no points either (the no-points prompts)
    gpv   no validation: the questioning stage runs for every record, as after a "no"
    sqr   no questioning: the validation still runs, and every description prompt has the points without pairs
"""

from __future__ import annotations

from typing import Any

from common.gps import NO_POINTS_PROMPTS, ROLE_PROMPTS, numbered, parse_points, parse_qa, parse_yes_no, qa_text

STAGED = "gps:staged"  # the evaluation variant with every stage; one without some is "gps:staged-gpe-sqr"
# the stages Table III drops, in the pipeline's order; the description is always asked
ABLATABLE = {
    "gpe": "gold points extraction",
    "gpv": "gold points validation",
    "sqr": "selective questioning refinement",
}


def parse_without(text: str, where: str = "--gps-without") -> tuple[str, ...]:
    """The stages named in `text` (comma-separated, any case), in the pipeline's order; ValueError naming `where`
    and the allowed names for an unknown or missing name.

    >>> parse_without("SQR, gpe")
    ('gpe', 'sqr')
    """
    names = [n.strip().lower() for n in text.split(",")]
    allowed = ", ".join(f"{k} ({v})" for k, v in ABLATABLE.items())
    unknown = [n for n in names if n not in ABLATABLE]
    if unknown:
        what = "an empty name" if "" in unknown else f"unknown stage(s) {', '.join(map(repr, unknown))}"
        raise ValueError(f"{where} {text!r}: {what}; allowed, comma-separated: {allowed}")
    return tuple(k for k in ABLATABLE if k in names)


def variant_name(without: tuple[str, ...] = ()) -> str:
    """The evaluation variant of the staged inference without the stages `without`.

    >>> variant_name(), variant_name(("gpe", "sqr"))
    ('gps:staged', 'gps:staged-gpe-sqr')
    """
    return STAGED + "".join(f"-{k}" for k in without)


def staged_without(variant: str) -> tuple[str, ...] | None:
    """The stages a staged-inference variant drops (() for all four stages); None for a variant that is not one.

    >>> staged_without("gps:staged"), staged_without("gps:staged-gpv"), staged_without("descriptor")
    ((), ('gpv',), None)
    """
    if variant == STAGED:
        return ()
    if variant.startswith(STAGED + "-"):
        return parse_without(variant[len(STAGED) + 1 :].replace("-", ","), where=f"variant {variant!r}, stages")
    return None


def variant_label(variant: str) -> str:
    """How a results table names a staged-inference variant.

    >>> variant_label("gps:staged"), variant_label("gps:staged-gpe-sqr")
    ('GPS staged inference', 'GPS staged inference w/o GPE, SQR')
    """
    without = staged_without(variant) or ()
    return "GPS staged inference" + (" w/o " + ", ".join(k.upper() for k in without) if without else "")


def _ask(worker: Any, records: list[dict], prompts: list[str], sampling: Any) -> list[Any]:
    """One trajectory per record, each asked its prompt instead of the record's (same video, same settings)."""
    if not records:
        return []
    return worker.rollout([{**r, "prompt": p} for r, p in zip(records, prompts, strict=True)], 1, sampling)


class _Stages:
    """The staged inference's state over a batch: what each record's stages wrote (`info`), their trajectories, and
    the records still going (a record whose video failed leaves after the stage it failed in)."""

    def __init__(self, worker: Any, records: list[dict], sampling: Any, without: tuple[str, ...]):
        self.worker, self.records, self.sampling = worker, records, sampling
        self.live = list(range(len(records)))
        self.trajs: list[list] = [[] for _ in records]
        blank = {"gold_points": None, "points": [], "validation": None, "valid": None, "socratic": None, "qa": []}
        self.info = [{"without": list(without), **blank, "prompts": {}} for _ in records]

    def ask(self, name: str, which: list[int], prompt_of: Any) -> list[tuple[int, Any]]:
        """One engine batch: record i of `which` asked `prompt_of(info[i])`; the prompt goes into info's `prompts`
        and the reply's text under `name` (but the description's, which is the trajectory); returns the (index,
        trajectory) of the records whose video did not fail."""
        from rollout.worker import SAMPLE_ERRORS

        which = [i for i in which if i in self.live]
        prompts = [prompt_of(self.info[i]) for i in which]
        done = list(zip(which, _ask(self.worker, [self.records[i] for i in which], prompts, self.sampling)))
        for (i, t), p in zip(done, prompts):
            self.info[i]["prompts"][name] = p
            self.trajs[i].append(t)
            if name != "description":
                self.info[i][name] = t.final_text
        failed = {i for i, t in done if t.finish_reason in SAMPLE_ERRORS}
        self.live = [i for i in self.live if i not in failed]
        return [(i, t) for i, t in done if i not in failed]

    def finish(self) -> tuple[list[Any], list[dict]]:
        """Each record's last trajectory (its description's, or the one whose video failed) and its info with
        `model_tokens`, every stage's."""
        for info, trajs in zip(self.info, self.trajs):
            info["model_tokens"] = sum(t.num_model_tokens for t in trajs)
        return [trajs[-1] for trajs in self.trajs], self.info


def run_staged(
    worker: Any, records: list[dict], sampling: Any, without: tuple[str, ...] = ()
) -> tuple[list[Any], list[dict]]:
    """The four stages over `records` (one engine batch per stage), less the stages `without` drops (names of
    `ABLATABLE`); returns the description trajectory of each record (or the trajectory whose video failed: no later
    stage runs) and what each stage wrote: {without, gold_points, points, validation, valid, socratic, qa,
    prompts: {stage: prompt}, model_tokens}, None / [] for a stage that did not run."""
    unknown = set(without) - set(ABLATABLE)
    if unknown:
        raise ValueError(f"run_staged: unknown stage(s) {sorted(unknown)} in without; allowed: {list(ABLATABLE)}")
    s = _Stages(worker, records, sampling, tuple(k for k in ABLATABLE if k in without))
    if "gpe" not in without:
        for i, t in s.ask("gold_points", s.live, lambda x: ROLE_PROMPTS["gold_points"]):
            s.info[i]["points"] = parse_points(t.final_text)
    if "gpv" not in without:
        for i, t in s.ask("validation", s.live, lambda x: _prompt("validation", x)):
            s.info[i]["valid"] = parse_yes_no(t.final_text)
    if "sqr" not in without:
        refine = [i for i in s.live if s.info[i]["valid"] is not True]  # "no", neither word, or not validated
        for i, t in s.ask("socratic", refine, lambda x: _prompt("socratic", x)):
            s.info[i]["qa"] = parse_qa(t.final_text)
    s.ask("description", s.live, lambda x: _prompt("description", x))
    return s.finish()


def _prompt(role: str, info: dict) -> str:
    """A later stage's prompt: the trained role prompt with the points (and pairs), or its no-points form."""
    template = ROLE_PROMPTS[role] if info["points"] else NO_POINTS_PROMPTS[role]
    return template.format(points=numbered(info["points"]), qa=qa_text(info["qa"]))
