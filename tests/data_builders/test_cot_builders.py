"""The SFT data builders on small fixtures: Video-STAR chains (real pose tool, template or endpoint teacher and
judge), HieroAction SAR targets (full marks from the HieroAction rewards), GPS role records; counted drops,
resume, and the endpoint client against a fake OpenAI-compatible server."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from common.schema import validate_record
from common.submotions import INSTRUCTION
from tests.fake_openai import FakeOpenAIEndpoint, text_of


@pytest.fixture(scope="module")
def sample():
    from common.sample_data import build_sample_data, default_sample_dir

    return build_sample_data(default_sample_dir())


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _fixture(sample, tmp_path: Path, task_file: str, n: int) -> tuple[Path, list[dict]]:
    """n good records (videos made absolute), one without a prompt, one whose video is missing, one bad line."""
    from common.schema import load_records

    good = load_records(sample[task_file])[:n]
    no_prompt = {k: v for k, v in good[0].items() if k != "prompt"} | {"id": "no-prompt"}
    missing = {**good[0], "id": "missing-video", "video": str(tmp_path / "nope.mp4")}
    path = tmp_path / "in.jsonl"
    rows = [json.dumps(r) for r in [*good, no_prompt, missing]] + ["{not json"]
    path.write_text("\n".join(rows) + "\n")
    return path, good


def test_videostar_chains_from_real_tool_outputs_validate_and_resume(sample, tmp_path):
    from data_builders.videostar_cot import ChainBuilder, TemplateTeacher, build, parse_calls, template_judge

    records_path, good = _fixture(sample, tmp_path, "train", 3)
    out = tmp_path / "cot.jsonl"
    builder = ChainBuilder(TemplateTeacher(), template_judge, {"pose_estimation": {}}, max_response_tokens=2000)
    summary = build(records_path, out, builder, progress=False)
    assert summary["kept_records"] == 3 and summary["input_records"] == 6
    assert summary["dropped"] == {"bad_record": 2, "video_decode": 1}
    kept = _lines(out)
    for rec, src in zip(kept, good):
        assert validate_record(rec) == [] and rec["id"] == src["id"]
        first, second = rec["chain"]
        assert parse_calls(first) == [{"name": "pose_estimation", "arguments": {"frames": [2, 6], "person": 0}}]
        assert second.endswith(f"<answer>{src['label']}</answer>")
        (reply,) = rec["meta"]["cot"]["tool_responses"]
        # the chain's first step states what the real pose reply said, frame by frame
        for frame in (2, 6):
            n = int(reply.split(f"frame {frame} (t=")[1].split("): ")[1].split(" ")[0])
            assert f"frame {frame}: {n} {'person' if n == 1 else 'people'}." in second
    # a rerun resumes: nothing is built twice, the counts stay
    again = build(records_path, out, builder, progress=False)
    assert again["kept_records"] == 3 and again["dropped"] == summary["dropped"] and len(_lines(out)) == 3


def test_the_judge_drops_wrong_answers_and_contradicted_tool_outputs(sample, tmp_path):
    from data_builders.videostar_cot import ChainBuilder, Dropped, TemplateTeacher, template_judge

    class LyingTeacher(TemplateTeacher):
        """Claims five people in frame 2, whatever the pose tool saw."""

        def second_turn(self, record, first, tool_texts, frames):
            return f"<think>frame 2: 5 people.\nSub-motions: arm rises</think>\n<answer>{record['label']}</answer>"

    class WrongTeacher(TemplateTeacher):
        def second_turn(self, record, first, tool_texts, frames):
            return "<think>Guess.</think>\n<answer>dance</answer>"

    class NoListTeacher(TemplateTeacher):
        """Right answer, but no sub-motion line the reward could read."""

        def second_turn(self, record, first, tool_texts, frames):
            return f"<think>Sub-motions and candidates weighed.</think>\n<answer>{record['label']}</answer>"

    record = _fixture(sample, tmp_path, "train", 1)[1][0]
    cases = (
        (LyingTeacher(), "judge_contradicts_tools"),
        (WrongTeacher(), "judge_wrong_answer"),
        (NoListTeacher(), "teacher_no_submotions"),
    )
    for teacher, reason in cases:
        with pytest.raises(Dropped) as err:
            ChainBuilder(teacher, template_judge, {"pose_estimation": {}}).build(record)
        assert err.value.reason == reason
    with pytest.raises(Dropped) as err:  # the chain plus the pose reply do not fit 50 response tokens
        ChainBuilder(TemplateTeacher(), template_judge, {"pose_estimation": {}}, max_response_tokens=50).build(record)
    assert err.value.reason == "too_long"


def _teacher_reply(messages):
    prompt = text_of(messages[-1])
    if "FIRST turn" in prompt:
        call = {"name": "pose_estimation", "arguments": {"frames": [4]}}
        return f"<think>Pose helps.</think>\n<tool_call>\n{json.dumps(call)}\n</tool_call>"
    if "NEXT turn" in prompt:
        label = prompt.split("The correct answer is: ")[1].splitlines()[0]
        given = prompt.split("Its sub-motion line (most telling first): ")[1].splitlines()[0]
        # copy the given line, as the prompt asks; decompose when none is given
        line = given if given.startswith("Sub-motions:") else "Sub-motions: arms rise → arms fall, twice"
        return f"<think>Pose seen.\n{line}\nCandidates weighed.</think>\n<answer>{label}</answer>"
    return '{"keep": true, "reason": "consistent"}'


def test_endpoint_teacher_and_judge_through_a_fake_server(sample, tmp_path, monkeypatch):
    from data_builders.endpoint import ChatEndpoint, EndpointError
    from data_builders.videostar_cot import ChainBuilder, EndpointJudge, EndpointTeacher, build

    monkeypatch.setenv("FAKE_KEY", "sk-secret-123")
    records_path, good = _fixture(sample, tmp_path, "train", 2)
    lines = records_path.read_text().splitlines()  # the second record without sub_motions: the teacher's are kept
    lines[1] = json.dumps({k: v for k, v in good[1].items() if k != "sub_motions"})
    records_path.write_text("\n".join(lines) + "\n")
    out = tmp_path / "cot.jsonl"
    with FakeOpenAIEndpoint(lambda body: _teacher_reply(body["messages"])) as server:
        client = ChatEndpoint(server.base_url, model="fake-model", api_key_env="FAKE_KEY")
        builder = ChainBuilder(
            EndpointTeacher(client, images=2), EndpointJudge(client), {"pose_estimation": {}}, max_response_tokens=2000
        )
        summary = build(records_path, out, builder, progress=False)
    assert summary["kept_records"] == 2
    kept = _lines(out)
    assert [r["meta"]["cot"]["teacher"] for r in kept] == ["endpoint:fake-model"] * 2
    # the first record's own sub-motions, copied by the teacher as the prompt's line; the second gets the teacher's
    assert kept[0]["sub_motions"] == good[0]["sub_motions"] and kept[0]["meta"]["cot"]["sub_motions"] == "record"
    assert f"\nSub-motions: {' → '.join(good[0]['sub_motions'])}\n" in kept[0]["chain"][1]
    assert kept[1]["sub_motions"] == ["arms rise", "arms fall, twice"] and kept[1]["meta"]["cot"]["sub_motions"] == (
        "teacher"
    )
    reason_prompt = text_of(server.requests[1]["body"]["messages"][-1])
    assert INSTRUCTION in reason_prompt and "(not given" in text_of(server.requests[4]["body"]["messages"][-1])
    assert kept[0]["meta"]["cot"]["tool_calls"] == [{"name": "pose_estimation", "arguments": {"frames": [4]}}]
    # per kept record: first turn, second turn, judge; the teacher's requests carry 2 frames as JPEG data URLs
    assert len(server.requests) == 6
    first = server.requests[0]
    assert first["headers"]["Authorization"] == "Bearer sk-secret-123"
    urls = [p["image_url"]["url"] for p in first["body"]["messages"][-1]["content"] if p["type"] == "image_url"]
    assert len(urls) == 2 and all(u.startswith("data:image/jpeg;base64,") for u in urls)
    assert "sk-secret" not in out.read_text() and "sk-secret" not in Path(str(out) + ".summary.json").read_text()

    # failures are immediate and name the URL and the HTTP error
    with FakeOpenAIEndpoint(lambda body: _teacher_reply(body["messages"]), status=503) as broken:
        client = ChatEndpoint(broken.base_url, model="m", api_key_env="FAKE_KEY")
        with pytest.raises(EndpointError, match=r"127\.0\.0\.1:\d+/v1/chat/completions: HTTP 503"):
            ChainBuilder(EndpointTeacher(client), EndpointJudge(client), {"pose_estimation": {}}).build(good[0])
    gone = ChatEndpoint(broken.base_url, model="m", timeout_s=5)  # the server is shut down
    with pytest.raises(EndpointError, match=r"chat/completions: unreachable"):
        gone.chat([{"role": "user", "content": "hi"}])


@pytest.mark.parametrize("brief", [False, True], ids=["full", "brief"])
def test_hieroaction_sar_targets_get_full_marks_from_the_hieroaction_rewards(sample, tmp_path, brief):
    from data_builders.hieroaction_sar import build
    from rewards.hieroaction import aqa_score, hier_action, is_sar_format, parse_sar_answer, temporal_iou_reward
    from rollout.trajectory import Trajectory

    records_path, good = _fixture(sample, tmp_path, "aqa_train", 3)
    empty = {**good[0], "id": "no-phases", "sub_actions": []}
    with records_path.open("a") as f:
        f.write(json.dumps(empty) + "\n")
    out = tmp_path / "sar.jsonl"
    summary = build(records_path, out, max_tokens=1024, progress=False, brief=brief)
    # the missing video does not matter here (no decoding); the record without a prompt and the bad line do
    assert summary["dropped"] == {"bad_record": 2, "no_phases": 1} and summary["kept_records"] == 4
    for rec in _lines(out):
        assert validate_record(rec) == []
        (target,) = rec["chain"]
        assert is_sar_format(target, strict=True)
        traj = Trajectory(rec["id"], 0, [], [], [], [], final_text=target)
        assert temporal_iou_reward(traj, rec) == pytest.approx(1.0)
        assert hier_action(traj, rec) == pytest.approx(1.0)
        assert aqa_score(traj, rec, lam_q=10.0, lam_d=10.0, difficulty_range=[1.0, 4.0]) == pytest.approx(1.0)
        answer = parse_sar_answer(target)
        assert answer.action == rec["label"] and len(answer.sub_actions) == len(rec["sub_actions"])
        last = rec["sub_actions"][-1]
        if brief:  # one line per block: every phase named in <recognition>, in order
            assert len(target.splitlines()) == 4 and rec["meta"]["sar"] == "template-brief"
            names = "; ".join(s["name"] for s in rec["sub_actions"])
            assert f"<recognition>{names}</recognition>" in target
        else:
            assert f"Phase {len(rec['sub_actions'])}: {last['name']}" in target


def test_sar_builder_keeps_targets_within_the_papers_3072_token_budget(sample, tmp_path):
    """--max-tokens defaults to HieroAction's output budget, 3072 tokens: of two records whose targets straddle it
    (the most phases that fit, and one more; lengths counted with the tokenizer), the longer one is dropped."""
    from common.schema import load_records
    from data_builders.hieroaction_sar import _token_counter, main, sar_target

    count = _token_counter()
    base = load_records(sample["aqa_train"])[0]

    def with_phases(n: int) -> dict:
        subs = [{"name": "wave forearm out", "start": i * 0.1, "end": (i + 1) * 0.1} for i in range(n)]
        return {**base, "id": f"p{n}", "sub_actions": subs}

    n = 1
    while count(sar_target(with_phases(n + 1))) <= 3072:
        n += 1
    inside, outside = with_phases(n), with_phases(n + 1)
    assert 2900 < count(sar_target(inside)) <= 3072 < count(sar_target(outside))  # a phase is ~60 tokens
    records = tmp_path / "in.jsonl"
    records.write_text(json.dumps(inside) + "\n" + json.dumps(outside) + "\n")
    summary = main(["--records", str(records), "--out", str(tmp_path / "out.jsonl")])
    assert summary["kept_records"] == 1 and summary["dropped"] == {"too_long": 1}
    assert [r["id"] for r in _lines(tmp_path / "out.jsonl")] == [inside["id"]]


GOLD = ["a woman sits at a desk", "she lifts a mug with her right hand", "she drinks from the mug"]


def _describe(**meta):
    return {
        "id": "d1",
        "task": "describe",
        "video": "v.mp4",
        "prompt": "Describe.",
        "answer": "x",
        "gold_points": list(GOLD),
        "meta": meta,
    }


def test_gps_four_roles_from_one_annotation(tmp_path):
    from data_builders.gps_roles import TemplateAnnotator, build, role_records

    recs = role_records(_describe(), TemplateAnnotator())
    assert [r["id"] for r in recs] == ["d1-gpe", "d1-gpv-yes", "d1-gpv-no", "d1-sqr", "d1-des"]
    assert [r["meta"]["role"] for r in recs] == ["gold_points", "validation", "validation", "socratic", "description"]
    assert all(validate_record(r) == [] and r["chain"] == [r["answer"]] for r in recs)
    gpe, yes, no, sqr, des = recs
    assert (
        gpe["answer"] == "Gold points:\n1. a woman sits at a desk\n2. she lifts a mug with her right hand\n"
        "3. she drinks from the mug"
    )
    assert (yes["answer"], no["answer"]) == ("yes", "no")
    assert "3. she drinks from the mug" in yes["prompt"] and "drinks" not in no["prompt"]  # the list misses it
    assert "A: She drinks from the mug." in sqr["answer"] and "drinks" not in sqr["prompt"]
    assert des["answer"] == "A woman sits at a desk. She lifts a mug with her right hand. She drinks from the mug."
    # an extraction that is complete gives no invalid list and no Socratic record
    full = role_records(_describe(annotated_gold_points=list(GOLD)), TemplateAnnotator())
    assert [r["id"] for r in full] == ["d1-gpe", "d1-gpv-yes", "d1-des"]

    # the endpoint annotator (fake server); a reply without Q/A pairs is dropped with its reason
    from data_builders.endpoint import ChatEndpoint
    from data_builders.gps_roles import EndpointAnnotator

    def reply(messages):
        prompt = text_of(messages[-1])
        if "Socratic" in prompt:
            return (
                "no pairs here"
                if "desk" in prompt.split("incomplete or wrong:")[1]
                else "Q: What does she do?\nA: She drinks."
            )
        return "A woman at a desk drinks from a mug."

    path = tmp_path / "in.jsonl"
    second = {**_describe(), "id": "d2", "meta": {"annotated_gold_points": ["a woman sits at a desk"]}}
    path.write_text(json.dumps(_describe(annotated_gold_points=GOLD[1:])) + "\n" + json.dumps(second) + "\n")
    with FakeOpenAIEndpoint(lambda body: reply(body["messages"])) as server:
        annotator = EndpointAnnotator(ChatEndpoint(server.base_url, model="fake"), frames=0)  # v.mp4 is no video
        summary = build(path, tmp_path / "roles.jsonl", annotator, progress=False)
    assert summary["kept_records"] == 5 and summary["dropped"] == {"annotator_unparsable": 1}
    roles = _lines(tmp_path / "roles.jsonl")
    assert roles[3]["answer"] == "Q: What does she do?\nA: She drinks."
    assert roles[4]["answer"] == "A woman at a desk drinks from a mug."
