"""action_explanation: retrieval over the default knowledge base with the real all-MiniLM-L6-v2 embedder."""

from __future__ import annotations

import pytest

from envs.base import run_tool, run_tool_batch


@pytest.fixture(scope="module")
def tool():
    from envs.explanation import ActionExplanationTool

    return ActionExplanationTool()  # kb="embedded": HMDB-51, UCF-101 and the sample labels, template definitions


def _top(result):
    return [r["action"] for r in result.data["queries"][0]["results"]]


@pytest.mark.parametrize(
    "query, expected",
    [
        ("a person pedals a bicycle along the road", "ride bike"),
        ("going up a flight of steps", "climb stairs"),
        ("a man speaking", "talk"),
    ],
)
def test_paraphrased_query_finds_the_definition(tool, query, expected):
    result = run_tool(tool, {"query": query, "top_k": 2}, None)
    assert result.ok, result.text
    assert _top(result)[0] == expected
    assert f"  1. {expected} (" in result.text and len(_top(result)) == 2


def test_action_names_rank_their_own_definition_first(tool):
    result = run_tool(tool, {"actions": ["climb_stairs", "Jumping Jack"], "top_k": 1}, None)
    assert result.ok
    first, second = result.data["queries"]
    assert first["results"][0]["action"] == "climb stairs" and second["results"][0]["action"] == "jumping jack"
    # the definition decomposes the action into phases
    assert len(first["results"][0]["phases"]) >= 2 and "climb stairs:" in result.text


def test_batched_calls_match_single_calls(tool):
    calls = [({"query": "going up a flight of steps"}, None), ({}, None), ({"actions": ["wave"], "top_k": 3}, None)]
    batched = run_tool_batch(tool, calls)
    single = [run_tool(tool, args, video) for args, video in calls]
    assert [r.text for r in batched] == [r.text for r in single]
    assert batched[1].error == "bad_arguments" and "'actions'" in batched[1].text


@pytest.mark.parametrize(
    "args, needle",
    [
        ({"actions": "run"}, "actions"),
        ({"query": "x" * 301}, "query"),
        ({"top_k": 9, "query": "run"}, "top_k"),
        ({"query": "run", "path": "/etc"}, "path"),
        ({"actions": []}, "actions"),
    ],
)
def test_malformed_calls(tool, args, needle):
    result = run_tool(tool, args, None)
    assert not result.ok and result.error == "bad_arguments" and needle in result.text


def test_missing_kb_file_fails_clearly(tmp_path):
    from envs.explanation import ActionExplanationTool

    with pytest.raises(FileNotFoundError, match="nope.jsonl"):
        ActionExplanationTool(kb=str(tmp_path / "nope.jsonl"))
