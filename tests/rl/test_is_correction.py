"""The log-prob convention and truncated importance sampling (`rollout.is_correction`) in the trainer: a GRPO step
on one in-process gloo rank at temperature 0.7 with rollout log-probs set off the policy's by known amounts, so that
the weights, the weighted loss and the metrics follow by hand from those amounts."""

from __future__ import annotations

import math

import pytest

from tests.rl.rl_test_data import make_trajectories
from tests.rl.test_scale_options import one_rank

TEMPERATURE = 0.7
CAP = 2.0
# old - rollout log-prob of each model token, in turn: ratios 0.5, 1, 1.5, 3 and 5; the last two exceed the cap
DELTAS = [math.log(0.5), 0.0, math.log(1.5), math.log(3.0), math.log(5.0)]


@pytest.fixture(scope="module")
def shifted(tiny_model_dir):
    """Trajectories whose rollout log-prob of each model token is the policy's (at TEMPERATURE) minus a DELTAS entry,
    the advantages, and the deltas of each trajectory's model tokens."""
    import torch
    from transformers import AutoModelForImageTextToText

    from rl.batch import build_batch, token_logprobs
    from rollout import positions

    trajs = make_trajectories(tiny_model_dir, seed=0)
    # as the trainer loads it: the rope positions of rollout.positions
    model = positions.install(AutoModelForImageTextToText.from_pretrained(tiny_model_dir).eval())
    batch = build_batch(trajs, merge_size=model.config.vision_config.spatial_merge_size)
    with torch.no_grad():
        policy = token_logprobs(model, batch, temperature=TEMPERATURE)
    deltas, k = [], 0
    for i, t in enumerate(trajs):
        # model tokens keep their order in the batch row (only tool-reply placeholders are expanded)
        own = iter(policy[i][batch.response_mask[i].bool()].tolist())
        deltas.append([])
        for j, m in enumerate(t.response_mask):
            if m:
                deltas[-1].append(DELTAS[k % len(DELTAS)])
                t.rollout_logprobs[j] = next(own) - deltas[-1][-1]
                k += 1
    return trajs, [1.0, -0.5, 2.0, 0.25], deltas


@pytest.mark.parametrize("is_correction", [0.0, CAP])
def test_grpo_step_weights_the_policy_loss_and_reports_the_is_metrics(tiny_model_dir, shifted, is_correction):
    trajs, adv, deltas = shifted
    with one_rank(
        tiny_model_dir, TEMPERATURE, is_correction, precision="fp32", lr=1e-3, kl_coef=0.0, micro_batch_size=2
    ) as rank:
        metrics = rank.train_step(trajs, adv)
    n = sum(len(d) for d in deltas)
    assert metrics["train/num_tokens"] == n == sum(t.num_model_tokens for t in trajs)
    # scored at the sampling temperature: the trainer's log-probs are the policy's, off the rollout's by the deltas
    assert metrics["train/rollout_logprob_diff"] == pytest.approx(sum(abs(x) for d in deltas for x in d) / n, abs=1e-5)
    # on-policy (ratio 1): each token's policy loss is -A, times its weight min(exp(delta), cap) when on
    weight = (lambda x: min(math.exp(x), CAP)) if is_correction else (lambda x: 1.0)
    want = -sum(a * sum(weight(x) for x in d) for a, d in zip(adv, deltas)) / n
    assert metrics["train/pg_loss"] == pytest.approx(want, abs=1e-5)
    if not is_correction:
        assert not any(key.startswith("train/is_") for key in metrics)
        return
    assert metrics["train/is_weight_mean"] == pytest.approx(sum(weight(x) for d in deltas for x in d) / n, abs=1e-5)
    clipped = sum(x > math.log(CAP) for d in deltas for x in d)
    assert clipped > 0 and metrics["train/is_clipped_share"] == pytest.approx(clipped / n, abs=1e-6)


def test_trainer_group_refuses_a_negative_cap_before_placing_its_ranks(tiny_model_dir):
    from rl.config import TrainerConfig
    from rl.trainer import TrainerGroup

    want = r"is_correction \(rollout.is_correction, the TIS cap\): >= 0 \(0: off\), got -1"
    with pytest.raises(ValueError, match=want):
        TrainerGroup(TrainerConfig(), tiny_model_dir, is_correction=-1.0)
