"""Batching trajectories: placeholder expansion, padding, and log-probs equal to a per-sample unpadded forward."""

from __future__ import annotations

import pytest

from rollout.trajectory import IMAGE_PAD_ID, VIDEO_PAD_ID
from tests.rl.rl_test_data import make_trajectories


@pytest.fixture(scope="module")
def trajectories(tiny_model_dir):
    return make_trajectories(tiny_model_dir)


@pytest.fixture(scope="module")
def model(tiny_model_dir):
    import torch
    from transformers import AutoModelForImageTextToText

    torch.manual_seed(0)
    return AutoModelForImageTextToText.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()


def test_build_batch_layout(trajectories):
    from rl.batch import build_batch, model_inputs

    batch = build_batch(trajectories, merge_size=2)
    # video grid (4, 8, 8) -> 4*8*8/4 = 64 tokens; image grid (1, 8, 8) -> 16 tokens
    video = batch.samples[1]
    assert video.input_ids.count(VIDEO_PAD_ID) == 64
    assert video.response_start == len(trajectories[1].prompt_ids) + 63
    tool_traj, tool = trajectories[2], batch.samples[2]
    assert tool.input_ids.count(IMAGE_PAD_ID) == 16
    n_tool = len(tool_traj.response_ids) - 7  # 4 model tokens, the tool segment, 3 model tokens
    assert tool.response_mask == [1] * 4 + [0] * (n_tool + 15) + [1] * 3
    assert tool.rollout_logprobs[:4] == tool_traj.rollout_logprobs[:4]
    assert tool.rollout_logprobs[-3:] == tool_traj.rollout_logprobs[-3:]
    # (B, Lresp): the widest response is the tool one (7 + n_tool + 15); others padded with mask 0
    assert tuple(batch.response_mask.shape) == (4, 7 + n_tool + 15)
    assert batch.response_mask[0].tolist() == [1.0] * 7 + [0.0] * (batch.response_length - 7)
    inputs = model_inputs(batch.samples)
    assert tuple(inputs["video_grid_thw"].shape) == (2, 3)  # two videos, in sample order
    assert tuple(inputs["pixel_values_videos"].shape) == (512, 1176)
    assert tuple(inputs["image_grid_thw"].shape) == (1, 3)
    assert inputs["second_per_grid_ts"].tolist() == [1.0, 1.0]
    assert inputs["attention_mask"].sum(1).tolist() == [len(s.input_ids) for s in batch.samples]


def test_bad_trajectory_is_named(trajectories):
    from dataclasses import replace

    from rl.batch import build_batch

    bad = replace(trajectories[1], mm_inputs={})  # a video placeholder but no grid
    with pytest.raises(ValueError, match="trajectory 's0' .*video placeholders"):
        build_batch([bad])
    short = replace(trajectories[0], response_mask=[1])
    with pytest.raises(ValueError, match="response_mask"):
        build_batch([short])


def _unpadded_logprobs(model, traj):
    """Second method: one sequence, no padding, full logits, positions worked out from the raw lengths."""
    import torch

    from rollout.trajectory import expand_placeholders

    mm = {k: torch.as_tensor(v) for k, v in traj.mm_inputs.items()}
    ids, _ = expand_placeholders(
        traj.prompt_ids + traj.response_ids, None, mm.get("video_grid_thw"), mm.get("image_grid_thw")
    )
    n_resp = len(ids) - (len(traj.prompt_ids) + sum(1 for t in traj.prompt_ids if t == VIDEO_PAD_ID) * 63)
    # Qwen2.5-VL's 3D rope reads the kind of each token: 1 image placeholder, 2 video placeholder, 0 text
    kinds = [1 if t == 151655 else 2 if t == VIDEO_PAD_ID else 0 for t in ids]
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([ids]), mm_token_type_ids=torch.tensor([kinds]), **mm).logits[0].float()
    logp = torch.log_softmax(logits, -1)
    start = len(ids) - n_resp
    return torch.stack([logp[start + j - 1, ids[start + j]] for j in range(n_resp)])


@pytest.mark.parametrize("micro_batch_size", [None, 3])
def test_batched_logprobs_equal_unpadded(model, trajectories, micro_batch_size):
    import torch

    from rl.batch import build_batch, token_logprobs

    batch = build_batch(trajectories)
    with torch.no_grad():
        got, entropy = token_logprobs(model, batch, micro_batch_size=micro_batch_size, with_entropy=True)
    assert tuple(got.shape) == (4, batch.response_length)
    for i, traj in enumerate(trajectories):
        want = _unpadded_logprobs(model, traj)
        n = len(want)
        model_tok = batch.response_mask[i, :n].bool()  # tool-reply tokens get no logits (0), like padding
        torch.testing.assert_close(got[i, :n][model_tok], want[model_tok], atol=1e-5, rtol=0)
        assert torch.all(got[i, :n][~model_tok] == 0) and torch.all(got[i, n:] == 0)
        assert torch.all(entropy[i, :n][model_tok] > 0)


def test_logprobs_temperature_and_gradient(model, trajectories):
    import torch

    from rl.batch import build_batch, token_logprobs

    batch = build_batch(trajectories[:1])
    logp = token_logprobs(model, batch, temperature=2.0)
    logp.sum().backward()  # gradients flow outside no_grad
    assert model.lm_head.weight.grad is not None
    # a text-only micro-batch still runs the vision tower on a blank image (FSDP reduces its gradients on every
    # rank): its gradients exist and are exactly zero, and the log-probs are those of the plain forward below
    vision_grads = [p.grad for p in model.model.visual.parameters()]
    assert all(g is not None and float(g.abs().max()) == 0.0 for g in vision_grads)
    model.zero_grad()
    # at temperature T the distribution is softmax(logits / T): check one token directly
    traj = trajectories[0]
    ids = traj.prompt_ids + traj.response_ids
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([ids])).logits[0, len(traj.prompt_ids) - 1].float()
    want = torch.log_softmax(logits / 2.0, -1)[traj.response_ids[0]]
    assert float(logp[0, 0].detach()) == pytest.approx(float(want), abs=1e-5)


def test_kl_only_step_on_identical_policy_has_zero_kl_and_zero_gradient(model, trajectories):
    """Zero advantages and reference == policy: the loss is the KL term alone, its value and gradient are 0."""
    import torch

    from rl.batch import build_batch, token_logprobs
    from rl.grpo import grpo_loss

    batch = build_batch(trajectories[1:3])  # the video and the tool-image trajectories
    logp = token_logprobs(model, batch)
    frozen = logp.detach()
    loss, metrics = grpo_loss(logp, frozen, frozen, torch.zeros(2), batch.response_mask, kl_coef=0.5)
    loss.backward()
    assert metrics["kl"] == 0.0 and float(loss.detach()) == 0.0
    # d/dlogp [exp(ref - logp) - (ref - logp) - 1] = 1 - exp(ref - logp) = 0 at logp == ref
    assert all(p.grad is None or float(p.grad.abs().max()) == 0.0 for p in model.parameters())
    model.zero_grad()


def test_pack_plan_respects_budget_and_keeps_every_sequence():
    import random

    from rl.batch import pack_plan, split_packs

    rng = random.Random(0)
    lengths = [rng.randint(1, 120) for _ in range(50)] + [300]  # one longer than the budget
    packs = pack_plan(lengths, 128)
    assert sorted(i for p in packs for i in p) == list(range(51))
    assert [50] in packs  # the long one alone, not cut
    assert all(sum(lengths[i] for i in p) <= 128 for p in packs if p != [50])
    # first-fit decreasing needs at most 11/9 OPT + 1 bins; OPT >= total / budget
    lower = -(-sum(lengths[:50]) // 128)
    assert len(packs) - 1 <= 11 * lower / 9 + 1
    more = split_packs(packs, len(packs) + 4)
    assert len(more) == len(packs) + 4 and sorted(i for p in more for i in p) == list(range(51))
    with pytest.raises(ValueError, match="cannot make"):
        split_packs([[0], [1]], 3)
    with pytest.raises(ValueError, match="max_tokens"):
        pack_plan([3], 0)


@pytest.mark.parametrize("grad", [False, True])
def test_packed_logprobs_equal_padded(model, trajectories, grad):
    """All four trajectories (text, video, video + tool image, text) in one packed row give the log-probs and the
    entropies of the padded layout; with gradients on, the text-only pack gets its blank image as a sequence of its
    own and the log-probs are still unchanged."""
    import torch

    from rl.batch import build_batch, packed_inputs, token_logprobs

    batch = build_batch(trajectories)
    with torch.no_grad():
        want, want_ent = token_logprobs(model, batch, with_entropy=True)
    with torch.set_grad_enabled(grad):
        got, ent = token_logprobs(model, batch, with_entropy=True, packed=True)
        text_only = token_logprobs(model, batch.reorder([0, 3, 1, 2]).select(0, 2), packed=True)
    torch.testing.assert_close(got.detach(), want, atol=1e-5, rtol=0)
    torch.testing.assert_close(ent, want_ent, atol=1e-4, rtol=0)
    torch.testing.assert_close(text_only.detach(), want[[0, 3]], atol=1e-5, rtol=0)
    inputs, starts = packed_inputs(batch.samples, model)
    lengths = [len(s.input_ids) for s in batch.samples]
    assert tuple(inputs["input_ids"].shape) == (1, sum(lengths)) and "attention_mask" not in inputs
    assert starts == [0, lengths[0], lengths[0] + lengths[1], sum(lengths[:3])]
    # the text row restarts at 0 at every sequence; text-only sequences have all four rows equal to it
    text = inputs["position_ids"][:, 0]
    assert [int(text[0, s]) for s in starts] == [0, 0, 0, 0]
    assert torch.equal(inputs["position_ids"][1, 0, : lengths[0]], torch.arange(lengths[0]))
    if grad:
        got.sum().backward()
        assert model.lm_head.weight.grad is not None
        model.zero_grad()


# Plans worked out by hand: the input (sequence lengths, chunk, options, the other rank's pack count per packed
# chunk) and the plan (order, each chunk's forward ranges, positions). A padded micro-batch is as wide as its
# longest sequence in every row; a pack has no padding.
PLANS = [
    pytest.param(
        ([5, 90, 7, 88, 10], 5, {"micro_batch_size": 2}, None),
        ([0, 1, 2, 3, 4], [[(0, 2), (2, 4), (4, 5)]], 90 * 2 + 88 * 2 + 10),
        id="padded in order",
    ),
    pytest.param(
        ([5, 90, 7, 88, 10], 5, {"micro_batch_size": 2, "group_by_length": True}, None),
        ([1, 3, 4, 2, 0], [[(0, 2), (2, 4), (4, 5)]], 90 * 2 + 10 * 2 + 5),
        id="padded longest first",
    ),
    pytest.param(
        ([5, 90, 7], 3, {}, None),
        ([0, 1, 2], [[(0, 3)]], 90 * 3),
        id="micro_batch_size 0 is the whole chunk",
    ),
    pytest.param(
        ([5, 90, 7, 88], 2, {"micro_batch_size": 1, "group_by_length": True}, None),
        ([1, 0, 3, 2], [[(0, 1), (1, 2)], [(2, 3), (3, 4)]], 5 + 90 + 7 + 88),
        id="mini-batches keep their own sequences",
    ),
    # first-fit decreasing: 90 + 10 in one pack, 88 + 7 + 5 in the other
    pytest.param(
        ([5, 90, 7, 88, 10], 5, {"pack_max_tokens": 100}, None),
        ([1, 4, 3, 2, 0], [[(0, 2), (2, 5)]], 200),
        id="packed alone",
    ),
    # test_strategies' two ranks: 32 + 94 fit one pack of 128, the other rank's 118 and 32 need two
    pytest.param(
        ([32, 94], 2, {"pack_max_tokens": 128}, [2]),
        ([1, 0], [[(0, 1), (1, 2)]], 126),
        id="packed, this rank splits its one pack",
    ),
    pytest.param(
        ([118, 32], 2, {"pack_max_tokens": 128}, [1]),
        ([0, 1], [[(0, 1), (1, 2)]], 150),
        id="packed, the rank with the most packs keeps its plan",
    ),
    pytest.param(
        ([10, 20, 30], 3, {"pack_max_tokens": 100}, [2]),
        ([2, 1, 0], [[(0, 1), (1, 3)]], 60),
        id="packed, a pack of three halved",
    ),
    # chunk 0: 60 + 30 and 50 (2 packs, the other rank 1); chunk 1: 40 + 20 + 10 in one, the other rank 3
    pytest.param(
        ([30, 60, 50, 40, 20, 10], 3, {"pack_max_tokens": 100}, [1, 3]),
        ([1, 0, 2, 3, 4, 5], [[(0, 2), (2, 3)], [(3, 4), (4, 5), (5, 6)]], 210),
        id="packed mini-batches agree one by one",
    ),
]


@pytest.mark.parametrize("given, want", PLANS)
def test_plan_step_by_hand(given, want):
    from rl.batch import plan_step

    (lengths, chunk, options, other_counts), (order, chunks, positions) = given, want
    seen: list[int] = []

    def agree_count(n: int) -> int:  # the all-reduce max over this rank and one other
        seen.append(n)
        return max(n, other_counts[len(seen) - 1])

    plan = plan_step(lengths, chunk, **options, agree_count=agree_count if other_counts else None)
    assert (plan.order, plan.chunks, plan.positions) == (order, chunks, positions)
    assert plan.ranges == [r for c in chunks for r in c]
    assert plan.bounds == [(k * chunk, (k + 1) * chunk) for k in range(len(lengths) // chunk)]
    assert len(seen) == (len(other_counts) if other_counts else 0)  # one agreement per packed chunk


def test_plan_step_refuses_impossible_plans():
    from rl.batch import plan_step

    with pytest.raises(ValueError, match="chunk must be positive"):
        plan_step([5, 6], 0)
    with pytest.raises(ValueError, match="2 sequences cannot make 3 packs"):
        plan_step([5, 6], 2, pack_max_tokens=100, agree_count=lambda n: 3)
