"""FSDP2 and DeepSpeed ZeRO-3 on two gloo rank actors: the same SFT loss and update on the same batch (with
different micro-batching), the cosine schedule's rates, checkpoints in one Hugging Face format that resume
exactly, and the same GRPO update. DeepSpeed ZeRO-2 with sequence packing gives the same SFT steps and GRPO update
too."""

from __future__ import annotations

import pytest

from tests.rl.rl_test_data import make_trajectories

LR = 1e-2
# warm-up 1, cosine over 4 steps: by hand, steps 0..2 run at LR * [1, 1, (1 + cos(pi / 2)) / 2] = [LR, LR, LR / 2]
# Adam's first steps move each weight by about lr * g / (|g| + eps): for gradients near eps the summation order
# (micro-batching, ZeRO's reduce-scatter) shows in the update. The weights agree to 2% of one step's size.
WEIGHT_TOL = 0.02 * LR
SCHEDULE = {"lr": LR, "lr_schedule": "cosine", "warmup_steps": 1}
TOTAL_STEPS = 4


def _max_abs_diff(a, b):
    assert set(a) == set(b)
    return max(float((a[k].float() - b[k].float()).abs().max()) for k in a)


@pytest.fixture(scope="module")
def groups(ray_local, tiny_model_dir):
    from rl.config import TrainerConfig
    from rl.trainer import TrainerGroup

    def group(**kwargs):
        return TrainerGroup(TrainerConfig(**small, **kwargs), tiny_model_dir, total_steps=TOTAL_STEPS)

    # FSDP2 forwards one sequence at a time (4 micro-batches per optimizer step on 2 ranks); ZeRO-3 two at a time,
    # longest first. The persistence threshold 0 partitions even the tiny model's small vision parameters, so the
    # ranks' vision-tower gathers must match (a text-only micro-batch beside a video + image one).
    small = {"num_cpus": 0.5, "kl_coef": 0.0, "world_size": 2, **SCHEDULE}  # 4 ranks on a few logical CPUs
    fsdp = group(micro_batch_size=1)
    ds = group(
        micro_batch_size=2,
        strategy="deepspeed",
        zero_stage=3,
        zero_config={"stage3_param_persistence_threshold": 0},
        group_by_length=True,
    )
    # ZeRO-2 with packs of at most 128 tokens: the batch's sequences are 32, 94, 118 and 32 tokens long, so rank 0
    # (32 + 94) fits one pack and rank 1 (118 + 32) needs two; rank 0 splits its pack to run two forwards as well.
    packed = group(strategy="deepspeed", zero_stage=2, pack_max_tokens=128)
    yield fsdp, ds, packed
    for group in (fsdp, ds, packed):
        group.shutdown()


def test_fsdp2_and_deepspeed_agree_and_checkpoints_round_trip(groups, tiny_model_dir, tmp_path):
    import torch
    from transformers import AutoModelForImageTextToText

    fsdp, ds, packed = groups
    trajs = make_trajectories(tiny_model_dir, seed=0)
    other = make_trajectories(tiny_model_dir, seed=1)
    start = fsdp.export_weights()
    assert _max_abs_diff(start, ds.export_weights()) == 0.0  # both loaded the same directory

    for step, batch in enumerate((trajs, other)):
        a, b = fsdp.sft_step(batch), ds.sft_step(batch)
        assert a["sft/loss"] == pytest.approx(b["sft/loss"], rel=1e-5), step
        assert a["sft/grad_norm"] == pytest.approx(b["sft/grad_norm"], rel=1e-4), step
        assert a["sft/num_tokens"] == b["sft/num_tokens"] == sum(sum(t.response_mask) for t in batch)
        assert a["sft/lr"] == b["sft/lr"] == pytest.approx(LR)
        assert (a["sft/micro_batches"], b["sft/micro_batches"]) == (2, 1)  # per rank: 2 sequences each
        assert _max_abs_diff(fsdp.export_weights(), ds.export_weights()) < WEIGHT_TOL, step
        c = packed.sft_step(batch)
        assert c["sft/loss"] == pytest.approx(a["sft/loss"], rel=1e-5), step
        assert c["sft/grad_norm"] == pytest.approx(a["sft/grad_norm"], rel=1e-4), step
        assert c["sft/micro_batches"] == 2 and c["sft/padded_tokens"] == 32 + 94 + 118 + 32  # no padding
        assert _max_abs_diff(fsdp.export_weights(), packed.export_weights()) < WEIGHT_TOL, step
    assert _max_abs_diff(start, fsdp.export_weights()) > 10 * WEIGHT_TOL  # and they did train

    # one Hugging Face layout for both strategies; the weights load as is with from_pretrained
    paths = {"fsdp": tmp_path / "fsdp", "ds": tmp_path / "ds"}
    fsdp.save_checkpoint(paths["fsdp"], {"step": 2})
    ds.save_checkpoint(paths["ds"], {"step": 2})
    exported = {"fsdp": fsdp.export_weights(), "ds": ds.export_weights()}
    for name, path in paths.items():
        model = AutoModelForImageTextToText.from_pretrained(str(path), dtype=torch.float32)
        got, want = model.state_dict(), exported[name]
        assert max(float((got[k] - want[k]).abs().max()) for k in want) == 0.0, name
        assert sorted(p.name for p in path.glob("*.safetensors")) == ["model.safetensors"]
        assert (path / "tokenizer.json").is_file() and not list(path.rglob("*.pt")) and not list(path.rglob("*.bin"))
    assert sorted(p.name for p in (paths["ds"] / "trainer_state").glob("optimizer_rank*.safetensors")) == [
        "optimizer_rank0.safetensors",
        "optimizer_rank1.safetensors",
    ]

    # resume is exact: step 3 (cosine, LR / 2), then back to the checkpoint and step 3 again
    third = ds.sft_step(trajs)
    assert third["sft/lr"] == pytest.approx(LR / 2)
    ds.sft_step(other)  # moves weights, Adam moments and the schedule on further
    assert ds.load_checkpoint(paths["ds"]) == {"step": 2}
    again = ds.sft_step(trajs)
    for key in ("sft/loss", "sft/grad_norm", "sft/lr"):
        assert again[key] == pytest.approx(third[key], rel=1e-5), key
    assert fsdp.load_checkpoint(paths["fsdp"]) == {"step": 2}
    fsdp_third = fsdp.sft_step(trajs)
    assert fsdp_third["sft/loss"] == pytest.approx(third["sft/loss"], rel=1e-4)
    assert _max_abs_diff(fsdp.export_weights(), ds.export_weights()) < WEIGHT_TOL
    packed_third = packed.sft_step(trajs)  # packed has run steps 1 and 2 only: it is at step 3 too now
    assert packed_third["sft/loss"] == pytest.approx(third["sft/loss"], rel=1e-4)
    assert _max_abs_diff(fsdp.export_weights(), packed.export_weights()) < WEIGHT_TOL

    with pytest.raises(Exception, match="saved by strategy 'fsdp2'"):
        ds.load_checkpoint(paths["fsdp"])

    # a GRPO update agrees too (the clipped policy loss, on the same micro-batching as SFT above)
    from rl.grpo import compute_advantages

    advantages = compute_advantages([1.0, 0.0, 0.0, 1.0], [t.sample_id for t in trajs])
    a, b = fsdp.train_step(trajs, advantages), ds.train_step(trajs, advantages)
    c = packed.train_step(trajs, advantages)  # the old and new log-probs from packed rows, ZeRO-2
    for key in ("train/loss", "train/pg_loss", "train/grad_norm", "train/entropy"):
        assert a[key] == pytest.approx(b[key], rel=1e-4, abs=1e-6), key
        assert c[key] == pytest.approx(a[key], rel=1e-4, abs=1e-6), key
