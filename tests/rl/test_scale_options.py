"""Trainer options for scale, on one in-process gloo rank (no Ray, no GPU): the precision of the weights and
the optimizer state, activation checkpointing, and the on-policy reuse of the policy pass's log-probs."""

from __future__ import annotations

import contextlib
import socket
from typing import Any

import pytest

from tests.rl.rl_test_data import make_trajectories


@pytest.fixture(scope="module")
def batch(tiny_model_dir):
    from rl.grpo import compute_advantages

    trajs = make_trajectories(tiny_model_dir, seed=0)
    return trajs, compute_advantages([1.0, 0.0, 0.0, 1.0], [t.sample_id for t in trajs])


@contextlib.contextmanager
def one_rank(model_dir: str, temperature: float = 1.0, is_correction: float = 0.0, **fields):
    """A set-up TrainerRank of world size 1 in this process (its own gloo group, closed on exit); `fields` are the
    TrainerConfig's, `temperature` and `is_correction` the rollout's."""
    import torch

    from rl.config import TrainerConfig
    from rl.trainer import TrainerRank

    cfg = TrainerConfig(world_size=1, **fields)
    assert cfg.validate() == []
    threads = torch.get_num_threads()
    rank = TrainerRank(0, cfg, model_dir, seed=0, temperature=temperature, total_steps=0, is_correction=is_correction)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    try:
        rank.setup("127.0.0.1", port)
        yield rank
    finally:
        rank.shutdown()
        torch.set_num_threads(threads)


def _changed(before: dict, after: dict) -> dict:
    return {k: after[k] != before[k] for k in before if before[k].is_floating_point()}


def _weights(rank) -> dict:
    # on CPU the exported fp32 tensors may share storage with the live parameters: copy before stepping
    return {k: v.clone() for k, v in rank.export_weights().items()}


def _kind(name: str, tensor) -> str:
    if tensor.ndim == 1 and "norm" in name or name.endswith("ln_q.weight"):
        return "norm"  # RMSNorm / LayerNorm gains, initialised at 1
    if name.endswith(("k_proj.bias", "attn.qkv.bias")):
        # a key bias (alone, or the middle third of the vision tower's fused qkv bias): q . b_k is the same for
        # every key of a query and softmax ignores a constant, so it has no gradient in exact arithmetic and
        # whether such an entry moves is rounding noise
        return "key_bias"
    return "bias" if name.endswith("bias") else "matrix"


def test_bf16_mixed_keeps_small_updates_that_bf16_pure_rounds_away(tiny_model_dir, batch):
    """One SFT step at lr 1e-6. Adam's first step moves every weight with a non-negligible gradient by
    lr * g / (|g| + eps) ~ 1e-6, whatever the gradient's size.

    bf16 keeps 8 significant bits: a weight in [2^e, 2^(e+1)) has an ulp of 2^(e-7), and w - 1e-6 rounds back to
    w unless 1e-6 > ulp / 2 = 2^(e-8), i.e. 2^e <= 2^-12 (2^-20 ~ 9.5e-7). So under bf16-pure only weights with
    |w| < 2^-11 ~ 4.9e-4 can move: for the tiny model's N(0, 0.02)-initialised matrices that is
    P(|z| < 0.0244) ~ 2% of their entries; RMSNorm gains (1.0, half-ulp 2^-9 below 1) never move; biases
    initialised at exactly 0 do move (the ulp near 0 is tiny), which a pretrained model's non-zero biases would
    not. Under bf16-mixed the step is applied to fp32 masters (ulp at 1.0 is 2^-23 ~ 1.2e-7 < 1e-6): every weight
    with a gradient moves, gains included.
    The forward runs in bf16 in both, so the loss is the same, and differs from the fp32 one."""
    trajs, _ = batch
    results = {}
    for precision in ("bf16-mixed", "bf16-pure", "fp32"):
        with one_rank(tiny_model_dir, precision=precision, lr=1e-6, kl_coef=0.0, micro_batch_size=4) as rank:
            masters = {p.dtype for p in rank.model.parameters()}
            before = _weights(rank)
            metrics = rank.sft_step(trajs)
            results[precision] = (masters, before, _changed(before, _weights(rank)), metrics["sft/loss"])

    import torch

    assert results["bf16-mixed"][0] == {torch.float32} and results["bf16-pure"][0] == {torch.bfloat16}
    assert results["bf16-mixed"][3] == pytest.approx(results["bf16-pure"][3], rel=1e-6)  # the same bf16 forward
    assert results["bf16-mixed"][3] != results["fp32"][3]

    def fractions(precision):
        _, before, changed, _ = results[precision]
        moved, total = {}, {}
        for name, mask in changed.items():
            kind = _kind(name, before[name])
            moved[kind] = moved.get(kind, 0) + int(mask.sum())
            total[kind] = total.get(kind, 0) + mask.numel()
        return {kind: moved[kind] / total[kind] for kind in total}

    mixed, pure = fractions("bf16-mixed"), fractions("bf16-pure")
    assert mixed["norm"] == 1.0 and mixed["bias"] == 1.0 and mixed["matrix"] > 0.999
    assert pure["norm"] == 0.0 and pure["bias"] == 1.0  # zero-initialised biases: see the docstring
    _, before, changed, _ = results["bf16-pure"]
    matrices = [k for k in changed if _kind(k, before[k]) == "matrix"]
    small = sum(int((before[k].abs() < 2**-11).sum()) for k in matrices) / sum(before[k].numel() for k in matrices)
    assert 0.01 < small < 0.03  # the ~2% worked out above
    assert 0.5 * small < pure["matrix"] <= small  # only small weights can move (not those with a ~0 gradient)
    for name in matrices:  # and none above 2^-11 (at exactly 2^-11 a step toward 0 meets the finer ulp below)
        assert not changed[name][before[name].abs() > 2**-11].any(), name


def test_validate_names_precision_and_activation_checkpointing():
    from rl.config import TrainerConfig

    (problem,) = TrainerConfig(precision="bf16").validate()
    assert "trainer.precision: 'bf16'" in problem and "'bf16-mixed'" in problem and "'bf16-pure'" in problem
    (problem,) = TrainerConfig(precision="bf16-pure", strategy="deepspeed").validate()
    assert problem.startswith("trainer.precision: 'bf16-pure' is FSDP2 only")
    (problem,) = TrainerConfig(activation_checkpointing="yes").validate()
    assert problem.startswith("trainer.activation_checkpointing: 'yes'")
    for precision in ("auto", "bf16-mixed", "fp32", "bf16-pure"):
        assert TrainerConfig(precision=precision, activation_checkpointing=True).validate() == []


def _grpo_step(model_dir, batch, **fields) -> tuple[dict, dict, Any]:
    """(metrics, weights after, the rank's model) of one fp32 GRPO step at lr 1e-3 with a reference (kl 0.01)."""
    trajs, adv = batch
    forced = fields.pop("force_old_forward", False)
    with one_rank(model_dir, precision="fp32", lr=1e-3, kl_coef=0.01, micro_batch_size=2, **fields) as rank:
        if forced:
            rank._reuse_policy_logprobs = False
        calls = []
        scoring = rank._logprobs
        rank._logprobs = lambda model, b, **kw: calls.append((model is rank.model, len(b))) or scoring(model, b, **kw)
        layers = {"text_layer_runs": rank.model.model.language_model.layers[0], "vision_block_runs": None}
        layers["vision_block_runs"] = rank.model.model.visual.blocks[0]
        runs = dict.fromkeys(layers, 0)
        for key, layer in layers.items():
            layer.register_forward_pre_hook(lambda *_, key=key: runs.__setitem__(key, runs[key] + 1))
        metrics = rank.train_step(trajs, adv)
        metrics.update(runs, policy_forwards=sum(n for own, n in calls if own))
        return metrics, _weights(rank), rank.model


def test_activation_checkpointing_changes_neither_loss_nor_gradients(tiny_model_dir, batch):
    """Recomputing activations in the backward gives the same loss, gradient norm and update (fp32)."""
    off, weights_off, model_off = _grpo_step(tiny_model_dir, batch, activation_checkpointing=False)
    on, weights_on, model_on = _grpo_step(tiny_model_dir, batch, activation_checkpointing=True)
    inner = model_on.model
    # on in the language model and the vision tower, off by default on CPU
    assert inner.language_model.gradient_checkpointing and inner.visual.gradient_checkpointing
    assert (
        not model_off.model.language_model.gradient_checkpointing and not model_off.model.visual.gradient_checkpointing
    )
    assert inner.language_model.layers[0].gradient_checkpointing and inner.visual.blocks[0].gradient_checkpointing
    # each checkpointed layer runs again in the backward
    assert off["vision_block_runs"] > 0 and on["vision_block_runs"] == 2 * off["vision_block_runs"]
    assert off["text_layer_runs"] > 0 and on["text_layer_runs"] == 2 * off["text_layer_runs"]
    assert off["train/grad_norm"] > 0
    for key in ("train/loss", "train/pg_loss", "train/kl", "train/grad_norm", "train/entropy"):
        assert on[key] == pytest.approx(off[key], rel=1e-5, abs=1e-5), key
    assert max(float((weights_on[k] - weights_off[k]).abs().max()) for k in weights_off) < 1e-5


def test_on_policy_step_reuses_the_policy_pass_log_probs(tiny_model_dir, batch):
    """mini_batches 1: no separate no-grad forward of the policy, and the same loss, metrics and update as with it."""
    skip, weights_skip, _ = _grpo_step(tiny_model_dir, batch)
    full, weights_full, _ = _grpo_step(tiny_model_dir, batch, force_old_forward=True)
    trajs, _ = batch
    assert skip["policy_forwards"] == len(trajs) and full["policy_forwards"] == 2 * len(trajs)
    assert skip["train/clipfrac"] == 0.0 and full["train/clipfrac"] == 0.0  # ratio 1: clipping inactive
    assert skip["train/rollout_logprob_diff"] > 0  # still reported, from the reused log-probs
    for key in ("train/loss", "train/pg_loss", "train/kl", "train/grad_norm", "train/rollout_logprob_diff"):
        assert skip[key] == pytest.approx(full[key], rel=1e-6, abs=1e-6), key
    assert max(float((weights_skip[k] - weights_full[k]).abs().max()) for k in weights_full) < 1e-6


def test_bf16_checkpoint_keeps_fp32_masters_for_resume(tiny_model_dir, batch, tmp_path):
    """With CUDA, bf16-mixed exports bf16 (what vLLM and from_pretrained expect); the checkpoint's model files are
    then bf16, while trainer_state/dcp/ holds the fp32 masters, so a resume continues from the exact fp32 weights.
    Here the CUDA export dtype is set by hand on a CPU rank."""
    import torch
    from safetensors import safe_open

    trajs, _ = batch
    fields = {"precision": "bf16-mixed", "lr": 1e-6, "kl_coef": 0.0, "micro_batch_size": 4}
    with one_rank(tiny_model_dir, **fields) as rank:
        rank.strategy.export_dtype = torch.bfloat16
        rank.sft_step(trajs)
        masters = {k: v.detach().clone() for k, v in rank.strategy._full_weights(rank.model).items()}
        exported = rank.export_weights()
        assert {v.dtype for v in exported.values()} == {torch.bfloat16}
        rank.save_checkpoint(str(tmp_path / "step_1"), {"step": 1})
    with safe_open(str(tmp_path / "step_1" / "model.safetensors"), "pt") as f:
        assert {f.get_slice(k).get_dtype() for k in f.keys()} == {"BF16"}
    with safe_open(
        str(tmp_path / "step_1" / "trainer_state" / "dcp" / "shard-00001-model-00001-of-00001.safetensors"), "pt"
    ) as f:
        assert {f.get_slice(k).get_dtype() for k in f.keys() if k.startswith("model/")} == {"F32"}
    with one_rank(tiny_model_dir, **fields) as rank:
        rank.strategy.export_dtype = torch.bfloat16
        rank.load_checkpoint(str(tmp_path / "step_1"))
        resumed = rank.strategy._full_weights(rank.model)
        assert {v.dtype for v in resumed.values()} == {torch.float32}
        for key, value in masters.items():
            torch.testing.assert_close(resumed[key], value, atol=0, rtol=0)
        # the 1e-6 step is below bf16's resolution for most weights: only the masters carry it
        assert any(not torch.equal(value.to(torch.bfloat16).float(), value) for value in masters.values())


def _offloaded(model) -> bool:
    """Whether every FSDP2 shard group of `model` keeps its shards in CPU memory (CPUOffloadPolicy)."""
    from torch.distributed.fsdp import FSDPModule

    groups = [m._get_fsdp_state()._fsdp_param_group for m in model.modules() if isinstance(m, FSDPModule)]
    flags = [p.offload_to_cpu for g in groups if g is not None for p in g.fsdp_params]
    assert flags, "no FSDP2 parameters found"
    return all(flags)


@pytest.mark.parametrize("offload", ["reference", "all"])
def test_offload_keeps_the_shards_on_the_cpu_and_changes_nothing_else(tiny_model_dir, batch, offload):
    """trainer.offload puts the reference's (and with "all" the policy's) shard groups under FSDP2's CPU offload;
    the step is the same as without it (on CPU, where the copies to the device are no-ops: what it saves on a GPU
    is device memory, measured by benchmarks/trainer_scale.py there)."""
    trajs, adv = batch
    results = {}
    for setting in ("none", offload):
        with one_rank(tiny_model_dir, precision="fp32", lr=1e-3, kl_coef=0.01, offload=setting) as rank:
            results[setting] = (rank.train_step(trajs, adv), _weights(rank))
            assert _offloaded(rank.ref) == (setting != "none")
            assert _offloaded(rank.model) == (setting == "all")
            assert all(p.device.type == "cpu" for p in rank.model.parameters())
    (m_off, w_off), (m_on, w_on) = results["none"], results[offload]
    assert m_off["train/grad_norm"] > 0
    for key in ("train/loss", "train/pg_loss", "train/kl", "train/grad_norm"):
        assert m_on[key] == pytest.approx(m_off[key], rel=1e-6, abs=1e-6), key
    assert max(float((w_on[k] - w_off[k]).abs().max()) for k in w_off) < 1e-6


def test_offload_is_fsdp2_only():
    from rl.config import TrainerConfig

    problems = TrainerConfig(strategy="deepspeed", offload="all").validate()
    assert any(p.startswith("trainer.offload: 'all' is FSDP2 only; with DeepSpeed set") for p in problems)
    assert TrainerConfig(offload="disk").validate() == [
        "trainer.offload: 'disk' is not one of 'none', 'reference', 'all'"
    ]
