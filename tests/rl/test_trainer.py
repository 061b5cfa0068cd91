"""The FSDP2 trainer on two gloo rank actors: a real update, 1-rank vs 2-rank agreement, checkpoint resume."""

from __future__ import annotations

import pytest

from tests.rl.rl_test_data import make_trajectories


@pytest.fixture(scope="module")
def batches(tiny_model_dir):
    from rl.grpo import compute_advantages

    out = []
    for seed, scores in ((0, [1.0, 0.0, 0.0, 1.0]), (1, [0.0, 1.0, 0.5, 0.0])):
        trajs = make_trajectories(tiny_model_dir, seed=seed)
        out.append((trajs, compute_advantages(scores, [t.sample_id for t in trajs])))
    return out


@pytest.fixture(scope="module")
def group2(ray_local, tiny_model_dir):
    from rl.config import TrainerConfig
    from rl.trainer import TrainerGroup

    # micro-batches of one: a rank's micro-batch may be text-only while the other rank's has a video
    group = TrainerGroup(TrainerConfig(world_size=2, lr=1e-3, kl_coef=0.01, micro_batch_size=1), tiny_model_dir)
    yield group
    group.shutdown()


def _max_abs_diff(a, b):
    return max(float((a[k].float() - b[k].float()).abs().max()) for k in a)


def test_two_ranks_train_step_then_one_rank_agrees_and_resume_is_exact(group2, batches, tiny_model_dir, tmp_path):
    import math

    import torch
    from transformers import AutoModelForImageTextToText

    from rl.config import TrainerConfig
    from rl.trainer import TrainerGroup

    (trajs1, adv1), (trajs2, adv2) = batches
    before = group2.export_weights()
    m1 = group2.train_step(trajs1, adv1)
    after = group2.export_weights()
    assert math.isfinite(m1["train/loss"]) and math.isfinite(m1["train/grad_norm"]) and m1["train/grad_norm"] > 0
    assert _max_abs_diff(before, after) > 1e-5  # the weights moved
    # step 0: the policy is the reference, so the KL term is 0 (low_var_kl of identical log-probs)
    assert abs(m1["train/kl"]) < 1e-6
    # on-policy first step: ratio 1, so pg_loss = -(token-weighted mean advantage)
    n_tok = [t.num_model_tokens for t in trajs1]
    want = -sum(a * n for a, n in zip(adv1, n_tok)) / sum(n_tok)
    assert m1["train/pg_loss"] == pytest.approx(want, abs=1e-5)
    assert m1["train/num_tokens"] == sum(n_tok)
    assert m1["train/rollout_logprob_diff"] > 0  # the hand-made rollout log-probs are not the model's

    ckpt_dir = tmp_path / "step_1"
    group2.save_checkpoint(ckpt_dir, {"step": 1, "cursor": 4})
    m2 = group2.train_step(trajs2, adv2)
    assert m2["train/kl"] > 0  # the policy has moved away from the reference

    # the checkpoint is a plain model directory that loads and generates
    model = AutoModelForImageTextToText.from_pretrained(str(ckpt_dir), dtype=torch.float32)
    for key, value in model.state_dict().items():
        if key in after:
            torch.testing.assert_close(value, after[key], atol=0, rtol=0)
    out = model.generate(torch.tensor([trajs1[0].prompt_ids]), max_new_tokens=3, do_sample=False)
    assert out.shape[1] == len(trajs1[0].prompt_ids) + 3
    assert (ckpt_dir / "tokenizer.json").is_file() and (ckpt_dir / "chat_template.jinja").is_file()
    assert not list(ckpt_dir.rglob("*.bin")) and not list(ckpt_dir.rglob("*.pt"))

    # one rank, micro-batch 2: the same first step as two ranks with micro-batch 1 ...
    group1 = TrainerGroup(TrainerConfig(world_size=1, lr=1e-3, kl_coef=0.01, micro_batch_size=2), tiny_model_dir)
    try:
        m1_single = group1.train_step(trajs1, adv1)
        for key in ("train/loss", "train/pg_loss", "train/grad_norm", "train/clipfrac", "train/entropy"):
            assert m1_single[key] == pytest.approx(m1[key], rel=1e-4, abs=1e-6), key
        # Adam moves a weight by ~lr * g / |g|: gradients equal up to the order of the ranks' sums can still move
        # a weight with a near-zero gradient a little differently (seen: 1.04e-5 at lr 1e-3)
        assert _max_abs_diff(group1.export_weights(), after) < 3e-5
        # ... and, resumed from the 2-rank checkpoint, the same next step as the original group. A diverging step
        # first, so that weights and optimizer state (Adam's step count and moments) must come from the checkpoint.
        group1.train_step(trajs2, adv2)
        assert group1.load_checkpoint(ckpt_dir) == {"step": 1, "cursor": 4}
        m2_resumed = group1.train_step(trajs2, adv2)
        for key in ("train/loss", "train/pg_loss", "train/kl", "train/grad_norm", "train/clipfrac"):
            assert m2_resumed[key] == pytest.approx(m2[key], rel=1e-4, abs=1e-6), key
        assert _max_abs_diff(group1.export_weights(), group2.export_weights()) < 3e-5
    finally:
        group1.shutdown()


def test_sync_weights_reaches_every_handle(group2, ray_local):
    import ray

    # Defined here so Ray ships the class by value (the test folder is not importable in worker processes).
    class FakeRolloutWorker:
        """A fake rollout worker (the real engines live in rollout/): records the weight buckets it receives."""

        def __init__(self):
            self.received, self.buckets, self.finished = None, 0, False

        def start_weight_update(self):
            self.received, self.buckets, self.finished = {}, 0, False

        def load_weight_bucket(self, named_tensors):
            assert not set(named_tensors) & set(self.received), "a weight sent twice"
            self.received.update({k: float(v.float().sum()) for k, v in named_tensors.items()})
            self.buckets += 1

        def finish_weight_update(self):
            self.finished = True

        def get(self):
            return self.received, self.buckets, self.finished

    workers = [ray.remote(num_cpus=0)(FakeRolloutWorker).remote() for _ in range(2)]
    seconds = group2.sync_weights(workers)
    assert seconds > 0
    weights = group2.export_weights()
    # The tiny model's embedding alone (151936 x 64 float32) is ~39 MB; everything else fits one 512 MB bucket.
    total_mb = sum(v.numel() * v.element_size() for v in weights.values()) / 1e6
    assert 39 < total_mb < 512
    for got, buckets, finished in ray.get([w.get.remote() for w in workers]):
        assert set(got) == set(weights) and finished and buckets == 1
        assert got["model.language_model.norm.weight"] == float(weights["model.language_model.norm.weight"].sum())


def test_sync_weights_names_the_handles_that_died(group2, ray_local):
    import ray

    from common.recovery import WeightSyncError

    class FakeRolloutWorker:
        """A fake rollout worker that takes any weights."""

        def start_weight_update(self):
            pass

        def load_weight_bucket(self, named_tensors):
            return len(named_tensors)

        def finish_weight_update(self):
            pass

    workers = [ray.remote(num_cpus=0)(FakeRolloutWorker).remote() for _ in range(3)]
    ray.kill(workers[1])
    with pytest.raises(WeightSyncError) as info:
        group2.sync_weights(workers)
    assert info.value.failed == [1]  # 0 and 2 took them; the trainer group itself is fine
    assert group2.sync_weights([workers[0], workers[2]]) > 0


def test_a_killed_rank_fails_the_call_naming_it_and_ends_the_group(ray_local, tiny_model_dir, batches):
    import os
    import signal

    import ray

    from rl.config import TrainerConfig
    from rl.trainer import TrainerDiedError, TrainerGroup

    group = TrainerGroup(TrainerConfig(world_size=2, lr=1e-3, micro_batch_size=1), tiny_model_dir, timeout_s=120)
    try:
        pid = ray.get(group.ranks[1].__ray_call__.remote(lambda self: os.getpid()))
        os.kill(pid, signal.SIGKILL)
        trajs, adv = batches[0]
        with pytest.raises(TrainerDiedError, match="a trainer rank failed during train_step: ActorDiedError"):
            group.train_step(trajs, adv)  # rank 0 would wait in a collective for rank 1: it is killed too
        with pytest.raises(ray.exceptions.RayActorError):
            ray.get(group.ranks[0].address.remote(), timeout=30)
    finally:
        group.shutdown()  # returns although both ranks are gone


def test_bad_inputs_fail_clearly(group2, batches, tiny_model_dir):
    from rl.config import TrainerConfig
    from rl.trainer import TrainerGroup

    trajs, adv = batches[0]
    with pytest.raises(ValueError, match="batch size 3 is not divisible by world_size 2"):
        group2.train_step(trajs[:3], adv[:3])
    # each bad field is named with its value and what is allowed, before any rank starts
    with pytest.raises(ValueError, match="trainer.zero_stage: 2 or 3 with DeepSpeed, got 1"):
        TrainerGroup(TrainerConfig(strategy="deepspeed", zero_stage=1), tiny_model_dir)
    with pytest.raises(ValueError, match="trainer.lr_schedule: 'linear' is not one of 'constant', 'cosine'"):
        TrainerGroup(TrainerConfig(lr_schedule="linear"), tiny_model_dir)
    with pytest.raises(ValueError, match="trainer.strategy: 'ddp' is not one of 'fsdp2', 'deepspeed'"):
        TrainerGroup(TrainerConfig(strategy="ddp"), tiny_model_dir)
    with pytest.raises(ValueError, match=r"cosine schedule needs total_steps \(0\) > warmup_steps \(0\)"):
        TrainerGroup(TrainerConfig(lr_schedule="cosine"), tiny_model_dir)
    with pytest.raises(FileNotFoundError, match="trainer_state"):
        group2.load_checkpoint(tiny_model_dir)


def test_load_refuses_an_incomplete_checkpoint_or_another_reference_before_any_rank_loads(group2, tmp_path):
    import json

    from rl.checkpoint import CheckpointMismatch

    path = tmp_path / "checkpoint-3"
    group2.save_checkpoint(path, {"step": 3})
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint-3"]  # in place whole, no hidden folder left
    trainer_json = path / "trainer_state" / "trainer.json"
    text = trainer_json.read_text()
    sha = json.loads(text)["reference"]["sha256"]["model.safetensors"]
    # the recorded reference no longer matches the weights this trainer loaded (one hex digit: the same size)
    other = ("1" if sha[0] == "0" else "0") + sha[1:]
    trainer_json.write_text(text.replace(sha, other))
    with pytest.raises(
        CheckpointMismatch, match=rf"other weights \(sha256 model.safetensors: {other[:12]} -> {sha[:12]}\)"
    ):
        group2.load_checkpoint(path)
    trainer_json.write_text(text)
    (path / "trainer_state" / "rng_rank1.json").write_text("{}")  # a file cut short
    with pytest.raises(FileNotFoundError, match=r"incomplete checkpoint .*: trainer_state/rng_rank1.json has 2 bytes"):
        group2.load_checkpoint(path)


def test_optimizer_and_rng_state_round_trip_without_pickle(tmp_path):
    import random

    import numpy as np
    import torch

    from rl import checkpoint as ckpt

    model = torch.nn.Linear(3, 2)
    opt = torch.optim.AdamW(model.parameters(), lr=0.1, betas=(0.8, 0.9))
    model(torch.ones(1, 3)).sum().backward()
    opt.step()
    osd = {
        "state": {n: opt.state[p] for n, p in model.named_parameters()},
        "param_groups": [
            {**{k: v for k, v in opt.param_groups[0].items() if k != "params"}, "params": ["weight", "bias"]}
        ],
    }
    ckpt.save_flat_state(ckpt.optimizer_to_flat(osd), tmp_path, "optimizer")
    back = ckpt.optimizer_from_flat(ckpt.load_flat_state(tmp_path, "optimizer"))
    assert back["param_groups"][0]["betas"] == (0.8, 0.9) and back["param_groups"][0]["params"] == ["weight", "bias"]
    torch.testing.assert_close(back["state"]["weight"]["exp_avg_sq"], opt.state[model.weight]["exp_avg_sq"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["optimizer.json", "optimizer.safetensors"]

    ckpt.save_flat_state(ckpt.rng_state(), tmp_path, "rng")
    want = (torch.rand(3), np.random.rand(3), random.random())
    ckpt.set_rng_state(ckpt.load_flat_state(tmp_path, "rng"))
    got = (torch.rand(3), np.random.rand(3), random.random())
    assert torch.equal(want[0], got[0]) and np.array_equal(want[1], got[1]) and want[2] == got[2]


FSDP2_2 = {"world_size": 2, "config": {"strategy": "fsdp2", "world_size": 2}}
ZERO3_2 = {"world_size": 2, "config": {"strategy": "deepspeed", "zero_stage": 3, "world_size": 2}}


@pytest.mark.parametrize(
    "saved, trainer, error",
    [
        (FSDP2_2, {"world_size": 1}, None),  # the full optimizer state: any number of ranks
        ({"world_size": 2, "config": {}}, {}, None),  # written before the strategy was saved: FSDP2
        (ZERO3_2, {"strategy": "deepspeed", "zero_stage": 3}, None),
        (FSDP2_2, {"strategy": "deepspeed"}, "saved by strategy 'fsdp2', this trainer is 'deepspeed'"),
        (ZERO3_2, {}, "saved by strategy 'deepspeed', this trainer is 'fsdp2'"),
        (
            ZERO3_2,
            {"strategy": "deepspeed", "world_size": 1},
            r"a DeepSpeed checkpoint of world_size 2 and ZeRO stage 3 .*\(here 1, 3\)",
        ),
        (
            ZERO3_2,
            {"strategy": "deepspeed", "zero_stage": 2},
            r"a DeepSpeed checkpoint of world_size 2 and ZeRO stage 3 .*\(here 2, 2\)",
        ),
    ],
)
def test_which_checkpoints_resume(saved, trainer, error):
    from rl.checkpoint import check_resumable
    from rl.config import TrainerConfig

    if error is None:
        check_resumable(saved, TrainerConfig(**trainer), "ckpt")
    else:
        with pytest.raises(ValueError, match=f"^ckpt: {error}"):
            check_resumable(saved, TrainerConfig(**trainer), "ckpt")


def test_sft_step_trains_on_model_tokens_only(group2, batches):
    trajs, advantages = batches[0]
    # tool-response tokens (mask 0) are not trained on: the loss counts exactly the mask-1 tokens
    expected_tokens = sum(sum(t.response_mask) for t in trajs)
    assert expected_tokens < sum(len(t.response_ids) for t in trajs)  # the fixture has a masked tool segment
    losses = []
    for _ in range(4):
        metrics = group2.sft_step(trajs, lr=1e-2)
        assert metrics["sft/num_tokens"] == expected_tokens and metrics["sft/lr"] == 1e-2
        losses.append(metrics["sft/loss"])
    assert losses[-1] < losses[0] - 0.5, losses  # memorising a fixed batch: the cross-entropy falls

    moved = group2.train_step(trajs, advantages)  # the policy is now far from the reference it started with
    assert moved["train/kl"] > 1e-3 and moved["train/lr"] == pytest.approx(1e-3)  # back to the RL learning rate


def test_attention_implementation_choice():
    import importlib.util

    from rl.trainer import resolve_attn_implementation

    assert resolve_attn_implementation("auto", "cpu") == "sdpa"
    # flash-attention only where it is installed and there is a GPU
    want_cuda = "flash_attention_2" if importlib.util.find_spec("flash_attn") else "sdpa"
    assert resolve_attn_implementation("auto", "cuda") == want_cuda
    assert resolve_attn_implementation("eager", "cpu") == "eager"
    with pytest.raises(ValueError, match="attn_implementation must be one of"):
        resolve_attn_implementation("flash3", "cuda")
