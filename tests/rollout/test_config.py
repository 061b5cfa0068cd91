"""The rollout config: the system prompt from text or a file, and the checks that run before Ray starts."""

from __future__ import annotations

import pytest

from rollout.config import PROMPTS_DIR, RolloutConfig


def test_system_prompt_is_text_or_a_file(tmp_path):
    assert (PROMPTS_DIR / "videostar_system.txt").is_file()
    cfg = RolloutConfig(system_prompt="videostar_system.txt")  # a name under recipes/prompts/
    cfg.resolve_system_prompt()
    assert cfg.system_prompt == (PROMPTS_DIR / "videostar_system.txt").read_text().strip()
    mine = tmp_path / "mine.txt"
    mine.write_text("  Say what the person does.\n")
    cfg = RolloutConfig(system_prompt=str(mine))  # a path
    cfg.resolve_system_prompt()
    assert cfg.system_prompt == "Say what the person does."
    cfg = RolloutConfig(system_prompt="Plain text, ending in .txt\nbut on two lines.txt")  # text stays text
    cfg.resolve_system_prompt()
    assert cfg.system_prompt.startswith("Plain text")


@pytest.mark.parametrize(
    "kwargs, expected",
    [
        ({"engine": "sglang"}, "rollout.engine: 'sglang' is not one of 'hf', 'vllm'"),
        ({"system_prompt": "missing.txt"}, "rollout.system_prompt: prompt file 'missing.txt' not found"),
        ({"n": 0}, "rollout.n: must be >= 1, got 0"),
        ({"cpu_threads": 0}, "rollout.cpu_threads: must be >= 1, got 0"),
        ({"top_p": 0.0}, "rollout.top_p: in (0, 1], got 0.0"),
        ({"is_correction": -1.0}, "rollout.is_correction: the TIS cap, >= 0 (0: off), got -1.0"),
        ({"is_correction": float("nan")}, "rollout.is_correction: the TIS cap, >= 0 (0: off), got nan"),
        ({"is_correction": 2.0, "top_k": 50}, "rollout.is_correction: the engines report log-probs of the top-k"),
        ({"is_correction": 2.0, "top_p": 0.9}, "rollout.is_correction: the engines report log-probs of the top-k"),
        ({"engine": "vllm", "engine_kwargs": {"max_images": 2}}, "rollout.engine_kwargs.max_images: set rollout."),
        ({"max_side": 10}, "rollout.max_side: at least 28 pixels (one vision patch pair), got 10"),
        ({"staleness": 2}, "rollout.staleness: 0 (synchronous) or 1 (one-step off-policy), got 2"),
        ({"staleness": 1, "placement": "colocated"}, "rollout.staleness: 1 overlaps the rollout with training"),
        (
            {"engine_kwargs": {"dtyp": "float32"}},
            "rollout.engine_kwargs.dtyp: unknown key; did you mean 'dtype'? "
            "(valid: dtype, device, cache_size, max_batch_size)",
        ),
        ({"tools": {"pose_estimaton": {}}}, "rollout.tools.pose_estimaton: unknown tool"),
    ],
)
def test_each_bad_field_is_named_with_its_value(kwargs, expected):
    problems = RolloutConfig(**kwargs).validate()
    assert any(p.startswith(expected) for p in problems), problems


def test_defaults_are_valid_and_null_disables_a_tool():
    cfg = RolloutConfig(tools={"pose_estimation": {}, "human_detection": None})
    assert cfg.validate() == [] and cfg.enabled_tools() == {"pose_estimation": {}}
