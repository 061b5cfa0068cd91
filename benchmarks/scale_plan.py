"""The arithmetic behind benchmarks/trainer_scale.py: a Qwen2.5-VL shape's parameter counts, a per-rank memory plan
for the FSDP2 trainer, and the FLOPs of a GRPO step (for MFU). Plain functions of the config's sizes.

Memory plan, per rank, FSDP2 over W ranks (every parameter trained; b_m the master bytes per value: 4 under
fp32 and bf16-mixed, 2 under bf16-pure; b_c the compute bytes: 4 under fp32, else 2):

- inputs: the fp32 pixels of the rank's videos (held for the whole step) and their concatenation for a forward.
- weights, gradients: N * b_m / W each (sharded; FSDP2 keeps a gradient in its parameter's dtype).
- AdamW state: 2 * N * b_m / W (two moments). Its foreach step on CUDA makes one more temporary of that size.
- reference policy (kl_coef != 0): N * b_c / W (loaded in the compute dtype, sharded, never stepped).
- gathered: b_c * (root + 2 decoder layers). FSDP2 all-gathers one decoder layer at a time (plus the next,
  prefetched); the root group (embeddings, lm_head, the vision tower, the final norm, see
  `rl.strategies.shard_fsdp2`) stays gathered from forward to the end of backward, and the reference's root
  (b_c * root more) from its first forward on: a root is not resharded after its forward, and the no-grad
  reference has no backward.
- activations of the largest forward (a micro-batch of `micro_batch_size` sequences, T tokens, P vision patches, R
  trained positions), counted from what autograd keeps for the backward in transformers' Qwen2.5-VL code:
  * per decoder layer and token: (8 + 6 b_c) h + 2 b_c kv + 2 b_c d + 4 b_c i bytes. Each RMSNorm keeps an fp32
    copy of its input and its b_c output (2 x (4 + b_c) h); q/k/v keep their input (b_c h); attention (sdpa,
    flash) keeps its rotated q and k, v and its output, which o_proj reads as is (2 b_c h + 2 b_c kv); the rotary
    keeps only its cos and sin (2 b_c d: a product keeps the factor the other's gradient needs); the MLP keeps
    its input (b_c h) and the SwiGLU's gate, activation, up and product (4 b_c i). h hidden, kv the key/value
    width, d the head size, i the MLP width.
  * per vision block and patch: (8 + 11 b_c) h_v + 4 b_c i_v: the same, except that v stays a view of the fused
    qkv output (3 b_c h_v kept) and the windows' outputs are concatenated (one more b_c h_v).
  * with activation checkpointing each layer keeps only its input (b_c h per token, b_c h_v per patch), and the
    backward recomputes one layer at a time (its activations once more).
  * the backward's gradients of one layer's activations: as large as that layer's activations.
  * logits at the trained positions only, one chunk of `trainer.logprob_chunk_size` positions at a time
    (`rl.logprobs.chunked_logprobs`, recomputed in the backward): 20 bytes per position of a chunk and vocabulary
    entry (the chunk's logits in the compute dtype and in fp32, the logsumexp's working copy, exp and product of the
    entropy; an upper bound).
- the end of the backward: the root group's unsharded gradients (b_c), its reduce-scatter input (fp32, or bf16
  under bf16-pure) and output (1/W of that); a tied embedding gets a second full gradient, added by autograd.
- peak: the largest of three moments: the forward/backward (states, gathered weights, activations), the end of
  the backward (states, gathered weights, the root's reduction) and the optimizer step (states and, on CUDA,
  the foreach AdamW's temporary of the size of a moment). Not modelled: allocator fragmentation and caching,
  NCCL buffers, the CUDA context (~0.5-1 GB outside torch's count).

FLOPs of a GRPO step (MFU): 6 N_text T + 6 V h R + 6 h T^2 n_layers / 2 per sequence for the policy (every token
through every decoder layer, the lm_head at the R trained positions only, causal attention at half of the
12 n_layers h T^2 of a full one), plus the vision tower's 6 N_blocks P + 12 h_v P s per block (s the patches a
block attends over: a window or a whole frame pair), and a third of all that for the reference's forward.
Recomputation under activation checkpointing is not counted (model FLOPs, not hardware FLOPs).
"""

from __future__ import annotations

from dataclasses import dataclass

GIB = 2**30
PRECISION_BYTES = {"fp32": (4, 4), "bf16-mixed": (4, 2), "bf16-pure": (2, 2)}  # (master, compute) bytes


@dataclass
class Shape:
    """The sizes of a Qwen2.5-VL model that memory and FLOPs depend on."""

    vocab: int
    hidden: int
    intermediate: int
    layers: int
    heads: int
    kv_heads: int
    tied: bool
    v_hidden: int
    v_intermediate: int
    v_depth: int
    v_heads: int
    v_out: int
    patch: int
    merge: int
    temporal_patch: int
    window: int
    fullatt: tuple[int, ...]

    @classmethod
    def of(cls, config) -> Shape:
        """The sizes of a transformers `Qwen2_5_VLConfig`."""
        t, v = config.text_config, config.vision_config
        return cls(
            t.vocab_size,
            t.hidden_size,
            t.intermediate_size,
            t.num_hidden_layers,
            t.num_attention_heads,
            t.num_key_value_heads,
            bool(config.tie_word_embeddings),
            v.hidden_size,
            v.intermediate_size,
            v.depth,
            v.num_heads,
            v.out_hidden_size,
            v.patch_size,
            v.spatial_merge_size,
            v.temporal_patch_size,
            v.window_size,
            tuple(v.fullatt_block_indexes),
        )

    @property
    def kv(self) -> int:
        return self.kv_heads * self.hidden // self.heads

    @property
    def head_dim(self) -> int:
        return self.hidden // self.heads


def param_counts(s: Shape) -> dict[str, int]:
    """Parameters by part: a decoder layer (q/k/v with biases, o, SwiGLU MLP, two RMSNorms), a vision block (fused
    qkv and proj with biases, SwiGLU MLP with biases, two RMSNorms), embeddings, lm_head (0 when tied), patch
    embedding (a bias-free Conv3d), merger (RMSNorm, two linears with biases); "root" is everything but the decoder
    layers (FSDP2's root shard group)."""
    h, i, hv, iv = s.hidden, s.intermediate, s.v_hidden, s.v_intermediate
    text_layer = h * h + h + 2 * (h * s.kv + s.kv) + h * h + 3 * h * i + 2 * h
    vision_block = hv * 3 * hv + 3 * hv + hv * hv + hv + 2 * (hv * iv + iv) + iv * hv + hv + 2 * hv
    merged = hv * s.merge**2
    out = {
        "text_layer": text_layer,
        "text_layers": text_layer * s.layers,
        "embed": s.vocab * h,
        "lm_head": 0 if s.tied else s.vocab * h,
        "final_norm": h,
        "vision_block": vision_block,
        "vision_blocks": vision_block * s.v_depth,
        "patch_embed": 3 * s.temporal_patch * s.patch**2 * hv,
        "merger": hv + merged * merged + merged + merged * s.v_out + s.v_out,
    }
    out["vision"] = out["vision_blocks"] + out["patch_embed"] + out["merger"]
    out["total"] = out["text_layers"] + out["embed"] + out["lm_head"] + out["final_norm"] + out["vision"]
    out["root"] = out["total"] - out["text_layers"]
    return out


def video_grid(s: Shape, frames: int, frame_size: int) -> tuple[int, int, int]:
    """The (t, h, w) patch grid of a video of `frames` square frames of `frame_size` pixels.

    >>> s = Shape(100, 8, 16, 2, 2, 1, True, 4, 8, 1, 1, 8, 14, 2, 2, 112, (0,))
    >>> video_grid(s, 16, 448)  # 16 frames in pairs, 448 / 14 = 32 patches a side
    (8, 32, 32)
    """
    unit = s.patch * s.merge
    if frames % s.temporal_patch or frame_size % unit:
        raise ValueError(
            f"--frames must be a multiple of {s.temporal_patch} and --frame-size of {unit} for this shape, "
            f"got {frames} and {frame_size}"
        )
    return frames // s.temporal_patch, frame_size // s.patch, frame_size // s.patch


@dataclass
class Forward:
    """The largest forward of a rank: sequences, tokens T, vision patches P and trained (kept) positions R; and
    the vision patches of all the rank's sequences (their fp32 pixels stay in memory for the whole step)."""

    sequences: int
    tokens: int
    patches: int
    kept: int
    rank_patches: int = 0


def text_layer_bytes(s: Shape, b: int) -> int:
    """Bytes autograd keeps per token in one decoder layer (see the module docstring)."""
    return (8 + 6 * b) * s.hidden + 2 * b * s.kv + 2 * b * s.head_dim + 4 * b * s.intermediate


def vision_block_bytes(s: Shape, b: int) -> int:
    """Bytes autograd keeps per patch in one vision block (see the module docstring)."""
    return (8 + 11 * b) * s.v_hidden + 4 * b * s.v_intermediate


def activation_bytes(s: Shape, fwd: Forward, b: int, checkpointing: bool, chunk: int = 512) -> dict[str, int]:
    """Activations of one forward and backward, by part: text layers, vision blocks, logits, the backward's
    working memory (one layer's gradients, plus its recomputed activations under checkpointing)."""
    a_t, a_v = text_layer_bytes(s, b), vision_block_bytes(s, b)
    one_layer = max(a_t * fwd.tokens, a_v * fwd.patches)
    if checkpointing:
        text, vision = b * s.hidden * fwd.tokens * s.layers, b * s.v_hidden * fwd.patches * s.v_depth
    else:
        text, vision = a_t * fwd.tokens * s.layers, a_v * fwd.patches * s.v_depth
    # embeddings, final norm and the lm_head's input; the patch embedding's input and the merger
    text += (2 * b + 4 + b) * s.hidden * fwd.tokens + b * s.hidden * fwd.kept
    vision += (b * 3 * s.temporal_patch * s.patch**2 + (4 + 4 * b) * s.v_hidden) * fwd.patches
    return {
        "text": text,
        "vision": vision,
        "logits": 20 * min(fwd.kept, chunk) * s.vocab,
        "backward": one_layer * (2 if checkpointing else 1),
    }


def memory_plan(
    s: Shape,
    fwd: Forward,
    *,
    precision: str,
    checkpointing: bool,
    world: int,
    reference: bool = True,
    cuda: bool = True,
    first_step: bool = False,
    logprob_chunk: int = 512,
) -> dict[str, int]:
    """Per-rank bytes by category, the planned "peak" and the "phase" it falls in (see the module docstring).
    With `first_step` the AdamW moments, which the first optimizer step creates, are absent before it;
    `logprob_chunk` is `trainer.logprob_chunk_size`."""
    bm, bc = PRECISION_BYTES[precision]
    reduce = 2 if precision == "bf16-pure" else 4  # FSDP2 reduces in fp32 under bf16-mixed and fp32
    n = param_counts(s)
    total = n["total"]
    plan = {
        "inputs": 4 * 3 * s.temporal_patch * s.patch**2 * (fwd.rank_patches + fwd.patches),
        "weights": total * bm // world,
        "gradients": total * bm // world,
        "adamw": 2 * total * bm // world,
        "reference": total * bc // world if reference else 0,
        # the policy's root and two decoder layers gathered for compute; the reference's root stays gathered after
        # its forward (FSDP2 does not reshard a root after its forward, and the no-grad reference has no backward)
        "gathered": bc * (n["root"] + 2 * n["text_layer"]) + (bc * n["root"] if reference else 0),
    }
    acts = activation_bytes(s, fwd, bc, checkpointing, logprob_chunk)
    plan.update({f"act_{k}": v for k, v in acts.items()})
    # the root group's unsharded gradients, its reduce-scatter input and output; a tied embedding gets two
    # gradients (lookup and lm_head) that autograd adds
    plan["root_reduce"] = n["root"] * (bc + reduce + reduce // world) + (s.vocab * s.hidden * bc if s.tied else 0)
    states = plan["inputs"] + plan["weights"] + plan["gradients"] + plan["adamw"] + plan["reference"]
    before_step = states - (plan["adamw"] if first_step else 0)
    phases = {
        "forward/backward": before_step + plan["gathered"] + sum(acts.values()),
        "backward end": before_step + plan["gathered"] + plan["root_reduce"],
        "optimizer step": states + (total * bm // world if cuda else 0),  # foreach AdamW's temporary on CUDA
    }
    plan["phase"] = max(phases, key=phases.get)
    plan["peak"] = phases[plan["phase"]]
    return plan


def sequence_flops(s: Shape, tokens: int, kept: int, grid: tuple[int, int, int] | None) -> float:
    """Training FLOPs (forward and backward, no recomputation) of one sequence of `tokens` tokens with `kept`
    trained positions and a video of patch `grid` (or None), see the module docstring.

    A layer of hidden 8, kv width 4, MLP 16 has 64 + 8 + 2 * (32 + 4) + 64 + 384 + 16 = 608 parameters; two layers
    over 10 tokens: 6 * 1216 * 10 = 72,960; the lm_head at 4 positions: 6 * 100 * 8 * 4 = 19,200; causal attention:
    6 * 8 * 10**2 * 2 / 2 = 4,800.

    >>> s = Shape(100, 8, 16, 2, 2, 1, True, 4, 8, 1, 1, 8, 2, 2, 2, 4, (0,))
    >>> sequence_flops(s, tokens=10, kept=4, grid=None)
    96960.0
    """
    n = param_counts(s)
    flops = 6 * n["text_layers"] * tokens + 6 * s.vocab * s.hidden * kept + 6 * s.hidden * tokens**2 * s.layers / 2
    if grid is not None:
        t, h, w = grid
        patches = t * h * w
        window = (s.window // s.patch) ** 2  # a window of merged tokens, in patches
        for block in range(s.v_depth):
            span = h * w if block in s.fullatt else min(window, h * w)
            flops += 6 * n["vision_block"] * patches + 12 * s.v_hidden * patches * span
        flops += 6 * n["patch_embed"] * patches + 6 * n["merger"] * patches // s.merge**2
    return float(flops)


def step_flops(s: Shape, sequences: list[tuple[int, int, tuple[int, int, int] | None]], reference: bool) -> float:
    """FLOPs of one GRPO step over `sequences` ((tokens, kept, grid) each): training, plus a forward (a third)
    for the reference policy."""
    train = sum(sequence_flops(s, t, k, g) for t, k, g in sequences)
    return train * (4 / 3 if reference else 1.0)


PLAN_COLUMNS = (
    "inputs",
    "weights",
    "gradients",
    "adamw",
    "reference",
    "gathered",
    "act_text",
    "act_vision",
    "act_logits",
    "act_backward",
    "root_reduce",
    "peak",
)
HEADROOM = 0.9  # a plan "fits" when its peak is at most this share of the card (allocator, CUDA context, NCCL)


def plan_rows(s: Shape, fwd: Forward, world: int, reference: bool) -> list[dict]:
    """The memory plan of every precision with and without activation checkpointing, per rank over `world`."""
    rows = []
    for precision in PRECISION_BYTES:
        for checkpointing in (True, False):
            plan = memory_plan(
                s, fwd, precision=precision, checkpointing=checkpointing, world=world, reference=reference
            )
            rows.append({"precision": precision, "checkpointing": checkpointing, **plan})
    return rows


def format_plan(rows: list[dict], s: Shape, fwd: Forward, world: int, gpu_gib: float) -> str:
    """The plan as a table, in GiB (MiB when every peak is under 4 GiB)."""
    n = param_counts(s)
    small = max(r["peak"] for r in rows) < 4 * GIB
    unit, name = (2**20, "MiB") if small else (GIB, "GiB")
    short = {"gradients": "grads", "root_reduce": "root red.", "act_backward": "act bwd"}
    names = [short.get(c, c.replace("act_", "act ")) for c in PLAN_COLUMNS]
    lines = [
        f"memory plan per rank, computed from the shapes (not measured), {name}: FSDP2 over {world} rank(s) of "
        f"{gpu_gib:g} GiB; {n['total'] / 1e9:.2f} B parameters ({s.layers} decoder layers); largest forward: "
        f"{fwd.sequences} sequence(s), {fwd.tokens:,} tokens, {fwd.patches:,} vision patches, {fwd.kept:,} trained "
        f"positions; 'fits': peak within {HEADROOM:.0%} of the card",
        f"{'precision':<12}{'AC':<4}" + "".join(f"{c:>11}" for c in names) + f"{'fits':>6}  peak at",
    ]
    for r in rows:
        cells = "".join(f"{r[c] / unit:>11.2f}" for c in PLAN_COLUMNS)
        fits = "yes" if r["peak"] <= HEADROOM * gpu_gib * GIB else "no"
        lines.append(f"{r['precision']:<12}{'on' if r['checkpointing'] else 'off':<4}{cells}{fits:>6}  {r['phase']}")
    lines.append(
        "balance_lengths changes no rank's memory (equal sequence counts, the same largest forward), only how long "
        "the ranks wait for the slowest one."
    )
    return "\n".join(lines)
