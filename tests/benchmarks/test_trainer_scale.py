"""The trainer scale benchmark: its parameter counts against the built models, its sequence lengths against the
trainer's own count, its verl-free loss against the trainer's loss, and a one-step smoke run at the tiny shape."""

from __future__ import annotations

import pytest

from benchmarks.scale_plan import Forward, Shape, memory_plan, param_counts, text_layer_bytes
from benchmarks.trainer_scale import main, parse_args, sequence_length, shape_config, synthetic_batch


@pytest.mark.parametrize("shape", ["tiny", "7b"])
def test_parameter_counts_are_the_built_models(shape):
    """Counted from the sizes, and summed over the parameters of the transformers model (on the meta device: no
    memory); Qwen2.5-VL-7B-Instruct is published as 8.29 B parameters."""
    import torch
    from transformers import Qwen2_5_VLForConditionalGeneration

    config = shape_config(shape)
    with torch.device("meta"):
        model = Qwen2_5_VLForConditionalGeneration(config)
    counts = param_counts(Shape.of(config))
    assert counts["total"] == sum(p.numel() for p in model.parameters())
    assert counts["vision"] == sum(p.numel() for p in model.model.visual.parameters())
    if shape == "7b":
        assert round(counts["total"] / 1e9, 2) == 8.29


def test_synthetic_lengths_are_the_trainers():
    from rl.batch import expanded_length

    args = parse_args(["--shape", "tiny", "--group", "3", "--response-tokens", "40", "--response-spread", "0.5"])
    s = Shape.of(shape_config("tiny"))
    batch = synthetic_batch(s, args)
    assert [len(t.response_ids) for t in batch] == [40, 30, 20]  # 40 * (1 - 0.5 * k / 2)
    # 8 frames of 112 px: a (4, 8, 8) grid, 4 * 8 * 8 / 2**2 = 64 tokens; 24 text tokens, vision start and end
    assert [expanded_length(t, 2) for t in batch] == [sequence_length(s, args, r) for r in (40, 30, 20)]
    assert sequence_length(s, args, 40) == 24 + 2 + 64 + 40


def test_text_layer_bytes_by_hand():
    """bf16 (2 bytes), hidden 8, 2 heads of 4, one key/value head (kv width 4), MLP 16: norms 2 * (4 + 2) * 8 = 96,
    q/k/v input 16, q, k, v and the attention output 2 * 16 + 2 * 8 = 48, cos and sin 2 * 2 * 4 = 16, MLP input 16,
    SwiGLU 4 * 2 * 16 = 128: 320 bytes per token."""
    s = Shape(100, 8, 16, 2, 2, 1, True, 4, 8, 1, 1, 8, 2, 2, 2, 4, (0,))
    assert text_layer_bytes(s, 2) == 320
    plan = memory_plan(s, Forward(1, 10, 8, 4, 8), precision="bf16-pure", checkpointing=False, world=1)
    n = param_counts(s)["total"]
    assert plan["weights"] == plan["gradients"] == 2 * n and plan["adamw"] == 4 * n and plan["reference"] == 2 * n


def test_the_verl_free_loss_is_the_trainers():
    import torch

    from benchmarks.scale_measure import plain_grpo_loss
    from rl.grpo import grpo_loss

    g = torch.Generator().manual_seed(0)
    logp, old, ref = (-torch.rand(3, 5, generator=g) * 2 for _ in range(3))
    adv, mask = torch.tensor([1.0, -0.5, -2.0]), (torch.rand(3, 5, generator=g) > 0.3).float()
    kwargs = {"clip_ratio": 0.2, "kl_coef": 0.05, "batch_num_tokens": 20, "dp_size": 2}
    want_loss, want = grpo_loss(logp, old, ref, adv, mask, **kwargs)
    got_loss, got = plain_grpo_loss(logp, old, ref, adv, mask, **kwargs)
    assert float(got_loss) == pytest.approx(float(want_loss), rel=1e-6)
    for key in ("pg_loss", "kl", "clipfrac", "clipfrac_lower", "ppo_kl"):
        assert got[key] == pytest.approx(want[key], rel=1e-6, abs=1e-7), key
    assert want["clipfrac"] > 0 and want["clipfrac_lower"] > 0  # both clips are exercised


def test_one_step_at_the_tiny_shape(capsys):
    out = main(
        ["--shape", "tiny", "--steps", "1", "--group", "2", "--frames", "4", "--frame-size", "56",
         "--response-tokens", "16", "--options", "precision,activation_checkpointing", "--device", "cpu"]
    )  # fmt: skip
    rows = {(r["option"], r["setting"]): r for r in out["rows"]}
    assert set(rows) == {
        ("defaults", "fp32, AC off"),
        *(("precision", p) for p in ("bf16-mixed", "bf16-pure", "fp32")),
        ("activation_checkpointing", "on"),
        ("activation_checkpointing", "off"),
    }
    for r in rows.values():
        assert r["peak_gib"] > 0.05 and r["seconds"] > 0 and r["tokens_per_s"] > 0 and r["mfu"] is None
        assert 0.75 < r["planned_gib"] / r["peak_gib"] < 1.3  # the accounting against the counted tensors
    # lr 1e-6: fp32 masters take every update, bf16 weights only those of their smallest entries (~2%)
    assert rows[("precision", "bf16-mixed")]["changed"] > 0.99 and rows[("precision", "fp32")]["changed"] > 0.99
    assert rows[("precision", "bf16-pure")]["changed"] < 0.05
    assert rows[("precision", "bf16-pure")]["peak_gib"] < rows[("precision", "bf16-mixed")]["peak_gib"]
    plan = {(p["precision"], p["checkpointing"]): p for p in out["plan"]}
    assert len(plan) == 6 and all(plan[(p, True)]["peak"] <= plan[(p, False)]["peak"] for p, _ in plan)
    printed = capsys.readouterr().out
    assert "weights changed" in printed and "memory plan per rank, computed from the shapes (not measured)" in printed
