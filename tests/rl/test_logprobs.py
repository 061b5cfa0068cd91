"""The lean log-prob forward (`rl.logprobs`): each distinct video encoded once per forward, and logits only at the
scored positions in chunks, both exact against the plain computation (fp32, CPU)."""

from __future__ import annotations

import pytest

from tests.rl.rl_test_data import make_video_groups

# make_video_groups: v0 v0 v1 v0 | v1 v1(+image) text. Cut into these two micro-batches (or packs), the first mixes
# the two videos (v0 three times, v1 once), the second has v1 twice, the tool image and a text-only sequence.
RANGES = [(0, 4), (4, 7)]
V0, V1, IMAGE = (4, 8, 8), (2, 4, 8), (1, 8, 8)  # the grids worked out in make_video_groups' docstring


@pytest.fixture(scope="module")
def groups(tiny_model_dir):
    return make_video_groups(tiny_model_dir)


@pytest.fixture(scope="module")
def model(tiny_model_dir):
    import torch
    from transformers import AutoModelForImageTextToText

    torch.manual_seed(0)
    return AutoModelForImageTextToText.from_pretrained(tiny_model_dir, dtype=torch.float32)


def _vision_calls(model):
    """A list that receives, for each vision-tower call, the grid rows it encodes; and the hook's handle."""
    calls: list[list[tuple[int, ...]]] = []

    def record(_module, args, kwargs):
        calls.append([tuple(row) for row in kwargs["grid_thw"].tolist()])

    return calls, model.model.visual.register_forward_pre_hook(record, with_kwargs=True)


@pytest.mark.parametrize("packed", [False, True])
def test_vision_tower_encodes_each_distinct_video_once_per_forward(model, groups, packed):
    import torch

    from rl.batch import build_batch, token_logprobs

    batch = build_batch(groups)
    assert batch.samples[0].vision_keys["video"] == batch.samples[1].vision_keys["video"]  # a copy: same content
    assert batch.samples[0].vision_keys["video"] != batch.samples[2].vision_keys["video"]
    seen = {}
    for share in (False, True):
        calls, handle = _vision_calls(model)
        with torch.no_grad():
            token_logprobs(model, batch, ranges=RANGES, packed=packed, share_video=share)
        handle.remove()
        seen[share] = calls
    # one call per kind and forward: images first, then videos, as the model's own forward does
    assert seen[False] == [[V0, V0, V1, V0], [IMAGE], [V1, V1]]
    assert seen[True] == [[V0, V1], [IMAGE], [V1]]


def _grpo_grads(model, batch, share: bool, packed: bool):
    """Log-probs, entropies, the GRPO loss (clipping and KL active) and every parameter's gradient."""
    import torch

    from rl.batch import token_logprobs
    from rl.grpo import grpo_loss

    model.zero_grad(set_to_none=True)
    logp, entropy = token_logprobs(
        model, batch, ranges=RANGES, packed=packed, with_entropy=True, share_video=share, chunk_tokens=16
    )
    gen = torch.Generator().manual_seed(1)
    mask = batch.response_mask
    old = (batch.rollout_logprobs + 0.3 * torch.randn(mask.shape, generator=gen)) * mask
    ref = (batch.rollout_logprobs + 0.3 * torch.randn(mask.shape, generator=gen)) * mask
    adv = torch.tensor([1.0, -0.5, 0.8, -1.2, 0.3, 1.5, -0.7])
    loss, _ = grpo_loss(logp, old, ref, adv, mask, clip_ratio=0.2, kl_coef=0.1)
    loss.backward()
    grads = {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}
    model.zero_grad(set_to_none=True)
    return logp.detach(), entropy, loss.detach(), grads


@pytest.mark.parametrize("packed", [False, True])
def test_shared_encoding_gives_the_plain_log_probs_loss_and_gradients(model, groups, packed):
    import torch

    from rl.batch import build_batch

    batch = build_batch(groups)
    plain = _grpo_grads(model, batch, share=False, packed=packed)
    shared = _grpo_grads(model, batch, share=True, packed=packed)
    for want, got in zip(plain[:3], shared[:3]):
        torch.testing.assert_close(got, want, atol=1e-5, rtol=0)
    assert plain[3].keys() == shared[3].keys() == {name for name, _ in model.named_parameters()}
    for name, want in plain[3].items():
        torch.testing.assert_close(shared[3][name], want, atol=1e-5, rtol=1e-5, msg=name)
    vision = [name for name in plain[3] if name.startswith("model.visual.")]
    assert vision and all(float(plain[3][name].abs().max()) > 0 for name in vision)  # every use reaches the tower


def _full_logits_reference(model, batch, temperature: float, weights):
    """Second method, the micro-batches of RANGES as right-padded rows through the model's own forward: every
    position's full-vocabulary logits in fp32, log-softmax, then each model token picked out at the position before
    it; backward of the log-probs times `weights` (summed over the batch)."""
    import torch

    from rl.batch import model_inputs

    logp = torch.zeros(batch.response_mask.shape)
    entropy = torch.zeros(batch.response_mask.shape)
    for start, stop in RANGES:
        logits = model(**model_inputs(batch.samples[start:stop]), use_cache=False).logits.float() / temperature
        logp_all = torch.log_softmax(logits, -1)
        picked = []
        for i, s in enumerate(batch.samples[start:stop], start):
            for j, m in enumerate(s.response_mask):
                if m:
                    row = logp_all[i - start, s.response_start - 1 + j]
                    picked.append(row[s.input_ids[s.response_start + j]] * weights[i, j])
                    logp[i, j] = float(row[s.input_ids[s.response_start + j]].detach())
                    exact = row.detach().double()  # a sum over the vocabulary: float64 keeps its rounding out
                    entropy[i, j] = float(-(exact.exp() * exact).sum())
        torch.stack(picked).sum().backward()
    return logp, entropy


@pytest.fixture(scope="module")
def full_logits(model, groups):
    """`_full_logits_reference` at temperature 0.7 with random weights: (weights, log-probs, entropies, grads)."""
    import torch

    from rl.batch import build_batch

    batch = build_batch(groups)
    weights = torch.rand(batch.response_mask.shape, generator=torch.Generator().manual_seed(2))
    model.zero_grad(set_to_none=True)
    logp, entropy = _full_logits_reference(model, batch, 0.7, weights)
    grads = {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}
    model.zero_grad(set_to_none=True)
    return weights, logp, entropy, grads


@pytest.mark.parametrize("packed", [False, True])
def test_chunked_log_probs_and_gradients_equal_the_full_logits(model, groups, full_logits, packed):
    import torch

    from rl.batch import build_batch, token_logprobs

    batch = build_batch(groups)
    weights, want, want_ent, want_grads = full_logits
    # chunks of 8: the forwards score 26 and 19 model tokens (8 + 8 + 8 + 2 and 8 + 8 + 3)
    got, ent = token_logprobs(model, batch, 0.7, ranges=RANGES, with_entropy=True, packed=packed, chunk_tokens=8)
    (got * weights).sum().backward()
    grads = {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}
    model.zero_grad(set_to_none=True)
    torch.testing.assert_close(got.detach(), want, atol=1e-5, rtol=0)
    # an entropy (~log 151936 ~ 12 here) sums 152k fp32 terms: any fp32 formula, the full log-softmax one included,
    # is ~1e-5 off the float64 sum, i.e. about one part in a million
    torch.testing.assert_close(ent, want_ent, atol=0, rtol=3e-6)
    # The lm_head's backward sums over the 152k-entry vocabulary; CPU BLAS rounds that sum differently for 8 rows
    # than for a whole micro-batch (measured against float64: a few 1e-6 relative). So each parameter's gradient is
    # checked to 1e-5 of its largest entry.
    assert grads.keys() == want_grads.keys() == {name for name, _ in model.named_parameters()}
    for name, value in want_grads.items():
        scale = max(float(value.abs().max()), 1.0)
        assert float((grads[name] - value).abs().max()) <= 1e-5 * scale, name


def test_lm_head_sees_only_the_scored_positions_in_chunks(model, groups):
    """Each forward runs the lm_head over its own rows' model-token positions only (no union over rows), at most
    `chunk_tokens` at a time; with gradients each chunk runs once more in the backward (recomputed)."""
    import torch

    from rl.batch import build_batch, token_logprobs

    batch = build_batch(groups)
    scored = [int(batch.response_mask[a:b].sum()) for a, b in RANGES]
    sizes: list[int] = []
    handle = model.lm_head.register_forward_pre_hook(lambda _m, args: sizes.append(int(args[0].shape[0])))
    try:
        with torch.no_grad():
            token_logprobs(model, batch, ranges=RANGES, chunk_tokens=5)
        per_forward = [[5] * (n // 5) + ([n % 5] if n % 5 else []) for n in scored]
        assert sizes == [k for chunks in per_forward for k in chunks]
        sizes.clear()
        token_logprobs(model, batch, ranges=RANGES, chunk_tokens=5).sum().backward()
        assert sorted(sizes) == sorted([k for chunks in per_forward for k in chunks] * 2)
    finally:
        handle.remove()
        model.zero_grad(set_to_none=True)
    with pytest.raises(ValueError, match="chunk_tokens must be positive"):
        token_logprobs(model, batch.select(0, 1), chunk_tokens=0)


def _grads_at_step(rank) -> dict:
    """Filled, when the rank steps its optimizer, with each parameter's whole gradient (the weights after an Adam
    step would not do: its first step moves a weight by about lr * sign(gradient), so rounding noise in a
    near-zero gradient shows up as a difference of up to lr)."""
    grads: dict = {}
    step = rank.strategy.step

    def recording_step():
        for name, p in rank.model.named_parameters():
            if p.grad is not None:
                grad = p.grad.full_tensor() if hasattr(p.grad, "full_tensor") else p.grad
                grads[name] = grad.detach().clone()
        return step()

    rank.strategy.step = recording_step
    return grads


def test_fsdp2_train_step_with_shared_encoding_matches_the_plain_one(tiny_model_dir, groups):
    """One fp32 GRPO step on an FSDP2 rank (gloo, world size 1, the policy and a reference), padded and packed: with
    the encoding shared, the same metrics and updated weights as without it, and fewer videos encoded."""
    import torch

    from rl.grpo import compute_advantages
    from tests.rl.test_scale_options import one_rank

    adv = compute_advantages([1.0, 0.0, 0.5, 1.0, 0.0, 0.0, 1.0], [t.sample_id for t in groups])
    fields = {"precision": "fp32", "lr": 1e-3, "kl_coef": 0.01, "micro_batch_size": 4, "mini_batches": 1}
    encoded = {}
    for pack in (0, 2000):  # micro-batches of four as RANGES; or all seven sequences in one pack
        results = {}
        for share in (False, True):
            with one_rank(tiny_model_dir, share_video_encoding=share, pack_max_tokens=pack, **fields) as rank:
                calls, handle = _vision_calls(rank.model)
                grads = _grads_at_step(rank)
                metrics = rank.train_step(groups, adv)
                handle.remove()
                results[share] = (metrics, grads)
                encoded[pack, share] = sum(len(c) for c in calls)
        (plain, plain_grads), (shared, grads) = results[False], results[True]
        assert plain["train/grad_norm"] > 0
        for name in ("train/loss", "train/pg_loss", "train/kl", "train/grad_norm", "train/entropy"):
            assert shared[name] == pytest.approx(plain[name], rel=1e-5, abs=1e-5), (pack, name)
        assert grads.keys() == plain_grads.keys() and any(k.startswith("model.visual.") for k in grads)
        for name, want in plain_grads.items():
            torch.testing.assert_close(grads[name], want, atol=1e-5, rtol=1e-5, msg=f"{pack} {name}")
    # videos and images the policy pass encoded: per micro-batch 4 + 1 + 2 plain, 2 + 1 + 1 shared; in the one pack
    # 6 videos and the image plain, the two distinct videos and the image shared
    assert encoded == {(0, False): 7, (0, True): 4, (2000, False): 7, (2000, True): 3}


def test_greedy_is_scored_at_temperature_one(tiny_model_dir):
    """Temperature 0 (greedy) reports and scores temperature-1 log-probs; the log-prob kernel refuses 0."""
    import torch

    from rl.config import TrainerConfig
    from rl.logprobs import chunked_logprobs
    from rl.trainer import TrainerRank

    assert TrainerRank(0, TrainerConfig(), tiny_model_dir, seed=0, temperature=0.0, total_steps=0).temperature == 1.0
    assert TrainerRank(0, TrainerConfig(), tiny_model_dir, seed=0, temperature=0.7, total_steps=0).temperature == 0.7
    head = torch.nn.Linear(4, 3, bias=False)
    with pytest.raises(ValueError, match="temperature must be positive, got 0"):
        chunked_logprobs(head, torch.zeros(2, 4), torch.tensor([0, 1]), temperature=0.0)
