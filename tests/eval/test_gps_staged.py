"""GPS's staged inference (extract -> validate -> question -> describe): with replies written by hand (the project's
ScriptedEngine, named a fake: nothing is sampled) to check the branching and the threading exactly, and end to end
through `python -m eval.run --gps-staged --gps-without gpe,gpv` on the embedded default (the real tiny model on Ray
actors, whose text is random: the stages run and feed each other, nothing is said about quality)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from common.gps import NO_POINTS_PROMPTS as NO_POINTS
from common.gps import ROLE_PROMPTS, numbered, qa_text

EXTRACTIONS = ["Gold points:\n1. the arm rises\n2) the legs stay still", "- the man sits\n- he holds a cup"]


def scripted_reply(request, turn: int, tokenizer, extractions: list[str]) -> str:
    prompt = tokenizer.decode(request.prompt_ids)
    if ROLE_PROMPTS["gold_points"] in prompt:
        return extractions.pop(0)
    if "Answer yes or no." in prompt:
        return "Yes, they are." if "the arm rises" in prompt else "No: what he drinks is missing."
    if "Ask yourself questions" in prompt:
        return "Q: What does he drink?\nA: Tea, from the cup.\nQ: Where?\nA: At a desk."
    return "DESCRIPTION of: " + prompt.split("Gold points:\n")[-1].split("\nDescribe")[0].replace("\n", " | ")


def test_stages_branch_and_thread_their_outputs(tiny_model_dir, tmp_path):
    from transformers import AutoProcessor

    from common.sample_data import build_sample_data, default_sample_dir
    from common.schema import load_records
    from eval.gps import run_staged
    from rollout.config import RolloutConfig
    from rollout.engine import SamplingParams
    from rollout.scripted_engine import ScriptedEngine
    from rollout.worker import RolloutWorker

    tok = AutoProcessor.from_pretrained(tiny_model_dir).tokenizer
    extractions = list(EXTRACTIONS)
    engine = ScriptedEngine(tok, lambda req, turn: scripted_reply(req, turn, tok, extractions))
    worker = RolloutWorker(RolloutConfig(num_frames=4, max_side=112), tiny_model_dir, engine=engine)
    records = load_records(build_sample_data(default_sample_dir())["describe_eval"])[:2]
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"not a video")
    records.append({**records[0], "id": "broken", "video": str(broken)})

    trajs, infos = run_staged(worker, records, SamplingParams(max_new_tokens=96))
    # one engine batch per stage; the questioning stage only for the record whose points were judged insufficient,
    # and nothing after the extraction for the broken video
    assert engine.calls == 4 and len(engine.requests) == 2 + 2 + 1 + 2
    arm, man, bad = infos
    assert arm["points"] == ["the arm rises", "the legs stay still"] and arm["valid"] is True
    assert arm["socratic"] is None and arm["qa"] == [] and "socratic" not in arm["prompts"]
    assert man["points"] == ["the man sits", "he holds a cup"] and man["valid"] is False
    assert man["qa"] == [{"q": "What does he drink?", "a": "Tea, from the cup."}, {"q": "Where?", "a": "At a desk."}]
    assert man["prompts"]["validation"].endswith("Answer yes or no.\n1. the man sits\n2. he holds a cup")
    assert "sufficient:\n1. the man sits\n2. he holds a cup\nAsk yourself" in man["prompts"]["socratic"]
    assert arm["prompts"]["description"] == (
        "Gold points:\n1. the arm rises\n2. the legs stay still\nDescribe the person's action, intention and "
        "context in detail."
    )
    assert man["prompts"]["description"] == (
        "Gold points:\n1. the man sits\n2. he holds a cup\nQ: What does he drink?\nA: Tea, from the cup.\n"
        "Q: Where?\nA: At a desk.\nDescribe the person's action, intention and context in detail."
    )
    # the final trajectory is the description stage's, whose prompt held the earlier stages' outputs
    assert trajs[0].final_text.startswith("DESCRIPTION of: 1. the arm rises | 2. the legs stay still")
    assert "Q: Where? | A: At a desk." in trajs[1].final_text
    assert arm["model_tokens"] > trajs[0].num_model_tokens  # every stage's tokens, not only the last one's
    assert trajs[2].finish_reason == "video_error" and bad["gold_points"] == trajs[2].final_text
    assert bad["validation"] is None and bad["points"] == [] and list(bad["prompts"]) == ["gold_points"]


def test_gps_staged_end_to_end_on_the_embedded_default(tiny_model_dir, ray_local, tmp_path):
    from eval.run import main

    out = tmp_path / "out"
    main(
        [
            *("--checkpoint", tiny_model_dir, "--benchmark", "sample-describe", "--limit", "2", "--gps-staged"),
            *("--gps-without", "gpe,gpv"),
            *("--judge", json.dumps({"kind": "lexical"}), "--out", str(out)),
            *("--max-new-tokens", "12", "--num-cpus", "0.5", "--max-side", "112"),
        ]
    )
    entries = json.loads((out / "metrics.json").read_text())["results"]
    assert [e["variant"] for e in entries] == ["", "gps:staged", "gps:staged-gpe-gpv"]
    for e in entries:  # the lexical judge always gives one verdict per point: nothing malformed
        m = e["metrics"]
        assert m["n"] == 2 and m["failed"] == 0 and m["judge_malformed"] == 0 and 0.0 <= m["whole"] <= 1.0
    rows = [json.loads(x) for x in (out / "results.jsonl").read_text().splitlines()]
    staged = [r for r in rows if r["variant"] == "gps:staged"]
    assert len(staged) == 2 and all("gps" not in r for r in rows if r["variant"] == "")
    for row in staged:
        g = row["gps"]
        assert isinstance(g["gold_points"], str) and isinstance(g["validation"], str)
        listed = numbered(g["points"])
        # nothing read from a random extraction (blank lines): the no-points prompts (test_gps_ablations.py)
        prompts = {k: v.format(points=listed, qa="") for k, v in (ROLE_PROMPTS if g["points"] else NO_POINTS).items()}
        assert g["prompts"]["validation"] == prompts["validation"]
        assert g["prompts"]["description"].startswith(prompts["description"].split("Describe")[0])
        if g["valid"] is not True:  # the random text rarely starts with yes: then the questioning stage ran
            assert isinstance(g["socratic"], str) and g["prompts"]["socratic"] == prompts["socratic"]
        assert row["model_tokens"] == g["model_tokens"] > 0  # every stage's tokens
        assert len(row["entailment"]["labels"]) == 4  # the sample record's four gold points, judged
    table = (out / "table.md").read_text()
    assert "+ GPS staged inference |" in table and "+ GPS staged inference w/o GPE, GPV |" in table
    ablated = [r["gps"] for r in rows if r["variant"] == "gps:staged-gpe-gpv"]
    assert len(ablated) == 2
    for g in ablated:  # no points, no validation: the questions about the video alone, then the description
        assert g["without"] == ["gpe", "gpv"] and g["gold_points"] is None and g["validation"] is None
        assert list(g["prompts"]) == ["socratic", "description"] and g["prompts"]["socratic"].startswith(
            "Ask yourself"
        )
        closing = "Describe the person's action, intention and context in detail."
        assert g["prompts"]["description"] == qa_text(g["qa"]) + closing  # the pairs read, if any
    settings = json.loads((out / "settings.json").read_text())["gps_staged"]["value"]
    assert settings == {"without": {"gps:staged": [], "gps:staged-gpe-gpv": ["gpe", "gpv"]}}


def test_gps_staged_is_for_describe_benchmarks(tmp_path, tiny_model_dir, capsys):
    from eval.run import main

    with pytest.raises(SystemExit) as exc:
        main(["--checkpoint", tiny_model_dir, "--benchmark", "sample-aqa", "--gps-staged", "--out", str(tmp_path)])
    assert exc.value.code == 2 and "--gps-staged applies to describe benchmarks" in capsys.readouterr().err
    assert not Path(tmp_path / "metrics.json").exists()


def test_training_eval_of_a_describe_benchmark_needs_a_judge():
    from eval.config import EvalConfig

    problems = EvalConfig(every_k=2, benchmark="sample-describe").validate()
    assert problems == ["eval.judge: the describe benchmark sample-describe needs a judge (docs/eval.md)"]
    assert EvalConfig(every_k=2, benchmark="sample-describe", judge={"kind": "lexical"}).validate() == []
    assert "eval.entailment_mode: 'both'" in EvalConfig(entailment_mode="both").validate()[0]
