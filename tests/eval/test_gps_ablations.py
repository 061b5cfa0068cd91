"""GPS Table III: the staged inference without gold points extraction (gpe), validation (gpv) or selective
questioning refinement (sqr). Replies are written by hand (the project's ScriptedEngine, named a fake: nothing is
sampled) and keyed by the stage the prompt asks for, so which stages run, in how many engine batches, and what
each later prompt holds are checked against prompts written out here by hand; and the `--gps-without` flag."""

from __future__ import annotations

import doctest
import json

import pytest

# the description's trained closing sentence, the whole prompt when there are neither points nor pairs
DESCRIBE = "Describe the person's action, intention and context in detail."
ASK_VIDEO = (
    "Is what the video shows sufficient to understand the person's action, intention and context? Answer yes or no."
)
ASK_SELF = "Ask yourself questions about the person's action, intention and context, and answer them from the video."
QA_TEA = "Q: What does he drink?\nA: Tea, from the cup."
QA_ARM = "Q: Which arm?\nA: The left one."
POINTS_ARM = "1. the arm rises\n2. the legs stay still"
POINTS_MAN = "1. the man sits\n2. he holds a cup"


def stage_of(user_text: str) -> str:
    for key, words in (("gpe", "List the gold points"), ("gpv", "Answer yes or no."), ("sqr", "Ask yourself")):
        if words in user_text:
            return key
    assert user_text.endswith(DESCRIBE), user_text
    return "des"


@pytest.fixture(scope="module")
def staged(tiny_model_dir):
    """run(without, replies) -> (trajectories, infos, stages asked in order, engine batches) on two sample records,
    each stage's replies taken in record order from `replies[stage]`."""
    from transformers import AutoProcessor

    from common.sample_data import build_sample_data, default_sample_dir
    from common.schema import load_records
    from eval.gps import run_staged
    from rollout.config import RolloutConfig
    from rollout.engine import SamplingParams
    from rollout.scripted_engine import ScriptedEngine
    from rollout.worker import RolloutWorker

    tok = AutoProcessor.from_pretrained(tiny_model_dir).tokenizer
    engine = ScriptedEngine(tok, [])
    worker = RolloutWorker(RolloutConfig(num_frames=4, max_side=112), tiny_model_dir, engine=engine)
    records = load_records(build_sample_data(default_sample_dir())["describe_eval"])[:2]

    def run(without, replies, extra_records=()):
        queues, asked = {k: list(v) for k, v in replies.items()}, []

        def reply(request, turn):
            user = tok.decode(request.prompt_ids).split("<|im_start|>user")[-1].split("<|im_end|>")[0]
            asked.append(stage_of(user))
            return queues[asked[-1]].pop(0)

        engine.script, engine.calls = reply, 0
        trajs, infos = run_staged(worker, records + list(extra_records), SamplingParams(max_new_tokens=96), without)
        assert all(not q for q in queues.values()), f"replies left unused: {queues}"
        return trajs, infos, asked, engine.calls

    run.tokenizer, run.records = tok, records
    return run


EXTRACT = ["Gold points:\n1. the arm rises\n2) the legs stay still", "- the man sits\n- he holds a cup"]
VALIDATE = ["Yes, they are.", "No: what he drinks is missing."]
DESCRIBED = ["description of the arm", "description of the man"]


# (dropped stages, replies, stages asked in order, per record: prompts, valid, qa); worked out by hand
CASES = [
    (  # no points: the validation decides from the video alone; "no" sends record 1 to the questions
        ("gpe",),
        {"gpv": VALIDATE, "sqr": [QA_TEA], "des": DESCRIBED},
        ["gpv", "gpv", "sqr", "des", "des"],
        [
            ({"validation": ASK_VIDEO, "description": DESCRIBE}, True, []),
            (
                {"validation": ASK_VIDEO, "socratic": ASK_SELF, "description": f"{QA_TEA}\n{DESCRIBE}"},
                False,
                [{"q": "What does he drink?", "a": "Tea, from the cup."}],
            ),
        ],
    ),
    (  # no validation: both records are questioned, as after a "no"
        ("gpv",),
        {"gpe": EXTRACT, "sqr": [QA_ARM, QA_TEA], "des": DESCRIBED},
        ["gpe", "gpe", "sqr", "sqr", "des", "des"],
        [
            (
                {
                    "socratic": f"These gold points are not sufficient:\n{POINTS_ARM}\nAsk yourself questions about "
                    "what is missing or wrong, and answer them from the video.",
                    "description": f"Gold points:\n{POINTS_ARM}\n{QA_ARM}\n{DESCRIBE}",
                },
                None,
                [{"q": "Which arm?", "a": "The left one."}],
            ),
            (
                {
                    "socratic": f"These gold points are not sufficient:\n{POINTS_MAN}\nAsk yourself questions about "
                    "what is missing or wrong, and answer them from the video.",
                    "description": f"Gold points:\n{POINTS_MAN}\n{QA_TEA}\n{DESCRIBE}",
                },
                None,
                [{"q": "What does he drink?", "a": "Tea, from the cup."}],
            ),
        ],
    ),
    (  # no questioning: the "no" of record 1 is kept, and its description has its points only
        ("sqr",),
        {"gpe": EXTRACT, "gpv": VALIDATE, "des": DESCRIBED},
        ["gpe", "gpe", "gpv", "gpv", "des", "des"],
        [
            (
                {
                    "validation": "Are these gold points accurate and sufficient to understand the person's action, "
                    f"intention and context? Answer yes or no.\n{POINTS_ARM}",
                    "description": f"Gold points:\n{POINTS_ARM}\n{DESCRIBE}",
                },
                True,
                [],
            ),
            (
                {
                    "validation": "Are these gold points accurate and sufficient to understand the person's action, "
                    f"intention and context? Answer yes or no.\n{POINTS_MAN}",
                    "description": f"Gold points:\n{POINTS_MAN}\n{DESCRIBE}",
                },
                False,
                [],
            ),
        ],
    ),
    (  # neither points nor validation: every record questions itself about the video
        ("gpe", "gpv"),
        {"sqr": [QA_ARM, QA_TEA], "des": DESCRIBED},
        ["sqr", "sqr", "des", "des"],
        [
            (
                {"socratic": ASK_SELF, "description": f"{QA_ARM}\n{DESCRIBE}"},
                None,
                [{"q": "Which arm?", "a": "The left one."}],
            ),
            (
                {"socratic": ASK_SELF, "description": f"{QA_TEA}\n{DESCRIBE}"},
                None,
                [{"q": "What does he drink?", "a": "Tea, from the cup."}],
            ),
        ],
    ),
    (  # all three dropped: the bare description prompt, one batch
        ("gpe", "gpv", "sqr"),
        {"des": DESCRIBED},
        ["des", "des"],
        [({"description": DESCRIBE}, None, []), ({"description": DESCRIBE}, None, [])],
    ),
]


@pytest.mark.parametrize("without, replies, asked, expected", CASES, ids=["-".join(c[0]) for c in CASES])
def test_each_ablation_runs_its_stages_and_threads_their_outputs(staged, without, replies, asked, expected):
    trajs, infos, seen, batches = staged(without, replies)
    assert seen == asked and batches == len(dict.fromkeys(asked))  # one engine batch per stage that runs
    for i, (info, traj, (prompts, valid, qa)) in enumerate(zip(infos, trajs, expected, strict=True)):
        later = {k: v for k, v in info["prompts"].items() if k != "gold_points"}
        assert later == prompts and info["valid"] is valid and info["qa"] == qa
        assert info["without"] == list(without) and traj.final_text == DESCRIBED[i]
        assert ("gold_points" in info["prompts"]) is ("gpe" not in without)
        assert (info["gold_points"] is None) is ("gpe" in without) and (info["validation"] is None) is (valid is None)
    tok = staged.tokenizer
    if without == ("gpe",):  # model tokens are every stage's: the scripted replies of record 1, tokenised here
        replied = [VALIDATE[1], QA_TEA, DESCRIBED[1]]
        assert infos[1]["model_tokens"] == sum(len(tok.encode(r, add_special_tokens=False)) for r in replied)


def test_without_extraction_a_broken_video_fails_at_the_validation(staged, tmp_path):
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"not a video")
    extra = [{**staged.records[0], "id": "broken", "video": str(broken)}]
    replies = {"gpv": VALIDATE, "sqr": [QA_TEA], "des": DESCRIBED}
    trajs, infos, seen, _ = staged(("gpe",), replies, extra)
    assert seen == ["gpv", "gpv", "sqr", "des", "des"]  # the broken record never reached the engine
    bad = infos[2]
    assert trajs[2].finish_reason == "video_error" and bad["validation"] == trajs[2].final_text
    assert bad["valid"] is None and list(bad["prompts"]) == ["validation"]


def test_a_blank_extraction_gets_the_no_points_prompts(staged):
    replies = {"gpe": ["Gold points:\n", EXTRACT[1]], "gpv": VALIDATE, "sqr": [QA_TEA], "des": DESCRIBED}
    _, infos, seen, _ = staged((), replies)
    assert seen == ["gpe", "gpe", "gpv", "gpv", "sqr", "des", "des"]
    assert infos[0]["points"] == [] and infos[0]["prompts"]["validation"] == ASK_VIDEO
    assert infos[0]["prompts"]["description"] == DESCRIBE
    assert infos[1]["prompts"]["description"] == f"Gold points:\n{POINTS_MAN}\n{QA_TEA}\n{DESCRIBE}"


def test_stage_names_and_variants():
    import common.gps
    import eval.gps
    from eval.gps import parse_without, staged_without, variant_name

    assert doctest.testmod(eval.gps).failed == 0 and doctest.testmod(common.gps).failed == 0
    assert parse_without(" GPV ,gpe,gpe") == ("gpe", "gpv")
    for text, said in (("gpe,foo", "unknown stage(s) 'foo'"), ("", "an empty name"), ("sqr,", "an empty name")):
        with pytest.raises(ValueError) as e:
            parse_without(text)
        assert str(e.value).startswith(f"--gps-without {text!r}: {said}; allowed")
        assert "gpe (gold points extraction), gpv (gold points validation), sqr" in str(e.value)
    for without in ((), ("gpe",), ("gpv", "sqr"), ("gpe", "gpv", "sqr")):
        assert staged_without(variant_name(without)) == without
    assert variant_name(("gpe", "gpv", "sqr")) == "gps:staged-gpe-gpv-sqr"
    assert staged_without("localizer:oracle") is None and staged_without("gps:stagedx") is None


def test_gps_without_adds_one_variant_each(tmp_path):
    from eval.benchmarks import load_benchmark
    from eval.run import fineagent_variants, parse_args

    flags = ["--gps-staged", "--gps-without", "sqr", "--gps-without", "GPE", "--gps-without", "gpv,gpe"]
    args = parse_args(["--benchmark", "sample-describe", *flags, "--gps-without", "gpe"])
    variants = fineagent_variants(args, load_benchmark("sample-describe"))
    assert variants == ["", "gps:staged", "gps:staged-sqr", "gps:staged-gpe", "gps:staged-gpe-gpv"]


@pytest.mark.parametrize(
    "benchmark, value, said",
    [
        ("sample-describe", "gpe,questions", "--gps-without 'gpe,questions': unknown stage(s) 'questions'; allowed"),
        ("sample-aqa", "sqr", "--gps-without applies to describe benchmarks; sample-aqa is aqa"),
    ],
)
def test_gps_without_is_checked_before_anything_starts(tmp_path, tiny_model_dir, capsys, benchmark, value, said):
    from eval.run import main

    judge = json.dumps({"kind": "lexical"})
    argv = ["--checkpoint", tiny_model_dir, "--benchmark", benchmark, "--gps-without", value, "--judge", judge]
    with pytest.raises(SystemExit) as exc:
        main([*argv, "--out", str(tmp_path / "out")])
    assert exc.value.code == 2 and f"error: {said}" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()  # nothing written, no Ray started
