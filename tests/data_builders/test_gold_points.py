"""Several gold points per describe record: from an annotator VLM behind an OpenAI-compatible endpoint that sees the
frames (the shared fake endpoint stands in for the remote API: no annotator model runs here), or from the user's
points file; and what the GPS role builder makes of the annotator's extraction and validity."""

from __future__ import annotations

import base64
import doctest
import io
import json
from pathlib import Path

import numpy as np
import pytest

import common.gps
import data_builders.gold_points as gp
from common.schema import validate_record
from tests.fake_openai import FakeOpenAIEndpoint, text_of


@pytest.fixture(scope="module")
def videos():
    from common.sample_data import build_sample_data, default_sample_dir

    sample = build_sample_data(default_sample_dir())
    return sorted((Path(sample["root"]) / "videos").glob("train_*.mp4"))[:2]


def describe(i: int, video: Path | str, activity: str) -> dict:
    return {
        "id": f"cap-{i}",
        "task": "describe",
        "video": str(video),
        "prompt": common.gps.GENERIC_PROMPT,
        "answer": "x",
        "gold_points": [gp.label_sentence(gp.readable(activity))],
        "meta": {"dataset": "cap", "class": activity},
    }


def write(path: Path, rows: list) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def lines(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()]


def images_of(request: dict) -> list[np.ndarray]:
    """The frames a request carried, decoded from their JPEG data URLs."""
    from PIL import Image

    parts = request["body"]["messages"][-1]["content"]
    urls = [p["image_url"]["url"] for p in parts if p["type"] == "image_url"]
    assert all(u.startswith("data:image/jpeg;base64,") for u in urls)
    return [np.asarray(Image.open(io.BytesIO(base64.b64decode(u.split(",", 1)[1])))) for u in urls]


def annotator_reply(body: dict) -> str:
    """The fake annotator: ground-truth points when the prompt gives the label (naming it only for the hug video),
    label-free points otherwise, and a validity answer that says yes for the chair video only."""
    prompt = text_of(body["messages"][-1])
    if "suffice to robustly recognise" in prompt:
        return "Yes." if "chair" in prompt else "No, the dog is not listed."
    if 'labelled "person pulls out chair"' in prompt:
        return "Gold points:\n1. A person stands behind a table.\n2) The right arm reaches down."
    if 'labelled "person hugs dog"' in prompt:
        return "1. A person kneels on the floor.\n2. The person hugs a dog with both arms."
    return "- A person is in a room.\n- An arm moves."


def test_endpoint_annotator_sends_the_frames_and_parses_the_points(videos, tmp_path, monkeypatch):
    from envs.video import read_video

    monkeypatch.setenv("FAKE_ANNOTATOR_KEY", "sk-secret-9")
    records = [describe(0, videos[0], "person_pulls_out_chair"), describe(1, videos[1], "person_hugs_dog")]
    records.append(describe(2, tmp_path / "missing.mp4", "person_hugs_dog"))
    path = write(tmp_path / "in.jsonl", records)
    with FakeOpenAIEndpoint(annotator_reply) as server:
        client = gp.ChatEndpoint(server.base_url, model="fake-vlm", api_key_env="FAKE_ANNOTATOR_KEY")
        source = gp.EndpointPoints(client, frames=3, max_side=64, extraction=True)
        summary = gp.build(path, tmp_path / "out.jsonl", source, progress=False)
    assert summary["kept_records"] == 2 and summary["dropped"] == {"video_unreadable": 1}
    # three calls per video: points with the label, points without it, validity of the latter
    assert len(server.requests) == 6 and {r["auth"] for r in server.requests} == {"Bearer sk-secret-9"}
    prompts = [text_of(r["body"]["messages"][-1]) for r in server.requests]
    assert 'labelled "person pulls out chair"' in prompts[0] and "labelled" not in prompts[1]
    assert "1. A person is in a room.\n2. An arm moves." in prompts[2]  # the extraction, numbered, is validated
    for k, video in enumerate(videos):  # every call carries the video's 3 frames, at 64 px
        want = read_video(str(video), 3, None, 64).frames
        for request in server.requests[3 * k : 3 * k + 3]:
            got = images_of(request)
            assert len(got) == 3 and all(g.shape == w.shape for g, w in zip(got, want))
            assert all(np.abs(g.astype(float) - w).mean() < 8 for g, w in zip(got, want))  # JPEG-close
    chair, hug = lines(tmp_path / "out.jsonl")
    # the chair reply does not name the label: its sentence is appended as the last point
    assert chair["gold_points"] == [
        "A person stands behind a table.",
        "The right arm reaches down.",
        "The person pulls out chair.",
    ]
    assert hug["gold_points"] == ["A person kneels on the floor.", "The person hugs a dog with both arms."]
    assert chair["meta"]["annotated_gold_points"] == ["A person is in a room.", "An arm moves."]
    assert (chair["meta"]["annotated_valid"], hug["meta"]["annotated_valid"]) == (True, False)
    assert (
        chair["meta"]["gold_points_source"] == "annotator:fake-vlm"
        and chair["meta"]["class"] == records[0]["meta"]["class"]
    )
    assert all(validate_record(r) == [] for r in (chair, hug))
    assert "sk-secret" not in (tmp_path / "out.jsonl").read_text()

    # the role builder: the valid extraction is a "yes" with no Socratic pairs, the invalid one a "no" with them
    from data_builders.gps_roles import TemplateAnnotator, role_records

    ids = [
        [r["id"].removeprefix(rec["id"] + "-") for r in role_records(rec, TemplateAnnotator())] for rec in (chair, hug)
    ]
    assert ids == [["gpe", "gpv-yes", "gpv-ann-yes", "des"], ["gpe", "gpv-yes", "gpv-no", "sqr", "des"]]


def test_unparsable_replies_are_dropped_and_counted(videos, tmp_path):
    path = write(tmp_path / "in.jsonl", [describe(0, videos[0], "person_pulls_out_chair")])
    with FakeOpenAIEndpoint(lambda body: "  \n") as server:
        source = gp.EndpointPoints(gp.ChatEndpoint(server.base_url, model="m"), frames=2)
        summary = gp.build(path, tmp_path / "out.jsonl", source, progress=False)
    assert summary["kept_records"] == 0 and summary["dropped"] == {"annotator_unparsable": 1}
    with FakeOpenAIEndpoint(annotator_reply) as server:  # a rerun resumes: the dropped record is not asked again
        source = gp.EndpointPoints(gp.ChatEndpoint(server.base_url, model="m"), frames=2)
        gp.build(path, tmp_path / "out.jsonl", source, progress=False)
    assert server.requests == []


def test_points_file(videos, tmp_path, capsys):
    records = [describe(0, videos[0], "person_pulls_out_chair"), describe(1, videos[1], "person_hugs_dog")]
    path = write(tmp_path / "in.jsonl", records)
    points = write(tmp_path / "points.jsonl", [{"id": "cap-1", "gold_points": [" A dog. ", "A hug."]}, ""])
    out = tmp_path / "out.jsonl"
    assert gp.main(["--records", str(path), "--out", str(out), "--points-file", str(points)]) == 0
    (rec,) = lines(out)
    assert rec["id"] == "cap-1" and rec["gold_points"] == ["A dog.", "A hug."]
    assert rec["meta"]["gold_points_source"] == "file:points.jsonl"
    dropped = lines(Path(str(out) + ".dropped.jsonl"))
    assert [(d["id"], d["reason"]) for d in dropped] == [("cap-0", "not_in_points_file")]

    bad = [
        ('{"id": "a", "gold_points": []}', "points.jsonl:1: record 'a': gold_points must be a non-empty list"),
        ('{"gold_points": ["x"]}', 'points.jsonl:1: expected {"id"'),
        (
            '{"id": "a", "gold_points": ["x"]}\n{"id": "a", "gold_points": ["y"]}',
            "points.jsonl:2: record 'a' is listed twice",
        ),
        ("not json", "points.jsonl:1: not JSON"),
    ]
    for text, message in bad:
        (tmp_path / "points.jsonl").write_text(text + "\n")
        assert gp.main(["--records", str(path), "--out", str(tmp_path / "o.jsonl"), "--points-file", str(points)]) == 2
        assert message in capsys.readouterr().err
    with pytest.raises(SystemExit):  # one source, and only one
        gp.main(["--records", str(path), "--out", str(out)])


def test_role_annotator_sees_the_frames(videos, tmp_path):
    from data_builders.gps_roles import EndpointAnnotator, role_records

    rec = describe(0, videos[0], "person_pulls_out_chair")
    rec["gold_points"] = ["a person stands", "an arm reaches down", "The person pulls out chair."]

    def reply(body):
        return "Q: What does the arm do?\nA: It reaches down." if "Socratic" in text_of(body["messages"][-1]) else "D."

    with FakeOpenAIEndpoint(reply) as server:
        roles = role_records(rec, EndpointAnnotator(gp.ChatEndpoint(server.base_url, model="m"), frames=2))
    assert [r["meta"]["role"] for r in roles][-2:] == ["socratic", "description"]
    assert [len(images_of(r)) for r in server.requests] == [2, 2]  # Socratic pairs and description, both on frames


@pytest.mark.parametrize("module", [common.gps, gp])
def test_docstring_examples(module):
    assert doctest.testmod(module).failed == 0
