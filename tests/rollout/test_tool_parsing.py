"""parse_tool_calls and format_tool_response, table-driven; expected values written by hand."""

from __future__ import annotations

import time

import numpy as np
import pytest

from envs.base import ToolResult
from rollout.tool_loop import format_tool_response, parse_tool_calls

POSE = {"name": "pose_estimation", "arguments": {"frames": [0, 4]}}

CASES = [
    ("good call", '<tool_call>\n{"name": "pose_estimation", "arguments": {"frames": [0, 4]}}\n</tool_call>', [POSE]),
    (
        "two calls",
        'x <tool_call>{"name": "a", "arguments": {}}</tool_call> y <tool_call>{"name": "b", "arguments": {"k": 1}}'
        "</tool_call>",
        [{"name": "a", "arguments": {}}, {"name": "b", "arguments": {"k": 1}}],
    ),
    ("bad json", '<tool_call>{"name": "a", "arguments": {frames: 1}}</tool_call>', ["bad_json"]),
    ("unclosed", '<tool_call>{"name": "a", "arguments": {}}', ["unclosed_tag"]),
    ("missing name", '<tool_call>{"arguments": {}}</tool_call>', ["missing_name"]),
    ("empty name", '<tool_call>{"name": "", "arguments": {}}</tool_call>', ["missing_name"]),
    ("not an object", "<tool_call>[1, 2]</tool_call>", ["not_object"]),
    (
        "string arguments",
        '<tool_call>{"name": "a", "arguments": "{\\"k\\": 2}"}</tool_call>',
        [{"name": "a", "arguments": {"k": 2}}],
    ),
    ("bad string arguments", '<tool_call>{"name": "a", "arguments": "{k: 2}"}</tool_call>', ["bad_json"]),
    ("list arguments", '<tool_call>{"name": "a", "arguments": [1]}</tool_call>', ["bad_arguments"]),
    ("no arguments", '<tool_call>{"name": "a"}</tool_call>', [{"name": "a", "arguments": {}}]),
    ("no call", "<think>hm</think><answer>run</answer>", []),
    (
        "good then unclosed",
        '<tool_call>{"name": "a", "arguments": {}}</tool_call><tool_call>{"name": "b"',
        [{"name": "a", "arguments": {}}, "unclosed_tag"],
    ),
]


@pytest.mark.parametrize("text,expected", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_parse_table(text, expected):
    got = parse_tool_calls(text)
    assert len(got) == len(expected)
    for (call, err), want in zip(got, expected):
        if isinstance(want, dict):
            assert err is None and call == want
        else:
            assert call is None and err.startswith(want + ": ") and len(err) > len(want) + 10


def test_many_repeated_tags_parse_fast():
    text = '<tool_call>{"name": "a", "arguments": {"i": 1}}</tool_call>' * 10_000
    start = time.perf_counter()
    got = parse_tool_calls(text, max_calls=10_000)
    assert time.perf_counter() - start < 1.0
    assert len(got) == 10_000 and all(c == {"name": "a", "arguments": {"i": 1}} for c, _ in got)
    # By default 16 are parsed and the other 9984 counted in one error entry.
    got = parse_tool_calls(text)
    assert len(got) == 17 and all(c == {"name": "a", "arguments": {"i": 1}} for c, _ in got[:16])
    assert got[16] == (None, "too_many_calls: 9984 of the 10000 tool calls were not run; at most 16 run per turn")
    # A pathological run of opening tags without closings stays linear too.
    start = time.perf_counter()
    got = parse_tool_calls("<tool_call>" * 10_000)
    assert time.perf_counter() - start < 1.0
    assert got[-1][1].startswith("unclosed_tag")


def test_format_tool_response_matches_the_chat_template(tiny_model_dir):
    """Our reply format equals what the chat template renders for tool messages (a second, independent method)."""
    from transformers import AutoProcessor

    processor = AutoProcessor.from_pretrained(tiny_model_dir)
    messages = [
        {"role": "user", "content": "q"},
        {"role": "assistant", "content": "", "tool_calls": [{"name": "a", "arguments": {}}]},
        {"role": "tool", "content": "first"},
        {"role": "tool", "content": [{"type": "image"}, {"type": "text", "text": "second"}]},
    ]
    rendered = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    image = np.zeros((4, 4, 3), np.uint8)
    ours = format_tool_response([ToolResult("first"), ToolResult("second", images=[image])])
    assert rendered.endswith("</tool_call><|im_end|>\n" + ours)
    assert ours == (
        "<|im_start|>user\n<tool_response>\nfirst\n</tool_response>\n<tool_response>\n"
        "<|vision_start|><|image_pad|><|vision_end|>second\n</tool_response><|im_end|>\n<|im_start|>assistant\n"
    )
