"""The SAR builder's LLM rewrite (`--rewriter`) against a fake OpenAI-compatible endpoint (a real local HTTP server
standing in for the remote LLM; no model runs): a good rewrite is used with the template's answer byte for byte; a
dropped block, an added answer, a made-up number, an HTTP 500, a timeout or an over-budget rewrite keeps the
template target, counted and recorded per record. And the template's <look> sentence names who performs."""

from __future__ import annotations

import json
import re
import threading
import time
from pathlib import Path

import pytest

from data_builders import hieroaction_sar as hs
from data_builders.sar_rewrite import check_rewrite
from rewards.hieroaction import is_sar_format
from tests.fake_openai import FakeOpenAIEndpoint, text_of

BASE = {
    "task": "aqa",
    "video": "/videos/none.mp4",  # never decoded
    "prompt": "Assess the action in the video.",
    "sub_actions": [{"name": "bend knees", "start": 0.0, "end": 1.0}, {"name": "stand up", "start": 1.0, "end": 2.0}],
    "difficulty": 2.0,
    "score": 70.0,
    "score_range": [0.0, 100.0],
    "meta": {"dataset": "sample"},
}
CASES = ("good", "missing", "answer", "numbers", "error", "slow", "long")
GOOD = (
    "<look>One person squats in two phases lasting about 2.00 s.</look>\n"
    "<recognition>First the knees bend (0.00-1.00 s), then the body rises again (1.00-2.00 s).</recognition>\n"
    "<assessment>Both phases are good, at difficulty 2.0, for a score of 70.0.</assessment>\n"
)


def record(case: str) -> dict:
    return {**BASE, "id": f"r-{case}", "label": f"case-{case}", "answer": "x"}


def answer_block(case: str) -> str:
    """The answer every target of `record(case)` ends with, written by hand."""
    return (
        f'<answer>{{"action": "case-{case}", "sub_actions": [{{"name": "bend knees", "start": 0.0, "end": 1.0}}, '
        '{"name": "stand up", "start": 1.0, "end": 2.0}], "difficulty": 2.0, "score": 70.0}</answer>'
    )


class FakeRewriter:
    """The fake LLM's replies, one behaviour per record (the case is the action named in the template's prose),
    counting the requests in flight at once."""

    def __init__(self):
        self.lock, self.in_flight, self.most_in_flight = threading.Lock(), 0, 0

    def __call__(self, body: dict) -> str | int:
        prompt = text_of(body["messages"][-1])
        if "Overall the case-slow is" in prompt:
            time.sleep(2.0)  # past the client's timeout; not counted in flight, as the client has given up
            return GOOD
        with self.lock:
            self.in_flight += 1
            self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            time.sleep(0.2)  # long enough for the requests to overlap
            return self.reply(prompt)
        finally:
            with self.lock:
                self.in_flight -= 1

    @staticmethod
    def reply(prompt: str) -> str | int:
        found = re.search(r"Overall the case-(\w+) is", prompt)
        if not found:
            return "ready"  # the builder's first request: is the endpoint there
        case = found.group(1)
        replies = {
            "good": "Here is the polished text.\n" + GOOD,
            "missing": GOOD.split("<assessment>")[0],
            "answer": GOOD + answer_block(case).replace("70.0", "99.0"),
            "numbers": GOOD.replace("One person squats", "On the 10 m board one person squats"),
            "error": 500,
            "long": GOOD.replace("One person", "One person " + "very " * 400),
        }
        return replies.get(case, GOOD)


def lines(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()]


def test_rewrites_are_used_when_good_and_fall_back_to_the_template_otherwise(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("FAKE_REWRITER_KEY", "sk-rewrite-7")
    count = hs._token_counter()
    assert max(count(hs.sar_target(record(c))) for c in CASES) < 300  # the "long" rewrite alone is over 300
    path = tmp_path / "in.jsonl"
    path.write_text("".join(json.dumps(record(c)) + "\n" for c in CASES))
    fake = FakeRewriter()
    with FakeOpenAIEndpoint(fake) as server:
        argv = ["--records", str(path), "--out", str(tmp_path / "out.jsonl"), "--max-tokens", "300"]
        argv += ["--rewriter", server.base_url, "--rewriter-model", "polisher", "--api-key-env", "FAKE_REWRITER_KEY"]
        summary = hs.main([*argv, "--rewriter-timeout", "1.0", "--rewriter-concurrency", "4"])
    kept = lines(tmp_path / "out.jsonl")
    assert [r["id"] for r in kept] == [f"r-{c}" for c in CASES]  # input order, though rewritten four at a time
    assert fake.most_in_flight > 1
    by_case = {r["id"][2:]: r for r in kept}
    assert by_case["good"]["chain"] == [GOOD + answer_block("good")]
    assert by_case["good"]["meta"]["dataset"] == "sample" and by_case["good"]["meta"]["sar"] == "template"
    assert by_case["good"]["meta"]["sar_rewritten"] is True and "sar_rewrite_failure" not in by_case["good"]["meta"]
    assert by_case["good"]["meta"]["sar_rewriter"] == "endpoint:polisher"
    failures = {"missing": "missing_block", "answer": "extra_tags", "numbers": "new_numbers"}
    failures |= {"error": "endpoint_error", "slow": "endpoint_error", "long": "too_long"}
    for case, reason in failures.items():
        rec = by_case[case]
        assert rec["chain"] == [hs.sar_target(record(case))], case
        assert rec["chain"][0].endswith(answer_block(case))
        assert rec["meta"]["sar_rewritten"] is False and rec["meta"]["sar_rewrite_failure"] == reason, case
    for rec in kept:
        assert is_sar_format(rec["chain"][0], strict=True)
    assert summary["rewrite"] == {
        "rewritten": 1,
        "template": {"endpoint_error": 2, "extra_tags": 1, "missing_block": 1, "new_numbers": 1, "too_long": 1},
    }
    assert json.loads((tmp_path / "out.jsonl.summary.json").read_text())["rewrite"] == summary["rewrite"]
    out = capsys.readouterr().out
    assert "rewritten by endpoint:polisher: 1 of 7; template kept: endpoint_error: 2, extra_tags: 1" in out
    # what was sent: the key as a bearer token, the three prose blocks, never the answer
    rewrites = [r for r in server.requests if "Overall the" in text_of(r["body"]["messages"][-1])]
    assert len(rewrites) == len(CASES) and all(r["auth"] == "Bearer sk-rewrite-7" for r in server.requests)
    for req in rewrites:
        sent = text_of(req["body"]["messages"][-1])
        assert "<look>" in sent and "</assessment>" in sent and "<answer>" not in sent and '"sub_actions"' not in sent


def test_a_rerun_resumes_and_counts_the_whole_output(tmp_path):
    path = tmp_path / "in.jsonl"
    path.write_text(json.dumps(record("good")) + "\n")
    out = tmp_path / "out.jsonl"
    with FakeOpenAIEndpoint(FakeRewriter()) as server:
        argv = ["--records", str(path), "--out", str(out), "--rewriter", server.base_url, "--rewriter-model", "m"]
        hs.main(argv)
        path.write_text(json.dumps(record("good")) + "\n" + json.dumps(record("missing")) + "\n")
        summary = hs.main(argv)
    rewrites = [r for r in server.requests if "Overall the" in text_of(r["body"]["messages"][-1])]
    assert len(rewrites) == 2  # the first record was not asked again
    assert summary["rewrite"] == {"rewritten": 1, "template": {"missing_block": 1}}


def test_an_endpoint_that_does_not_answer_stops_the_build_before_any_record(tmp_path, capsys):
    path = tmp_path / "in.jsonl"
    path.write_text(json.dumps(record("good")) + "\n")
    with FakeOpenAIEndpoint(lambda body: "ready", status=503) as server:
        with pytest.raises(SystemExit) as exc:
            hs.main(["--records", str(path), "--out", str(tmp_path / "o.jsonl"), "--rewriter", server.base_url,
                     "--rewriter-model", "m"])  # fmt: skip
    assert exc.value.code == 2 and not (tmp_path / "o.jsonl").exists()
    err = capsys.readouterr().err
    assert "the rewriter endpoint does not answer" in err and "HTTP 503" in err and len(server.requests) == 1


def test_the_rewriter_is_refused_for_other_styles_and_without_a_model(tmp_path, capsys):
    for extra in (["--style", "cot", "--rewriter-model", "m"], []):
        with pytest.raises(SystemExit) as exc:
            hs.main(["--records", "in.jsonl", "--out", str(tmp_path / "o.jsonl"), "--rewriter", "http://h/v1", *extra])
        assert exc.value.code == 2
    assert "--rewriter needs --rewriter-model, --style sar" in capsys.readouterr().err


@pytest.mark.parametrize(
    "reply, expected",
    [
        ("<look>a</look><recognition>b 1</recognition><assessment>c</assessment>", None),
        ("Sure!\n<look>a</look> then <recognition>b</recognition>\n<assessment>c</assessment>\nDone.", None),
        ("<look>a</look><recognition>b</recognition>", "missing_block"),
        ("<look>a</look><assessment>c</assessment><recognition>b</recognition>", "missing_block"),
        ("<look> </look><recognition>b</recognition><assessment>c</assessment>", "missing_block"),
        ("<look>a</look><look>a</look><recognition>b</recognition><assessment>c</assessment>", "missing_block"),
        ("<look>a</look><recognition><think>b</think></recognition><assessment>c</assessment>", "extra_tags"),
        ("<look>a</look><recognition>b</recognition><assessment>c</assessment><answer>{}</answer>", "extra_tags"),
        ("<look>a</look><recognition>b 3</recognition><assessment>c</assessment>", "new_numbers"),
        ("<look>a</look><recognition>b 1.00</recognition><assessment>c 0.5</assessment>", None),
        ("<look>a</look><recognition>b 0.05</recognition><assessment>c</assessment>", "new_numbers"),
    ],
)
def test_check_rewrite(reply, expected):
    """Against the template prose "phase 1 of 2, 0.50 s": 1, 2 and 0.5 may be written (as 1.00 or 0.5), 3 not."""
    blocks, failure = check_rewrite(reply, "<look>phase 1 of 2, 0.50 s</look>")
    assert failure == expected and (blocks is None) is (expected is not None)


@pytest.mark.parametrize(
    "dataset, look",
    [
        ("logo", "A team of eight artistic swimmers performs one routine in 2 phases over about 2.00 s."),
        ("finediving", "A diver performs one dive in 2 phases over about 2.00 s."),
        ("finefs", "A figure skater performs one program in 2 phases over about 2.00 s."),
        ("sample", "A person performs one action in 2 phases over about 2.00 s."),
        ("my_gym", "The clip shows one action in 2 phases over about 2.00 s."),
    ],
)
def test_the_look_sentence_names_who_performs(dataset, look):
    rec = {**record("good"), "meta": {"dataset": dataset}}
    assert hs.sar_target(rec).startswith(f"<look>{look}</look>\n")
    assert hs.cot_target(rec).startswith(f"<think>{look} ")
    if dataset != "sample":
        assert "person" not in hs.sar_target(rec) and "whole body" not in hs.sar_target(rec)


def test_without_a_rewriter_the_records_say_nothing_of_one(tmp_path):
    path = tmp_path / "in.jsonl"
    path.write_text(json.dumps(record("good")) + "\n")
    summary = hs.main(["--records", str(path), "--out", str(tmp_path / "o.jsonl")])
    (rec,) = lines(tmp_path / "o.jsonl")
    assert "rewrite" not in summary and not any(k.startswith("sar_rewrit") for k in rec["meta"])
    assert rec["chain"] == [hs.sar_target(record("good"))]


def test_the_builders_loop_with_workers_keeps_order_drops_and_fails_fast(tmp_path):
    """`build_resumable(workers=4)`: records in input order, a ValueError drops its record, anything else stops the
    build with the records before it written (a rerun resumes after them)."""
    from data_builders.endpoint import build_resumable

    path = tmp_path / "in.jsonl"
    path.write_text("".join(json.dumps({"id": f"r{i}", "n": i}) + "\n" for i in range(8)) + "not json\n")

    def make(row: dict) -> list[dict]:
        time.sleep(0.05 * (8 - row["n"]))  # later records finish first
        if row["n"] == 2:
            raise ValueError("odd: two")
        if row["n"] == 5:
            raise RuntimeError("endpoint gone")
        return [{**record("good"), "id": row["id"]}]

    with pytest.raises(RuntimeError, match="endpoint gone"):
        build_resumable(path, tmp_path / "out.jsonl", make, "t", progress=False, workers=4)
    assert [r["id"] for r in lines(tmp_path / "out.jsonl")] == ["r0", "r1", "r3", "r4"]
    summary = build_resumable(path, tmp_path / "out.jsonl", lambda row: [], "t", progress=False, workers=4)
    assert summary["dropped"] == {"bad_record": 1, "odd": 1} and summary["resumed_from"] == 5


def test_docstring_examples():
    import doctest

    import data_builders.sar_rewrite

    assert doctest.testmod(data_builders.sar_rewrite).failed == 0
