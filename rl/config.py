"""The trainer's config: one dataclass, the `trainer:` section of every recipe, passed whole to `TrainerGroup`.

    group = TrainerGroup(TrainerConfig(world_size=2, lr=1e-6), model_path, seed=0, temperature=0.7)

`validate()` names each bad field, its value and what is allowed; recipes call it before Ray starts.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

STRATEGY_NAMES = ("fsdp2", "deepspeed")
ATTN_IMPLEMENTATIONS = ("auto", "sdpa", "eager", "flash_attention_2")
KL_TYPES = ("low_var_kl", "kl", "k1", "abs", "mse", "k2", "k3")
LOSS_AGG_MODES = ("token-mean", "token-sum", "seq-mean-token-sum", "seq-mean-token-mean", "seq-mean-token-sum-norm")
BACKENDS = ("", "gloo", "nccl")
PRECISIONS = ("auto", "bf16-mixed", "fp32", "bf16-pure")
OFFLOADS = ("none", "reference", "all")


@dataclass
class TrainerConfig:
    """Data-parallel trainer ranks: strategy, optimisation, the GRPO loss, micro-batching, resources."""

    world_size: int = 2
    """Trainer rank actors (gloo on CPU, NCCL on GPU), one GPU each when `num_gpus` is 1."""
    strategy: str = "fsdp2"
    """"fsdp2" or "deepspeed" (ZeRO stage `zero_stage`)."""
    zero_stage: int = 3
    """DeepSpeed only: 2 (optimizer state and gradients partitioned) or 3 (parameters too)."""
    zero_config: dict[str, Any] = field(default_factory=dict)
    """DeepSpeed only: extra `zero_optimization` entries (e.g. {overlap_comm: true})."""
    attn_implementation: str = "auto"
    """"auto" (flash_attention_2 on GPU when flash-attn is installed, else sdpa), "sdpa", "eager" or
    "flash_attention_2"."""
    precision: str = "auto"
    """"auto" (bf16-mixed with CUDA, fp32 on CPU), "bf16-mixed" (fp32 master weights and AdamW state, bf16
    forward/backward, fp32 gradient reduction), "fp32", or "bf16-pure" (bf16 weights and AdamW state: half the
    memory, but updates smaller than half a bf16 ulp of a weight are lost; FSDP2 only, an explicit opt-in).
    See docs/scale.md."""
    activation_checkpointing: bool | None = None
    """Recompute each layer's activations in the backward (transformers' gradient checkpointing, language model
    and vision tower) instead of keeping them: less memory for ~1/3 more compute. None: on with CUDA, off on CPU."""
    offload: str = "none"
    """Keep sharded weights in CPU memory between uses, for small-memory cards: "none"; "reference" (the frozen
    reference policy's shards live on the CPU and are gathered to the GPU layer by layer for its forward); or
    "all" (the reference, and the policy's parameters, gradients and AdamW state: the optimizer steps on the CPU).
    FSDP2 only (DeepSpeed: `zero_config: {offload_optimizer: {device: cpu}}`). See docs/scale.md."""
    backend: str = ""
    """Process-group backend: "" picks nccl when the ranks see a GPU, else gloo; or "gloo" / "nccl"."""
    lr: float = 1e-5
    """Peak learning rate (AdamW)."""
    lr_schedule: str = "constant"
    """"constant" or "cosine" (down to lr * min_lr_ratio at the run's last optimizer step), both after a linear
    warm-up of `warmup_steps`."""
    warmup_steps: int = 0
    """Optimizer steps of linear learning-rate warm-up."""
    min_lr_ratio: float = 0.0
    """The cosine schedule's floor, as a fraction of `lr`."""
    weight_decay: float = 0.0
    """AdamW weight decay."""
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    """AdamW betas."""
    grad_clip: float = 1.0
    """Clip the global gradient norm to this (a non-finite norm skips the step)."""
    clip_ratio: float = 0.2
    """GRPO/PPO: the policy ratio is clipped to [1 - clip_ratio, 1 + clip_ratio]."""
    kl_coef: float = 0.01
    """Weight of the KL to the reference policy in the loss; 0 drops the reference model."""
    kl_type: str = "low_var_kl"
    """KL estimator (verl's kl_penalty names): low_var_kl (k3, clamped), kl (k1), abs, mse (k2)."""
    loss_agg_mode: str = "token-mean"
    """How the per-token loss is averaged (verl's agg_loss): token-mean, token-sum, seq-mean-token-sum,
    seq-mean-token-mean, seq-mean-token-sum-norm."""
    micro_batch_size: int = 2
    """Sequences per forward on each rank; gradients accumulate over a rank's share of the batch."""
    mini_batches: int = 1
    """GRPO: optimizer steps per batch (PPO mini-batches; the rank's share is split this many ways). With 1 the
    update is on-policy: the policy pass's own (detached) log-probs serve as the old ones, with no extra forward."""
    balance_lengths: bool = True
    """Give each rank the same number of sequences but choose which, so that the ranks' token counts (after vision
    placeholders are expanded) are as equal as possible: a step lasts as long as its slowest rank. Off: rank r
    trains on the r-th contiguous slice of the batch. Each sequence keeps its mini-batch and the loss is normalised
    over global counts, so the update is the same either way; see `rl.balance` and docs/scale.md."""
    group_by_length: bool = False
    """Order each rank's sequences by length before cutting micro-batches (less padding)."""
    pack_max_tokens: int = 0
    """> 0: pack sequences into rows of at most this many tokens (no padding; micro_batch_size and
    group_by_length are then unused). 0: right-padded micro-batches. See docs/sft.md."""
    checkpoint_shard_mb: float = 5000.0
    """The largest file a checkpoint writes, in MB (10^6 bytes): the model folder's model-0000i-of-0000N.safetensors
    files and, with FSDP2, each rank's files of the sharded trainer state. Writing one holds about that much host
    memory on the writing rank; a single tensor larger than this gets a file of its own. See docs/scale.md."""
    weight_sync_bucket_mb: float = 512.0
    """Weights go to the rollout engines in buckets of at most this many MB (10^6 bytes): one bucket at a time is in
    Ray's object store and in each engine's transfer buffer. A single larger tensor goes alone. See docs/scale.md."""
    share_video_encoding: bool = True
    """Run the vision tower once per distinct video (and image) in each forward: the trajectories of a GRPO sample
    that share a micro-batch or a pack reuse one encoding of their video (the same log-probs, loss and gradients
    as encoding it per trajectory). False: one encoding per trajectory. See docs/scale.md."""
    logprob_chunk_size: int = 512
    """Positions per lm_head chunk when scoring tokens: only one chunk's vocabulary-sized fp32 logits exist at a
    time, and with gradients they are recomputed in the backward instead of kept. See docs/scale.md."""
    num_cpus: float = 0.5
    """CPUs reserved for each rank actor."""
    cpu_threads: int = 1
    """torch intra-op threads of each rank on CPU (a GPU rank leaves torch's default). 1: the node's cores are
    shared by every rank, rollout worker and tool actor. More pays where the ranks' work does not overlap the
    others' (rollout.staleness 0 on a small machine: the rollout workers idle while the ranks train); see
    docs/performance.md."""
    num_gpus: float = 0.0
    """GPUs for each rank actor (1 on a GPU cluster)."""

    def validate(self, where: str = "trainer") -> list[str]:
        """Problems, each naming the field, its value and what is allowed (empty when the config is usable)."""
        from rl.schedule import SCHEDULES

        problems = []

        def one_of(name: str, allowed: tuple) -> None:
            value = getattr(self, name)
            if value not in allowed:
                problems.append(f"{where}.{name}: {value!r} is not one of {', '.join(map(repr, allowed))}")

        def positive(name: str, zero_ok: bool = False) -> None:
            value = getattr(self, name)
            if value < 0 or (value == 0 and not zero_ok):
                problems.append(f"{where}.{name}: must be {'>= 0' if zero_ok else '> 0'}, got {value}")

        one_of("strategy", STRATEGY_NAMES)
        if self.strategy == "deepspeed" and self.zero_stage not in (2, 3):
            problems.append(f"{where}.zero_stage: 2 or 3 with DeepSpeed, got {self.zero_stage}")
        one_of("attn_implementation", ATTN_IMPLEMENTATIONS)
        one_of("backend", BACKENDS)
        one_of("precision", PRECISIONS)
        if self.precision == "bf16-pure" and self.strategy == "deepspeed":
            problems.append(
                f"{where}.precision: 'bf16-pure' is FSDP2 only (DeepSpeed keeps fp32 master weights whenever bf16 "
                "is on); use 'bf16-mixed' or 'fp32' with DeepSpeed"
            )
        one_of("offload", OFFLOADS)
        if self.offload != "none" and self.strategy == "deepspeed":
            problems.append(
                f"{where}.offload: {self.offload!r} is FSDP2 only; with DeepSpeed set "
                "trainer.zero_config={offload_optimizer: {device: cpu}} (and offload_param at ZeRO stage 3)"
            )
        if self.activation_checkpointing not in (None, True, False):
            problems.append(
                f"{where}.activation_checkpointing: {self.activation_checkpointing!r} is not one of "
                "None (auto: on with CUDA), true, false"
            )
        one_of("lr_schedule", SCHEDULES)
        one_of("kl_type", KL_TYPES)
        one_of("loss_agg_mode", LOSS_AGG_MODES)
        if self.share_video_encoding not in (True, False):
            problems.append(f"{where}.share_video_encoding: true or false, got {self.share_video_encoding!r}")
        for name in (
            "world_size",
            "lr",
            "micro_batch_size",
            "mini_batches",
            "checkpoint_shard_mb",
            "weight_sync_bucket_mb",
            "logprob_chunk_size",
            "cpu_threads",
        ):
            positive(name)
        for name in ("warmup_steps", "weight_decay", "grad_clip", "clip_ratio", "kl_coef", "num_cpus", "num_gpus"):
            positive(name, zero_ok=True)
        if self.pack_max_tokens < 0:
            problems.append(f"{where}.pack_max_tokens: 0 (off) or a positive token budget, got {self.pack_max_tokens}")
        if not 0.0 <= self.min_lr_ratio <= 1.0:
            problems.append(f"{where}.min_lr_ratio: between 0 and 1, got {self.min_lr_ratio}")
        if len(self.betas) != 2 or not all(0.0 <= b < 1.0 for b in self.betas):
            problems.append(f"{where}.betas: two numbers in [0, 1), got {list(self.betas)}")
        if self.zero_config:
            problems += zero_config_problems(dict(self.zero_config), f"{where}.zero_config")
        return problems


def zero_config_problems(entries: dict[str, Any], where: str) -> list[str]:
    """Keys of `entries` that DeepSpeed's zero_optimization section does not know (its field names or their
    stage3_ aliases), each with the closest valid one. Imports DeepSpeed, so only called on a non-empty section."""
    from common.hints import did_you_mean

    try:
        from deepspeed.runtime.zero.config import DeepSpeedZeroConfig
    except ImportError:  # without DeepSpeed there is nothing to check against (and the strategy cannot run)
        return []
    fields = DeepSpeedZeroConfig.model_fields
    valid = sorted({name for name in fields} | {f.alias for f in fields.values() if f.alias})
    problems = []
    for key in entries:
        if key not in valid:
            problems.append(f"{where}.{key}: not a DeepSpeed zero_optimization key{did_you_mean(key, valid)}")
    return problems
