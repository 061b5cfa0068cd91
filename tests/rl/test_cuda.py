"""The trainer's GPU path (skipped without CUDA): packed and padded log-probs agree on the GPU in float32 and in
bfloat16, and one FSDP2 rank over NCCL trains in bf16-mixed precision, the GPU default (SFT with packing, a GRPO
update where verl is installed, a checkpoint that resumes its fp32 masters)."""

from __future__ import annotations

import socket

import pytest

from tests.rl.rl_test_data import make_trajectories

pytestmark = pytest.mark.gpu


def test_packed_equals_padded_on_cuda(tiny_model_dir):
    import torch
    from transformers import AutoModelForImageTextToText

    from rl.batch import build_batch, token_logprobs

    batch = build_batch(make_trajectories(tiny_model_dir))
    mask = batch.response_mask.cuda().bool()
    for dtype, tol in ((torch.float32, 1e-4), (torch.bfloat16, 0.1)):
        model = AutoModelForImageTextToText.from_pretrained(tiny_model_dir, dtype=dtype).cuda().eval()
        with torch.no_grad():
            padded = token_logprobs(model, batch)
            packed = token_logprobs(model, batch, packed=True)
        assert padded.device.type == "cuda" and torch.isfinite(packed[mask]).all()
        # bfloat16 rounds differently in differently shaped matmuls: compare the mean gap, not each token
        gap = (padded - packed)[mask].abs()
        assert float(gap.max() if dtype == torch.float32 else gap.mean()) < tol, (dtype, float(gap.max()))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_fsdp2_rank_over_nccl_trains_in_bfloat16(tiny_model_dir, tmp_path):
    import torch

    from rl.config import TrainerConfig
    from rl.trainer import TrainerRank

    config = TrainerConfig(world_size=1, backend="nccl", lr=1e-3, kl_coef=0.01, pack_max_tokens=256)
    rank = TrainerRank(0, config, tiny_model_dir, seed=0, temperature=1.0, total_steps=0)
    rank.setup("127.0.0.1", _free_port())
    try:
        # bf16-mixed: fp32 masters, a bf16 reference, activation checkpointing on, bf16 exports
        assert {p.dtype for p in rank.model.parameters()} == {torch.float32}
        assert {p.dtype for p in rank.ref.parameters()} == {torch.bfloat16}
        assert rank.model.model.language_model.layers[0].gradient_checkpointing
        assert {v.dtype for v in rank.export_weights().values() if v.is_floating_point()} == {torch.bfloat16}
        trajs = make_trajectories(tiny_model_dir)
        losses = [rank.sft_step(trajs)["sft/loss"] for _ in range(4)]
        assert losses[-1] < losses[0], losses
        try:  # the GRPO loss is verl's (a CPU-side dependency a bare GPU image may lack)
            import verl  # noqa: F401
        except ImportError:
            pass
        else:
            from rl.grpo import compute_advantages

            advantages = compute_advantages([1.0, 0.0, 0.0, 1.0], [t.sample_id for t in trajs])
            metrics = rank.train_step(trajs, advantages)
            assert all(torch.isfinite(torch.tensor(v)) for v in metrics.values()), metrics
            assert metrics["train/num_tokens"] == sum(sum(t.response_mask) for t in trajs)
        # the same weights, packed and padded, in bfloat16: the mean log-prob gap is rounding-sized
        from rl.batch import build_batch

        batch = build_batch(trajs)
        with torch.no_grad():
            packed = rank._logprobs(rank.model, batch)
            rank.cfg.pack_max_tokens = 0
            padded = rank._logprobs(rank.model, batch)
        mask = batch.response_mask.cuda().bool()
        assert float((packed - padded)[mask].abs().mean()) < 0.1
        masters = {k: v.clone() for k, v in rank.strategy._full_weights(rank.model).items()}
        out = rank.save_checkpoint(str(tmp_path / "ckpt"), {"step": 5})
        assert rank.load_checkpoint(out) == {"step": 5}
        for key, value in rank.strategy._full_weights(rank.model).items():  # the fp32 masters come back exactly
            torch.testing.assert_close(value, masters[key], atol=0, rtol=0)
    finally:
        rank.shutdown()


def test_trainer_scores_cuda_rollouts_as_sampled(tiny_model_dir):
    """bfloat16 on the GPU: the engine's sampled log-probs and the trainer's (padded and packed) agree to bf16
    rounding, so `train/rollout_logprob_diff` stays near 0 on the GPU path too."""
    import numpy as np
    import torch
    from transformers import AutoModelForImageTextToText

    from rl.batch import build_batch, token_logprobs
    from rollout.engine import GenerationRequest, SamplingParams
    from rollout.hf_engine import HFEngine
    from rollout.multimodal import process_video
    from rollout.trajectory import Trajectory

    engine = HFEngine(tiny_model_dir, dtype="bfloat16", device="cuda")
    frames = np.random.default_rng(0).integers(0, 256, size=(4, 112, 112, 3), dtype=np.uint8)
    content = [{"type": "video"}, {"type": "text", "text": "What is the person doing?"}]
    text = engine.processor.apply_chat_template(
        [{"role": "user", "content": content}], tokenize=False, add_generation_prompt=True
    )
    prompt = engine.tokenizer(text, add_special_tokens=False)["input_ids"]
    request = GenerationRequest(prompt, videos=[frames], video_seconds_per_frame=[0.5])
    completions = engine.generate([request, request], SamplingParams(max_new_tokens=12, temperature=1.0, seed=1))
    mm = process_video(engine.processor, frames, 0.5)
    trajs = [
        Trajectory("v", i, prompt, c.token_ids, [1] * len(c.token_ids), c.logprobs, mm_inputs=mm)
        for i, c in enumerate(completions)
    ]
    model = AutoModelForImageTextToText.from_pretrained(tiny_model_dir, dtype=torch.bfloat16).cuda().eval()
    batch = build_batch(trajs)
    mask = batch.response_mask.cuda().bool()
    sampled = batch.rollout_logprobs.cuda()[mask]
    with torch.no_grad():
        for packed in (False, True):
            scored = token_logprobs(model, batch, packed=packed)[mask]
            assert float((scored - sampled).abs().mean()) < 0.05, (packed, scored, sampled)
