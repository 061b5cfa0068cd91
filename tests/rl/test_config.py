"""TrainerConfig.validate: each bad field named with its value and what is allowed."""

from __future__ import annotations

import pytest

from rl.config import TrainerConfig


@pytest.mark.parametrize(
    "kwargs, expected",
    [
        ({"strategy": "ddp"}, "trainer.strategy: 'ddp' is not one of 'fsdp2', 'deepspeed'"),
        ({"strategy": "deepspeed", "zero_stage": 1}, "trainer.zero_stage: 2 or 3 with DeepSpeed, got 1"),
        ({"lr": 0.0}, "trainer.lr: must be > 0, got 0.0"),
        ({"kl_coef": -0.1}, "trainer.kl_coef: must be >= 0, got -0.1"),
        ({"kl_type": "k4"}, "trainer.kl_type: 'k4' is not one of 'low_var_kl', 'kl', 'k1', 'abs', 'mse', 'k2', 'k3'"),
        ({"pack_max_tokens": -1}, "trainer.pack_max_tokens: 0 (off) or a positive token budget, got -1"),
        ({"min_lr_ratio": 2.0}, "trainer.min_lr_ratio: between 0 and 1, got 2.0"),
        ({"betas": [0.9]}, "trainer.betas: two numbers in [0, 1), got [0.9]"),
        ({"backend": "mpi"}, "trainer.backend: 'mpi' is not one of '', 'gloo', 'nccl'"),
        ({"logprob_chunk_size": 0}, "trainer.logprob_chunk_size: must be > 0, got 0"),
        ({"cpu_threads": 0}, "trainer.cpu_threads: must be > 0, got 0"),
        ({"share_video_encoding": "yes"}, "trainer.share_video_encoding: true or false, got 'yes'"),
    ],
)
def test_bad_fields(kwargs, expected):
    assert TrainerConfig(**kwargs).validate() == [expected]


def test_defaults_and_a_deepspeed_setup_are_valid():
    assert TrainerConfig().validate() == []
    assert (
        TrainerConfig(strategy="deepspeed", zero_stage=2, pack_max_tokens=4096, lr_schedule="cosine").validate() == []
    )


def test_zero_config_keys_are_deepspeeds():
    ok = TrainerConfig(
        strategy="deepspeed", zero_config={"stage3_param_persistence_threshold": 0, "overlap_comm": True}
    )
    assert ok.validate() == []
    (typo,) = TrainerConfig(strategy="deepspeed", zero_config={"overlap_com": True}).validate()
    assert (
        typo == "trainer.zero_config.overlap_com: not a DeepSpeed zero_optimization key; did you mean 'overlap_comm'?"
    )
