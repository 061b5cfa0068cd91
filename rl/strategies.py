"""Data-parallel training strategies: how a rank wraps the policy, steps the optimizer and saves its state.

    strategy = make_strategy(cfg, device, mesh)     # "fsdp2" (default) or "deepspeed" (ZeRO-2 or ZeRO-3)
    model, optimizer = strategy.wrap(policy, cfg)
    strategy.backward(loss, last=...)               # one call per micro-batch; `last` ends the accumulation
    grad_norm, stepped = strategy.step()            # clip at cfg.grad_clip, step (skipped on a non-finite norm)

Both run over the rank actors' process group (gloo on CPU, NCCL on GPU); the trainer's loss is already divided
by the global token count and multiplied by the world size, so gradients averaged over ranks are the exact
full-batch gradient whatever the strategy, the number of ranks or the micro-batch size.

FSDP2 shards each decoder layer (see `shard_fsdp2`). DeepSpeed's ZeRO optimizer partitions the optimizer state
(stage 2) and the parameters too (stage 3); it is set up inside the already-initialised torch process group
(`deepspeed.init_distributed(dist_backend=...)` then finds it), with DeepSpeed's CPU accelerator when there is no
GPU (`DS_ACCELERATOR=cpu`, which falls back to gloo without Intel's oneCCL).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from rl import checkpoint as ckpt


def shard_fsdp2(model, mesh) -> None:
    """FSDP2: one shard group per text decoder layer (from the model's `_no_split_modules`), then the root.

    The vision tower stays in the root group on purpose: it runs a data-dependent number of times per forward
    (0 for a text-only micro-batch, once for videos, once more for tool images), and a shard group per vision
    block would then issue a different number of all-gathers on different ranks and deadlock the collective.
    """
    from torch.distributed.fsdp import fully_shard

    names = set(getattr(model, "_no_split_modules", None) or [])
    inner = getattr(model, "model", model)
    visual = getattr(inner, "visual", None) or getattr(model, "visual", None)
    in_visual = {id(m) for m in visual.modules()} if visual is not None else set()
    for module in model.modules():
        if type(module).__name__ in names and id(module) not in in_visual:
            fully_shard(module, mesh=mesh)
    fully_shard(model, mesh=mesh)


def _adamw(params, cfg):
    import torch

    return torch.optim.AdamW(params, lr=cfg.lr, betas=tuple(cfg.betas), weight_decay=cfg.weight_decay)


def _scalar(value) -> float:
    value = value.full_tensor() if hasattr(value, "full_tensor") else value
    return float(value)


class FSDP2Strategy:
    """torch FSDP2 (`fully_shard`) with a plain AdamW over the sharded parameters."""

    name = "fsdp2"
    every_vision_kind = False  # the vision tower lives in the root shard group: gathered once per forward

    def __init__(self, cfg: Any, device: Any, mesh: Any):
        self.cfg, self.device, self.mesh = cfg, device, mesh
        self.model = self.optimizer = None

    def wrap(self, model, trainable: bool = True):
        shard_fsdp2(model, self.mesh)
        if trainable:
            self.model, self.optimizer = model, _adamw(model.parameters(), self.cfg)
        return model

    def reset_optimizer(self) -> None:
        self.optimizer = _adamw(self.model.parameters(), self.cfg)

    def set_lr(self, lr: float) -> None:
        for group in self.optimizer.param_groups:
            group["lr"] = lr

    def zero_grad(self) -> None:
        self.optimizer.zero_grad(set_to_none=True)

    def backward(self, loss, last: bool) -> None:
        loss.backward()

    def step(self) -> tuple[float, bool]:
        import math

        import torch

        grad_norm = _scalar(torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.grad_clip))
        # a non-finite gradient would poison the weights: drop this update (every rank sees the same norm)
        stepped = math.isfinite(grad_norm)
        if stepped:
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return grad_norm, stepped

    def full_state_dict(self, model) -> dict[str, Any]:
        """The full CPU state dict on every rank (collective)."""
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))

    def load_full_state_dict(self, model, state: dict[str, Any]) -> None:
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

        set_model_state_dict(model, state, options=StateDictOptions(full_state_dict=True))

    def save_optimizer(self, state_dir: Path, rank: int) -> None:
        """The full (unsharded) optimizer state, written once by rank 0."""
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

        options = StateDictOptions(full_state_dict=True, cpu_offload=True)
        optim = get_optimizer_state_dict(self.model, self.optimizer, options=options)
        if rank == 0:
            ckpt.save_flat_state(ckpt.optimizer_to_flat(optim), state_dir, "optimizer")

    def load_optimizer(self, state_dir: Path, rank: int) -> None:
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

        optim = ckpt.optimizer_from_flat(ckpt.load_flat_state(state_dir, "optimizer"))
        set_optimizer_state_dict(self.model, self.optimizer, optim, options=StateDictOptions(full_state_dict=True))


class DeepSpeedStrategy:
    """DeepSpeed ZeRO stage 2 or 3 (`cfg.zero_stage`) around the same AdamW. The reference policy is a plain
    replica (it has no optimizer; under ZeRO-3 this costs one unsharded copy of the weights per rank)."""

    name = "deepspeed"

    def __init__(self, cfg: Any, device: Any, mesh: Any):
        if cfg.zero_stage not in (2, 3):
            raise ValueError(f"zero_stage must be 2 or 3 for strategy 'deepspeed', got {cfg.zero_stage}")
        self.cfg, self.device = cfg, device
        self.model = self.optimizer = self.engine = None
        # ZeRO-3 gathers the vision tower's parameters each time it runs: every rank must run it equally often
        self.every_vision_kind = cfg.zero_stage == 3

    def _ds_config(self) -> dict[str, Any]:
        cuda = self.device.type == "cuda"
        zero = {"stage": self.cfg.zero_stage, **dict(self.cfg.zero_config or {})}
        return {
            "train_micro_batch_size_per_gpu": 1,  # nominal: the trainer cuts its own micro-batches
            "gradient_accumulation_steps": 1,  # the trainer marks the accumulation boundary itself
            "gradient_clipping": self.cfg.grad_clip,
            "zero_optimization": zero,
            "bf16": {"enabled": cuda},
            "zero_allow_untested_optimizer": True,  # torch's AdamW; ZeRO wraps any torch optimizer
            "steps_per_print": 2**31 - 1,
            "wall_clock_breakdown": False,
        }

    def wrap(self, model, trainable: bool = True):
        if not trainable:
            return model
        import torch.distributed as dist

        # What a launcher would set. A rank actor sees only its own GPU (device 0); on CPU the ranks share a node.
        cpu = self.device.type != "cuda"
        rank, world = dist.get_rank(), dist.get_world_size()
        os.environ.update({"RANK": str(rank), "WORLD_SIZE": str(world), "LOCAL_RANK": str(rank) if cpu else "0"})
        if cpu:
            os.environ.setdefault("DS_ACCELERATOR", "cpu")
            os.environ.setdefault("LOCAL_SIZE", str(world))
        import deepspeed

        deepspeed.init_distributed(dist_backend=dist.get_backend())  # adopts the existing process group
        optimizer = _adamw(model.parameters(), self.cfg)
        self.engine, self.optimizer, _, _ = deepspeed.initialize(
            model=model, optimizer=optimizer, config=self._ds_config()
        )
        self.model = self.engine
        return self.engine

    def reset_optimizer(self) -> None:
        """Zero the Adam moments and step count in place (ZeRO owns the optimizer; it is not rebuilt)."""
        inner = self.optimizer.optimizer
        for state in inner.state.values():
            for value in state.values():
                if hasattr(value, "zero_"):
                    value.zero_()
        self.set_lr(self.cfg.lr)

    def set_lr(self, lr: float) -> None:
        for group in self.optimizer.param_groups:
            group["lr"] = lr

    def zero_grad(self) -> None:
        self.engine.zero_grad()

    def backward(self, loss, last: bool) -> None:
        self.engine.set_gradient_accumulation_boundary(last)
        self.engine.backward(loss, scale_wrt_gas=False)  # the loss is already normalised by the global tokens

    def step(self) -> tuple[float, bool]:
        self.engine.step()
        norm = self.engine.get_global_grad_norm()
        return (float(norm) if norm is not None else float("nan")), True

    def _gathered(self, model, modify: bool):
        """Under ZeRO-3, every parameter whole for the duration (with `modify`, rank 0's values are scattered
        back on exit); a no-op for ZeRO-2 and for the unpartitioned reference."""
        import contextlib

        import deepspeed

        params = list(model.parameters())
        if self.cfg.zero_stage == 3 and any(hasattr(p, "ds_id") for p in params):
            return deepspeed.zero.GatheredParameters(params, modifier_rank=0 if modify else None)
        return contextlib.nullcontext()

    def full_state_dict(self, model) -> dict[str, Any]:
        """The full CPU state dict on every rank (ZeRO-3 gathers the partitioned parameters)."""
        module = getattr(model, "module", model)
        with self._gathered(module, modify=False):
            return {k: v.detach().cpu().clone() for k, v in module.state_dict().items()}

    def load_full_state_dict(self, model, state: dict[str, Any]) -> None:
        import torch

        module = getattr(model, "module", model)
        with self._gathered(module, modify=True), torch.no_grad():  # under ZeRO-3 rank 0's copy is scattered on exit
            missing, _ = module.load_state_dict(state, strict=False)
        if missing:
            raise ValueError(f"checkpoint lacks parameters: {missing[:5]}")
        if module is getattr(self.engine, "module", None):
            self.optimizer.refresh_fp32_params()  # the optimizer's fp32 master copy follows the new weights

    def save_optimizer(self, state_dir: Path, rank: int) -> None:
        """Each rank writes its own partition of the optimizer state (resume needs the same world size)."""
        flat = ckpt.nested_to_flat(self.optimizer.state_dict())
        ckpt.save_flat_state(flat, state_dir, f"optimizer_rank{rank}")

    def load_optimizer(self, state_dir: Path, rank: int) -> None:
        import torch.distributed as dist

        saved = ckpt.load_flat_state(state_dir, f"optimizer_rank{rank}")
        state = ckpt.overlay_tensors(self.optimizer.state_dict(), saved)
        self.optimizer.load_state_dict([state] * dist.get_world_size(), load_from_fp32_weights=True)


STRATEGIES = {"fsdp2": FSDP2Strategy, "deepspeed": DeepSpeedStrategy}


def make_strategy(cfg: Any, device: Any, mesh: Any):
    if cfg.strategy not in STRATEGIES:
        raise ValueError(f"unknown strategy {cfg.strategy!r}; available: {', '.join(sorted(STRATEGIES))}")
    return STRATEGIES[cfg.strategy](cfg, device, mesh)
