"""The policy trainer: data-parallel rank actors (FSDP2) with a frozen reference policy, weight export and sync
to rollout workers, and checkpoints in Hugging Face format plus an exactly resumable `trainer_state/`.

    group = TrainerGroup(TrainerConfig(world_size=2), model_path)   # one Ray actor per rank, in a placement group
    metrics = group.train_step(trajectories, advantages)    # the whole batch; each rank takes its share
    group.sync_weights(rollout_workers)                     # RolloutWorker handles (weights streamed in buckets)
    group.save_checkpoint(run_dir / "step_10", {"step": 10, "cursor": 640})
    extra = TrainerGroup(cfg, model_path).load_checkpoint(run_dir / "step_10")

The whole trainer config is one dataclass, `rl.config.TrainerConfig` (a recipe's `trainer:` section).

On CPU the ranks talk over gloo (float32 by default); with CUDA over NCCL, one GPU per rank, in bf16-mixed precision
by default (fp32 master weights and AdamW state, bf16 compute; `precision`, see `rl.strategies` and docs/scale.md)
and with activation checkpointing (`activation_checkpointing`). With `mini_batches` 1 the GRPO update is on-policy
and the old log-probs are the policy pass's own, detached: no separate scoring forward.
The data-parallel strategy is FSDP2 (default) or DeepSpeed ZeRO-2/3 (`strategy="deepspeed", zero_stage=3`), see
`rl.strategies`. The learning rate follows `rl.schedule.lr_at` over the optimizer steps (constant by default;
cosine with linear warm-up). Each optimizer step accumulates gradients over micro-batches of `micro_batch_size`
sequences; `group_by_length` orders a rank's sequences by length first so micro-batches carry little padding, and
`pack_max_tokens` instead packs them into rows of at most that many tokens with no padding at all (SFT and GRPO).
Which sequences each rank takes is length-balanced (`balance_lengths`, `rl.balance`): equal counts per rank, token
counts as equal as possible. `rl.batch.plan_step` makes a rank's plan for a step; `rl.checkpoint.save_rank` /
`load_rank` do a rank's checkpoint I/O.
"""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path
from typing import Any

from common.checkpoint_marker import incomplete_reason
from common.recovery import WeightSyncError
from common.waits import (
    DEFAULT_TIMEOUT_S,
    ActorTimeoutError,
    actor_died,
    actor_name,
    check_timeout,
    get_all,
    kill_actors,
)
from rl import checkpoint as ckpt
from rl.batch import StepPlan, plan_step
from rl.config import ATTN_IMPLEMENTATIONS, TrainerConfig
from rl.logprobs import scoring_temperature
from rl.schedule import lr_at
from rl.strategies import make_strategy, offloaded, precision_dtypes  # how a model is wrapped for data parallelism

# Per-rank metric sums of a GRPO step, all-reduced together at its end.
GRPO_SUMS = (
    "loss",
    "pg_loss",
    "kl",
    "clipfrac",
    "entropy",
    "rollout_logprob_diff",
    "is_weight_mean",
    "is_clipped_share",
    "num_tokens",
)
# Of those, the means over model tokens (the others are per optimizer step); the is_* ones only with is_correction.
PER_TOKEN = ("clipfrac", "entropy", "rollout_logprob_diff", "is_weight_mean", "is_clipped_share")


def resolve_attn_implementation(name: str, device_type: str) -> str:
    """The transformers attention implementation for `name`: "auto" is flash-attention 2 on CUDA when the
    flash-attn package is installed (its variable-length kernel makes packed rows cost what their sequences cost
    alone), else sdpa.

    >>> resolve_attn_implementation("auto", "cpu"), resolve_attn_implementation("eager", "cuda")
    ('sdpa', 'eager')
    """
    import importlib.util

    if name not in ATTN_IMPLEMENTATIONS:
        raise ValueError(f"attn_implementation must be one of {ATTN_IMPLEMENTATIONS}, got {name!r}")
    if name != "auto":
        return name
    return "flash_attention_2" if device_type == "cuda" and importlib.util.find_spec("flash_attn") else "sdpa"


def resolve_activation_checkpointing(value: bool | None, device_type: str) -> bool:
    """Whether to recompute activations in the backward: `value`, or when None (auto) only with CUDA.

    >>> resolve_activation_checkpointing(None, "cpu"), resolve_activation_checkpointing(None, "cuda")
    (False, True)
    """
    return device_type == "cuda" if value is None else bool(value)


class TrainerRank:
    """One data-parallel rank. A plain class; `TrainerGroup` makes it a Ray actor."""

    def __init__(
        self,
        rank: int,
        cfg: TrainerConfig,
        model_path: str,
        seed: int,
        temperature: float,
        total_steps: int,
        is_correction: float = 0.0,
    ):
        self.rank, self.cfg, self.model_path = rank, cfg, model_path
        self.seed = seed
        # the rollout's sampling temperature (1 for greedy), so that log-probs are those of the distribution sampled
        self.temperature = scoring_temperature(temperature)
        self.total_steps = total_steps  # the cosine schedule's length in optimizer steps
        self.is_correction = float(is_correction)  # the TIS cap (rollout.is_correction), 0: off
        self.model = self.ref = self.strategy = None
        self.opt_steps = 0  # optimizer steps since the optimizer was (re)made: the schedule's clock
        # On-policy (mini_batches 1): take the old log-probs from the policy pass. False forces the separate
        # no-grad forward (tests compare the two).
        self._reuse_policy_logprobs = True

    def address(self) -> tuple[str, int]:
        """This node's IP and a free TCP port, for the process group rendezvous (called on rank 0)."""
        import ray

        with socket.socket() as sock:
            sock.bind(("", 0))
            return ray.util.get_node_ip_address(), sock.getsockname()[1]

    def setup(self, master_addr: str, master_port: int) -> None:
        """Join the process group, load and shard the policy (and the frozen reference), build the optimizer."""
        import torch
        import torch.distributed as dist
        from torch.distributed.device_mesh import init_device_mesh

        backend = self.cfg.backend or ("nccl" if torch.cuda.is_available() else "gloo")
        cuda = backend == "nccl"
        if not cuda:
            torch.set_num_threads(self.cfg.cpu_threads)  # 1 by default: the node's cores are shared
        torch.manual_seed(self.seed + self.rank)
        dist.init_process_group(
            backend=backend,
            init_method=f"tcp://{master_addr}:{master_port}",
            world_size=self.cfg.world_size,
            rank=self.rank,
        )
        self.device = torch.device("cuda", torch.cuda.current_device()) if cuda else torch.device("cpu")
        self.mesh = init_device_mesh(self.device.type, (self.cfg.world_size,))
        self.strategy = make_strategy(self.cfg, self.device, self.mesh)
        master_dtype, compute_dtype = precision_dtypes(self.strategy.precision)
        policy = self._load(self.model_path, master_dtype, keep_on_cpu=offloaded(self.cfg, True))
        self.hf_config = policy.config
        policy.train()
        if resolve_activation_checkpointing(self.cfg.activation_checkpointing, self.device.type):
            # language model and vision tower; before sharding, so FSDP2 wraps the checkpointed layers
            policy.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        self.model = self.strategy.wrap(policy, trainable=True)
        if self.cfg.kl_coef != 0.0:
            # frozen: no fp32 copy is needed
            ref = self._load(self.model_path, compute_dtype, keep_on_cpu=offloaded(self.cfg, False))
            ref.eval()
            ref.requires_grad_(False)
            self.ref = self.strategy.wrap(ref, trainable=False)
        self.merge_size = int(self.hf_config.vision_config.spatial_merge_size)
        self._set_lr()

    def _load(self, path: str, dtype, keep_on_cpu: bool = False):
        """The model at `path` in `dtype`, on this rank's device; with `keep_on_cpu` (offloaded shards) it stays
        in CPU memory, where FSDP2 shards it without ever holding it whole on the device."""
        from transformers import AutoModelForImageTextToText

        attn = resolve_attn_implementation(self.cfg.attn_implementation, self.device.type)
        from rollout import positions

        model = AutoModelForImageTextToText.from_pretrained(path, dtype=dtype, attn_implementation=attn)
        positions.install(model)  # the rope positions the engines sample with (rollout.positions)
        return model if keep_on_cpu else model.to(self.device)

    @property
    def optimizer(self):
        return self.strategy.optimizer

    def _set_lr(self, override: float | None = None) -> float:
        """The learning rate of the next optimizer step: `override`, else the schedule at `opt_steps`."""
        cfg = self.cfg
        lr = (
            override
            if override is not None
            else lr_at(self.opt_steps, cfg.lr, cfg.lr_schedule, cfg.warmup_steps, self.total_steps, cfg.min_lr_ratio)
        )
        self.strategy.set_lr(lr)
        return lr

    def _logprobs(self, model, batch, **kwargs):
        from rl.batch import token_logprobs

        cfg = self.cfg
        return token_logprobs(
            model,
            batch,
            every_vision_kind=self.strategy.every_vision_kind,
            packed=cfg.pack_max_tokens > 0,
            share_video=cfg.share_video_encoding,
            chunk_tokens=cfg.logprob_chunk_size,
            **kwargs,
        )

    # ---- training -------------------------------------------------------------------------------------------

    def train_step(self, trajectories: list, advantages: list[float]) -> dict[str, float]:
        """One GRPO update on this rank's share of the batch (`_shard`; `mini_batches` optimizer steps); returns
        metrics averaged over ranks. A colocated engine sleeps meanwhile (where it can)."""
        import torch

        self._engine_asleep()

        from rl.batch import build_batch

        cfg = self.cfg
        if len(advantages) != len(trajectories):
            raise ValueError(f"train_step: {len(trajectories)} trajectories but {len(advantages)} advantages")
        shard = self._shard("train_step", trajectories, cfg.mini_batches)
        batch = build_batch([trajectories[i] for i in shard], self.merge_size)
        plan = self._plan(batch, len(batch) // cfg.mini_batches)
        batch = batch.reorder(plan.order)
        adv = torch.tensor([float(advantages[shard[i]]) for i in plan.order], device=self.device)
        mask = batch.response_mask.to(self.device)
        # With one mini-batch the policy has not moved when each micro-batch is scored, so the old log-probs are
        # the policy pass's own (ratio 1): `_grpo_backward` fills `old` with them instead of a no-grad forward.
        on_policy = cfg.mini_batches == 1 and self._reuse_policy_logprobs
        with torch.no_grad():
            scoring = {"temperature": self.temperature, "ranges": plan.ranges}
            if on_policy:
                old = torch.zeros(mask.shape, device=self.device)
            else:
                old = self._logprobs(self.model, batch, **scoring)
            ref = self._logprobs(self.ref, batch, **scoring) if self.ref is not None else None
        # Each mini-batch's tokens and sequences over all ranks normalise its loss, so the gradient depends on
        # neither micro_batch_size nor world_size.
        counts = [float(x) for a, b in plan.bounds for x in (mask[a:b].sum(), (mask[a:b].sum(-1) > 0).sum())]
        norms = self._all_reduce(counts)
        sums = dict.fromkeys(GRPO_SUMS, 0.0)
        grad_norm, skipped = 0.0, 0
        for k, ranges in enumerate(plan.chunks):
            self._set_lr()
            self.strategy.zero_grad()
            part = self._grpo_backward(
                batch, ranges, old, ref, adv, mask, norms[2 * k], norms[2 * k + 1], fill_old=on_policy
            )
            norm, stepped = self._step()
            grad_norm, skipped = grad_norm + norm, skipped + int(not stepped)
            for key, value in part.items():
                sums[key] += value
        sums["rollout_logprob_diff"] = float(((old - batch.rollout_logprobs.to(self.device)).abs() * mask).sum())
        sums["num_tokens"] = float(mask.sum())
        totals = dict(zip(sums, self._all_reduce(list(sums.values()))))
        return self._grpo_metrics(totals, grad_norm, skipped)

    def _grpo_metrics(self, totals: dict[str, float], grad_norm: float, skipped: int) -> dict[str, float]:
        """A GRPO step's metrics from the all-reduced `GRPO_SUMS`; `grad_norm` summed over its optimizer steps."""
        tokens, steps = max(totals["num_tokens"], 1.0), self.cfg.mini_batches
        per_token = PER_TOKEN if self.is_correction > 0 else PER_TOKEN[:3]
        return {
            **{f"train/{key}": totals[key] / steps for key in ("loss", "pg_loss", "kl")},
            **{f"train/{key}": totals[key] / tokens for key in per_token},
            "train/grad_norm": grad_norm / steps,  # already the norm of the gradient over all ranks
            "train/lr": float(self.optimizer.param_groups[0]["lr"]),
            "train/num_tokens": totals["num_tokens"],
            "train/skipped_steps": float(skipped),
        }

    def sft_step(self, trajectories: list, lr: float | None = None) -> dict[str, float]:
        """One supervised step: cross-entropy on the response tokens whose mask is 1 (the assistant's own tokens;
        prompt and tool-response tokens are not trained on), token-mean over the whole batch across ranks.
        Gradients accumulate over micro-batches of `micro_batch_size` (or over packs of at most `pack_max_tokens`
        tokens); one optimizer step at `lr`, or at the schedule's rate when `lr` is None."""
        from rl.batch import build_batch

        world = self.cfg.world_size
        batch = build_batch([trajectories[i] for i in self._shard("sft_step", trajectories)], self.merge_size)
        plan = self._plan(batch, len(batch))
        batch = batch.reorder(plan.order)
        mask = batch.response_mask.to(self.device)
        (num_tokens,) = self._all_reduce([float(mask.sum())])
        used_lr = self._set_lr(lr)
        self.strategy.zero_grad()
        (ranges,) = plan.chunks
        loss_sum = 0.0
        for i, (start, stop) in enumerate(ranges):
            logp = self._logprobs(self.model, batch.select(start, stop))
            # gradients are averaged over ranks, so each rank's share is scaled by world / global token count
            loss = -(logp * mask[start:stop]).sum() * world / max(num_tokens, 1.0)
            self.strategy.backward(loss, last=i == len(ranges) - 1)
            loss_sum += float(loss.detach()) / world
        grad_norm, stepped = self._step()
        self._set_lr()  # back to the schedule after an explicit `lr`
        loss_total, padded = self._all_reduce([loss_sum, float(plan.positions)])
        return {
            "sft/loss": loss_total,
            "sft/grad_norm": grad_norm,
            "sft/num_tokens": num_tokens,
            "sft/lr": used_lr,
            "sft/micro_batches": float(len(ranges)),
            "sft/skipped_steps": float(not stepped),
            "sft/padded_tokens": padded,  # sequence positions the forwards computed, padding included
        }

    def _shard(self, where: str, trajectories: list, parts: int = 1) -> list[int]:
        """The indices of this rank's share of `trajectories`, which must split into `parts` mini-batches per
        rank: length-balanced (`rl.balance.balanced_shards` over `expanded_length`) with `balance_lengths`, else
        the rank's contiguous slice. Every rank computes the same assignment from the same batch."""
        from rl.balance import balanced_shards, contiguous_shards
        from rl.batch import expanded_length

        world = self.cfg.world_size
        try:
            if not self.cfg.balance_lengths or world == 1:
                return contiguous_shards(len(trajectories), world, parts)[self.rank]
            costs = [expanded_length(t, self.merge_size) for t in trajectories]
            return balanced_shards(costs, world, parts)[self.rank]
        except ValueError as err:
            raise ValueError(f"{where}: {err}") from None

    def _plan(self, batch, chunk: int) -> StepPlan:
        """`plan_step` for `batch` with this trainer's micro-batching; the ranks agree on their pack counts."""
        cfg = self.cfg
        return plan_step(
            [len(s.input_ids) for s in batch.samples],
            chunk,
            micro_batch_size=cfg.micro_batch_size,
            group_by_length=cfg.group_by_length,
            pack_max_tokens=cfg.pack_max_tokens,
            agree_count=lambda n: int(self._all_reduce([float(n)], op="max")[0]),
        )

    def _grpo_backward(
        self, batch, ranges, old, ref, adv, mask, num_tokens: float, num_seqs: float, fill_old: bool = False
    ) -> dict:
        """Forward/backward of the GRPO loss, one forward per [start, stop) of `ranges` (one mini-batch's
        micro-batches or packs); the metric sums are this rank's shares. With `fill_old` (on-policy) each
        micro-batch's detached log-probs are written into `old` first and used as the old ones. With
        `is_correction` the policy loss is weighted by TIS against the batch's rollout log-probs (`rl.grpo`)."""
        from rl.grpo import grpo_loss

        cfg, world = self.cfg, self.cfg.world_size
        sums = ("loss", "pg_loss", "kl", "clipfrac", "entropy", "is_weight_mean", "is_clipped_share")
        out = dict.fromkeys(sums, 0.0)
        for i, (start, stop) in enumerate(ranges):
            r, part = slice(start, stop), batch.select(start, stop)
            logp, entropy = self._logprobs(self.model, part, temperature=self.temperature, with_entropy=True)
            if fill_old:
                old[r] = logp.detach()
            loss, metrics = grpo_loss(
                logp,
                old[r],
                None if ref is None else ref[r],
                adv[r],
                mask[r],
                clip_ratio=cfg.clip_ratio,
                kl_coef=cfg.kl_coef,
                kl_type=cfg.kl_type,
                loss_agg_mode=cfg.loss_agg_mode,
                batch_num_tokens=max(num_tokens, 1.0),
                global_batch_size=max(num_seqs, 1.0),
                dp_size=world,
                rollout_log_prob=part.rollout_logprobs.to(self.device),
                is_cap=self.is_correction,
            )
            self.strategy.backward(loss, last=i == len(ranges) - 1)
            # agg_loss scales each rank's share by dp_size (gradients are averaged over ranks): undo it for logging.
            out["loss"] += float(loss.detach()) / world
            out["pg_loss"] += metrics["pg_loss"] / world
            out["kl"] += metrics["kl"] / world
            tokens = float(mask[r].sum())
            for key in ("clipfrac", "is_weight_mean", "is_clipped_share"):  # token means -> sums
                out[key] += metrics.get(key, 0.0) * tokens
            out["entropy"] += float((entropy * mask[r]).sum())
        return out

    def _step(self) -> tuple[float, bool]:
        """Clip and step the optimizer (skipped on a non-finite gradient norm); the schedule's clock advances."""
        grad_norm, stepped = self.strategy.step()
        self.opt_steps += int(stepped)
        return grad_norm, stepped

    def _all_reduce(self, values: list[float], op: str = "sum") -> list[float]:
        import torch
        import torch.distributed as dist

        t = torch.tensor(values, dtype=torch.float64, device=self.device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX if op == "max" else dist.ReduceOp.SUM)
        return t.tolist()

    # ---- weights and checkpoints ----------------------------------------------------------------------------

    def export_weights(self) -> dict[str, Any]:
        """The full state dict on CPU (rank 0; the other ranks return {}). Every rank must call it."""
        state = self.strategy.full_state_dict(self.model)
        return state if self.rank == 0 else {}

    def sync_weights(self, rollout_handles: list, timeout_s: float = 600.0) -> tuple[float, list[int]]:
        """Gather the weights; rank 0 streams them to every rollout handle in buckets of at most
        `weight_sync_bucket_mb` (`start_weight_update`, `load_weight_bucket` per bucket, `finish_weight_update`):
        one bucket at a time is in the object store. Returns the seconds spent and the indices of the handles that
        died or did not answer within `timeout_s` (rank 0; the caller replaces those workers)."""
        from rollout.engine import weight_buckets

        start = time.perf_counter()
        state = self.export_weights()
        failed: set[int] = set()
        if self.rank == 0 and rollout_handles:
            deadline = start + timeout_s
            self._send_all(rollout_handles, failed, deadline, "start_weight_update")
            for bucket in weight_buckets(state.items(), int(self.cfg.weight_sync_bucket_mb * 1e6)):
                self._send_all(rollout_handles, failed, deadline, "load_weight_bucket", bucket)
            self._send_all(rollout_handles, failed, deadline, "finish_weight_update")
        return time.perf_counter() - start, sorted(failed)

    @staticmethod
    def _send_all(handles: list, failed: set[int], deadline: float, method: str, payload: Any = None) -> None:
        """Call `method` on every handle not yet failed (the payload put in the object store once) and wait until
        `deadline`; a handle that died or is late joins `failed`."""
        import ray
        from ray.exceptions import RayActorError

        args = () if payload is None else (ray.put(payload),)
        calls = {i: getattr(h, method).remote(*args) for i, h in enumerate(handles) if i not in failed}
        if not calls:
            return
        remaining = max(deadline - time.perf_counter(), 0)
        _, late = ray.wait(list(calls.values()), num_returns=len(calls), timeout=remaining)
        for i, call in calls.items():
            try:
                if call not in late:
                    ray.get(call)
                    continue
            except RayActorError:
                pass
            failed.add(i)

    # ----- colocated rollout: this rank also hosts a rollout engine (rollout.placement: colocated) -----
    def start_rollout(self, rollout_cfg: Any, model_path: str, seed: int) -> None:
        """Build this rank's rollout worker (engine, tools) in this process, loaded from `model_path`."""
        from rollout.worker import RolloutWorker

        threads = rollout_cfg.cpu_threads if self.device.type == "cpu" else None  # cores shared by every rank
        self.rollout_worker = RolloutWorker(rollout_cfg, model_path, seed=seed + self.rank, torch_threads=threads)

    def rollout(self, records: list, n: int, sampling: Any) -> list:
        self._engine_awake()
        return self.rollout_worker.rollout(records, n, sampling)

    def replay(self, records: list, scripts: list, sampling: Any) -> list:
        return self.rollout_worker.replay(records, scripts, sampling)

    def tool_stats(self, reset: bool = True) -> dict[str, dict[str, int]]:
        return self.rollout_worker.tool_stats(reset)

    def sync_colocated(self) -> float:
        """The current weights into this rank's engine, gathered one tensor at a time (a collective: every rank
        calls it) and loaded in buckets of at most `weight_sync_bucket_mb`: no rank ever holds the whole model
        twice. Returns the seconds spent."""
        from rollout.engine import weight_buckets

        start = time.perf_counter()
        engine = self.rollout_worker.engine
        self._engine_awake("weights")
        engine.start_weight_update()
        try:
            named = self.strategy.iter_full_weights(self.model)
            for bucket in weight_buckets(named, int(self.cfg.weight_sync_bucket_mb * 1e6)):
                engine.load_weight_bucket(bucket)
        finally:
            engine.finish_weight_update()
        self._engine_awake()
        return time.perf_counter() - start

    def _engine_asleep(self) -> None:
        """Free the colocated engine's memory for training (engines with a sleep mode: vLLM on GPU)."""
        engine = getattr(getattr(self, "rollout_worker", None), "engine", None)
        if getattr(engine, "can_sleep", False):
            engine.sleep()

    def _engine_awake(self, *tags: str) -> None:
        engine = getattr(getattr(self, "rollout_worker", None), "engine", None)
        if getattr(engine, "can_sleep", False):
            engine.wake_up(list(tags) or None)

    def reference_record(self) -> dict[str, Any] | None:
        """The reference policy's directory and the sha256 of its weights files (`rl.checkpoint.reference_record`,
        hashed once), or None without a reference (kl_coef 0). Checkpoints record it; resume checks it."""
        return None if self.ref is None else ckpt.reference_record(self.model_path)

    def check_checkpoint(self, directory: str) -> str | None:
        """Why this trainer may not resume `directory` (another strategy, DeepSpeed world size or reference
        policy), or None. Called on rank 0 before every rank loads."""
        saved = ckpt.read_json(Path(directory) / ckpt.STATE_DIR / "trainer.json")
        try:
            ckpt.check_resumable(saved, self.cfg, directory)
            ckpt.check_reference(saved.get("reference"), self.reference_record(), directory)
        except ckpt.CheckpointMismatch as e:
            return str(e)
        return None

    def save_checkpoint(self, directory: str, extra_state: dict[str, Any]) -> str:
        """Write a from_pretrained-loadable model directory plus trainer_state/, atomically
        (`rl.checkpoint.save_rank`)."""
        out = ckpt.save_rank(
            directory,
            extra_state,
            rank=self.rank,
            cfg=self.cfg,
            model=self.model,
            strategy=self.strategy,
            model_path=self.model_path,
            opt_steps=self.opt_steps,
            reference=self.reference_record() if self.rank == 0 else None,
        )
        return str(out)

    def load_checkpoint(self, directory: str) -> dict[str, Any]:
        """Restore weights, optimizer state, the schedule's step and this rank's RNG from `directory`; return its
        extra_state. FSDP2 checkpoints resume on any number of ranks; DeepSpeed ones need the same world size,
        strategy and ZeRO stage (`rl.checkpoint.load_rank`)."""
        extra, self.opt_steps = ckpt.load_rank(
            directory, rank=self.rank, cfg=self.cfg, model=self.model, strategy=self.strategy
        )
        self._set_lr()
        return extra

    def shutdown(self) -> None:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()


class TrainerGroup:
    """`world_size` TrainerRank actors in one placement group, driven together. See the module docstring."""

    def __init__(
        self,
        cfg: TrainerConfig,
        model_path: str,
        *,
        seed: int = 0,
        temperature: float = 1.0,
        is_correction: float = 0.0,
        total_steps: int = 0,
        ready_timeout_s: float | None = None,
        timeout_s: float = DEFAULT_TIMEOUT_S,
    ):
        """`cfg` is the recipe's `trainer:` section; `temperature` the rollout's sampling temperature (log-probs are
        those of the distribution the rollout sampled from; 0, greedy, scores at 1); `is_correction` the TIS cap of
        the policy loss (rollout.is_correction, 0: off); `total_steps` the cosine schedule's length;
        `ready_timeout_s` how long the ranks' placement group may wait for resources before the group gives up
        (None: `timeout_s`);
        `timeout_s` (run.timeout_s) how long any later call (loading the model, a step, a sync, a checkpoint) may
        take before the ranks are killed and TrainerDiedError raised."""
        import ray
        from ray.util.placement_group import placement_group, remove_placement_group
        from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

        problems = cfg.validate()
        if cfg.lr_schedule == "cosine" and total_steps < 1:  # a run shorter than its warm-up never leaves it: fine
            problems.append(f"a cosine schedule needs total_steps ({total_steps}) > warmup_steps ({cfg.warmup_steps})")
        if not is_correction >= 0:  # NaN too
            problems.append(f"is_correction (rollout.is_correction, the TIS cap): >= 0 (0: off), got {is_correction}")
        if problems:
            raise ValueError("bad trainer config:\n  " + "\n  ".join(problems))
        if not os.path.isdir(model_path):
            raise FileNotFoundError(f"model directory not found: {model_path}")
        world_size = cfg.world_size
        self.world_size, self.timeout_s = world_size, check_timeout(timeout_s)
        ready_timeout_s = self.timeout_s if ready_timeout_s is None else ready_timeout_s
        options = rank_resources(cfg, ray.cluster_resources().get("GPU", 0.0))
        bundle = {"CPU": options["num_cpus"], **({"GPU": options["num_gpus"]} if options["num_gpus"] else {})}
        self.pg = placement_group([dict(bundle) for _ in range(world_size)], strategy="PACK")
        try:
            ray.get(self.pg.ready(), timeout=ready_timeout_s)
        except ray.exceptions.GetTimeoutError:
            remove_placement_group(self.pg)
            raise RuntimeError(
                f"the trainer's {world_size} bundles of {bundle} could not be placed within {ready_timeout_s:g} s; "
                f"the cluster has {ray.cluster_resources()}, of which {ray.available_resources()} are free"
            ) from None
        cls = ray.remote(TrainerRank)
        self.ranks = [
            cls.options(
                scheduling_strategy=PlacementGroupSchedulingStrategy(self.pg, placement_group_bundle_index=i),
                **options,
            ).remote(i, cfg, str(model_path), seed, temperature, total_steps, is_correction)
            for i in range(world_size)
        ]
        try:
            addr, port = self._all("address", ranks=self.ranks[:1])[0]
            self._all("setup", addr, port)
        except BaseException:
            self.shutdown()  # no caller holds the group yet to shut it down
            raise

    def _all(self, method: str, *args, ranks: list | None = None) -> list:
        """`method(*args)` on every rank (or on `ranks`), waiting at most timeout_s. A rank that died or did not
        answer (its ranks are killed: the others wait in a collective for it) raises TrainerDiedError; an error
        raised by the method itself raises as it is."""
        chosen = range(len(self.ranks)) if ranks is None else [self.ranks.index(r) for r in ranks]
        return list(self.each(method, {i: args for i in chosen}).values())

    def each(self, method: str, args_by_rank: dict[int, tuple]) -> dict[int, Any]:
        """`method(*args)` on the ranks named in `args_by_rank`, each with its own arguments, bounded and failing
        like every group call (TrainerDiedError); the answers by rank."""
        from ray.exceptions import RayActorError

        ranks = [self.ranks[i] for i in args_by_rank]
        names = [actor_name("trainer rank", i, self.ranks) for i in args_by_rank]
        try:
            calls = [getattr(self.ranks[i], method).remote(*args) for i, args in args_by_rank.items()]
            answers = get_all(calls, names, ranks, method, self.timeout_s)
        except (RayActorError, ActorTimeoutError) as e:
            if isinstance(e, RayActorError) and not actor_died(e):
                raise
            kill_actors(self.ranks)
            raise TrainerDiedError(method, e) from e
        return dict(zip(args_by_rank, answers))

    def train_step(self, trajectories: list, advantages: list[float]) -> dict[str, float]:
        """One GRPO update on the whole batch (each rank takes 1/world_size of it, length-balanced with
        `balance_lengths`). Returns metrics."""
        import ray

        if len(trajectories) % self.world_size:
            raise ValueError(
                f"batch size {len(trajectories)} is not divisible by world_size {self.world_size}; "
                "choose data.batch_size * rollout.n as a multiple of it"
            )
        return self._all("train_step", ray.put(list(trajectories)), ray.put([float(a) for a in advantages]))[0]

    def sft_step(self, trajectories: list, lr: float | None = None) -> dict[str, float]:
        """One supervised step on the assistant tokens of the whole batch (see `TrainerRank.sft_step`); `lr`
        None follows the schedule."""
        import ray

        return self._all("sft_step", ray.put(list(trajectories)), None if lr is None else float(lr))[0]

    def export_weights(self) -> dict[str, Any]:
        """The full CPU state dict (in-memory parameter names, e.g. model.language_model.layers.0...)."""
        return self._all("export_weights")[0]

    def sync_weights(self, rollout_handles: list) -> float:
        """Push the current weights to every rollout worker handle (`update_weights`); returns seconds spent. A
        handle that died or hung raises WeightSyncError naming it (`RolloutGroup.load_weights` replaces it)."""
        seconds, failed = self._all("sync_weights", list(rollout_handles), self.timeout_s)[0]
        if failed:
            raise WeightSyncError(failed, seconds)
        return seconds

    def save_checkpoint(self, directory: str | Path, extra_state: dict[str, Any]) -> str:
        """Write `directory` whole or not at all: a failure on any rank (a full disk) raises here and leaves no
        `directory`, only a hidden `.<name>.tmp` sibling at worst (`rl.checkpoint.save_rank`)."""
        return self._all("save_checkpoint", str(directory), dict(extra_state))[0]

    def load_checkpoint(self, directory: str | Path) -> dict[str, Any]:
        """Restore every rank from `directory` and return its extra_state. Refused before any rank loads: a folder
        without trainer_state/ or whose COMPLETE marker does not match its files (FileNotFoundError), or one this
        trainer may not resume (`rl.checkpoint.CheckpointMismatch`: strategy, DeepSpeed world size, reference)."""

        path = Path(directory)
        if not (path / ckpt.STATE_DIR).is_dir():
            raise FileNotFoundError(f"not a trainer checkpoint (no {ckpt.STATE_DIR}/): {directory}")
        reason = incomplete_reason(path)
        if reason:
            raise FileNotFoundError(f"incomplete checkpoint {directory}: {reason}")
        problem = self._all("check_checkpoint", str(path), ranks=self.ranks[:1])[0]
        if problem:
            raise ckpt.CheckpointMismatch(problem)
        return self._all("load_checkpoint", str(path))[0]

    def shutdown(self) -> None:
        """Close the process group, end the rank actors and free the placement group."""
        import ray
        from ray.util.placement_group import remove_placement_group

        try:
            ray.get([r.shutdown.remote() for r in self.ranks], timeout=30)
        except Exception:  # a dead or stuck rank: killed below all the same
            pass
        finally:
            kill_actors(self.ranks)
            remove_placement_group(self.pg)


class TrainerDiedError(RuntimeError):
    """A trainer rank died (or did not answer and was killed) during a call: the group is gone. The GRPO loop
    rebuilds it from the last complete checkpoint (run.actor_retries)."""

    def __init__(self, method: str, cause: BaseException):
        self.method, self.cause = method, f"{type(cause).__name__}: {str(cause).splitlines()[0][:300]}"
        super().__init__(f"a trainer rank failed during {method}: {self.cause}")

    def __reduce__(self):
        return _rebuild_died, (self.method, self.cause)


def _rebuild_died(method: str, cause: str) -> TrainerDiedError:
    err = TrainerDiedError.__new__(TrainerDiedError)
    err.method, err.cause = method, cause
    RuntimeError.__init__(err, f"a trainer rank failed during {method}: {cause}")
    return err


def rank_resources(cfg: TrainerConfig, cluster_gpus: float) -> dict[str, float]:
    """What each rank actor (and its placement-group bundle) asks for, {"num_cpus", "num_gpus"}: `cfg.num_gpus`,
    but at least one GPU when the ranks run NCCL (`backend: nccl`, or `backend: ""` on a cluster with GPUs).

    >>> rank_resources(TrainerConfig(), cluster_gpus=0)
    {'num_cpus': 0.5, 'num_gpus': 0.0}
    >>> rank_resources(TrainerConfig(), cluster_gpus=8)["num_gpus"]
    1
    """
    use_gpu = cfg.backend == "nccl" or cfg.num_gpus > 0 or (not cfg.backend and cluster_gpus > 0)
    return {"num_cpus": cfg.num_cpus, "num_gpus": max(cfg.num_gpus, 1 if use_gpu else 0)}
