"""The action knowledge-base builder: template writer, label collection, the LLM writer against a fake endpoint."""

from __future__ import annotations

import json

import pytest

from common.action_kb import build_kb, collect_labels, load_kb, template_entry
from common.openai_compat import ChatClient, EndpointError
from data_builders.action_kb import main
from tests.fake_openai import FakeOpenAIEndpoint


def test_template_entries():
    jump = template_entry("jump")
    assert jump["phases"][1] == "push off the ground with both legs" and jump["writer"] == "template"
    # a verb with -ing and an object: the object fills the template
    kick = template_entry("kicking_ball")
    assert kick["action"] == "kicking ball" and "swing it forward to strike ball" in kick["phases"]
    # an unknown verb gets the generic three phases, named after the action
    make_up = template_entry("ApplyEyeMakeup")
    assert make_up["phases"] == [
        "get into position to apply eye makeup",
        "perform the main movement of apply eye makeup",
        "return to a resting position",
    ]
    # given phases (a record's sub_motions) are used as they are
    assert template_entry("walk", ["step", "swing arms"])["definition"] == "walk: step, then swing arms."


def test_collect_labels_merges_sources(tmp_path):
    labels = tmp_path / "labels.txt"
    labels.write_text("climb_stairs\n\nmy new action\n")
    got = collect_labels(["hmdb51"], [], [str(labels)])
    assert len(got) == 52  # the 51 HMDB-51 classes (climb_stairs among them) and one new label
    assert got["climb stairs"]["sources"] == ["hmdb51", "labels:labels.txt"]
    assert got["my new action"]["sources"] == ["labels:labels.txt"]


def test_cli_writes_a_loadable_kb(tmp_path):
    out = tmp_path / "kb.jsonl"
    main(["--out", str(out), "--lists", "hmdb51", "--no-embed"])
    entries = load_kb(out)
    assert len(entries) == 51 and not out.with_suffix(".npy").exists()
    stand = next(e for e in entries if e["action"] == "stand")
    assert stand["definition"].startswith("stand: transit from sitting or lying to standing")
    assert stand["sources"] == ["hmdb51"]


def test_load_kb_names_the_bad_line(tmp_path):
    bad = tmp_path / "kb.jsonl"
    bad.write_text(json.dumps(template_entry("run")) + "\n" + json.dumps({"action": "x"}) + "\n")
    with pytest.raises(ValueError, match=r"kb.jsonl:2: .*missing \['definition', 'phases'\]"):
        load_kb(bad)


def _llm_reply(body):
    prompt = body["messages"][0]["content"]
    if "'wave'" in prompt:
        return "Sure! Here it is:\nnot json at all"  # the writer falls back to the template for this one
    action = prompt.split("'")[1]
    return json.dumps({"definition": f"{action} is done with the whole body.", "phases": ["begin", "end"]})


def test_llm_writer_against_a_fake_endpoint(tmp_path, monkeypatch, capsys):
    labels = tmp_path / "labels.txt"
    labels.write_text("run\nwave\n")
    monkeypatch.setenv("FAKE_KEY", "sk-secret-123")
    out = tmp_path / "kb.jsonl"
    with FakeOpenAIEndpoint(_llm_reply) as fake:
        main(
            [
                "--out",
                str(out),
                "--labels",
                str(labels),
                "--writer",
                "llm",
                "--endpoint",
                fake.base_url,
                "--model",
                "fake-model",
                "--api-key-env",
                "FAKE_KEY",
                "--no-embed",
            ]
        )
    entries = {e["action"]: e for e in load_kb(out)}
    assert entries["run"]["writer"] == "llm:fake-model" and entries["run"]["phases"] == ["begin", "end"]
    assert entries["run"]["definition"] == "run is done with the whole body."
    assert entries["wave"]["writer"] == "template" and entries["wave"]["phases"][1] == "move the hand side to side"
    assert [r["auth"] for r in fake.requests] == ["Bearer sk-secret-123"] * 2
    assert fake.requests[0]["body"]["model"] == "fake-model"
    printed = capsys.readouterr()
    assert "1 LLM replies were not the JSON" in printed.out
    assert "sk-secret" not in printed.out + printed.err + out.read_text()


def test_client_errors_do_not_show_the_key(monkeypatch):
    monkeypatch.setenv("FAKE_KEY", "sk-secret-123")
    with FakeOpenAIEndpoint(lambda body: "ok") as fake:
        client = ChatClient(fake.base_url.replace("/v1", "/wrong"), "m", api_key_env="FAKE_KEY")
        with pytest.raises(EndpointError) as err:
            client.chat([{"role": "user", "content": "hi"}])
    assert "HTTP 404" in str(err.value) and "sk-secret" not in str(err.value) + repr(client)
    with pytest.raises(ValueError, match="NOT_SET_ANYWHERE"):
        ChatClient("http://127.0.0.1:1/v1", "m", api_key_env="NOT_SET_ANYWHERE")
    with pytest.raises(ValueError, match="http"):
        ChatClient("file:///etc/passwd", "m")


def test_build_kb_refuses_llm_without_a_client(tmp_path):
    with pytest.raises(ValueError, match="writer"):
        build_kb({"run": {"label": "run", "sources": [], "phases": None}}, tmp_path / "kb.jsonl", writer="llm")
