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

Precision (`cfg.precision`, `resolve_precision`): under "bf16-mixed" the policy is loaded in fp32 and AdamW keeps
fp32 master weights and moments; forward and backward run in bf16 and gradients are reduced in fp32 (FSDP2: a
`MixedPrecisionPolicy` on every shard group; DeepSpeed: its bf16 mode, whose ZeRO optimizer keeps the fp32
masters). "bf16-pure" loads and steps bf16 weights (FSDP2 only). The frozen reference is kept in the compute
dtype. Exported weights (sync, the HF checkpoint) are cast per tensor to the compute dtype with CUDA, fp32 on CPU.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from rl import checkpoint as ckpt

# resolved precision -> (dtype the weights and AdamW state are kept in, forward/backward compute dtype)
PRECISION_DTYPES = {
    "fp32": ("float32", "float32"),
    "bf16-mixed": ("float32", "bfloat16"),
    "bf16-pure": ("bfloat16", "bfloat16"),
}


def resolve_precision(name: str, device_type: str) -> str:
    """The precision `name` means on `device_type`: "auto" is bf16-mixed with CUDA and fp32 on CPU.

    >>> resolve_precision("auto", "cpu"), resolve_precision("auto", "cuda"), resolve_precision("bf16-pure", "cpu")
    ('fp32', 'bf16-mixed', 'bf16-pure')
    """
    if name == "auto":
        return "bf16-mixed" if device_type == "cuda" else "fp32"
    if name not in PRECISION_DTYPES:
        raise ValueError(f"precision must be 'auto' or one of {tuple(PRECISION_DTYPES)}, got {name!r}")
    return name


def precision_dtypes(precision: str) -> tuple[Any, Any]:
    """(the dtype weights are loaded, stored and stepped in, the forward/backward compute dtype) of a resolved
    precision.

    >>> precision_dtypes("bf16-mixed")
    (torch.float32, torch.bfloat16)
    """
    import torch

    master, compute = PRECISION_DTYPES[precision]
    return getattr(torch, master), getattr(torch, compute)


def export_dtype(precision: str, device_type: str) -> Any:
    """The dtype of exported weights: the compute dtype with CUDA (bf16, what vLLM and from_pretrained expect), fp32
    on CPU (where the engines and tests run in fp32)."""
    import torch

    return precision_dtypes(precision)[1] if device_type == "cuda" else torch.float32


def _cast(state: dict[str, Any], dtype: Any) -> dict[str, Any]:
    """Floating tensors of `state` in `dtype`, one tensor at a time (the others as they are)."""
    for key, value in state.items():
        if hasattr(value, "is_floating_point") and value.is_floating_point() and value.dtype != dtype:
            state[key] = value.to(dtype)
    return state


def shard_fsdp2(model, mesh, mp_policy: Any = None) -> None:
    """FSDP2: one shard group per text decoder layer (from the model's `_no_split_modules`), then the root.

    The vision tower stays in the root group on purpose: it runs a data-dependent number of times per forward
    (0 for a text-only micro-batch, once for videos, once more for tool images), and a shard group per vision
    block would then issue a different number of all-gathers on different ranks and deadlock the collective.
    """
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    mp_policy = mp_policy or MixedPrecisionPolicy()  # fully_shard's default: compute in the parameters' dtype
    names = set(getattr(model, "_no_split_modules", None) or [])
    inner = getattr(model, "model", model)
    visual = getattr(inner, "visual", None) or getattr(model, "visual", None)
    in_visual = {id(m) for m in visual.modules()} if visual is not None else set()
    for module in model.modules():
        if type(module).__name__ in names and id(module) not in in_visual:
            fully_shard(module, mesh=mesh, mp_policy=mp_policy)
    fully_shard(model, mesh=mesh, mp_policy=mp_policy)


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
        self.precision = resolve_precision(cfg.precision, device.type)
        self.export_dtype = export_dtype(self.precision, device.type)

    def wrap(self, model, trainable: bool = True):
        import torch
        from torch.distributed.fsdp import MixedPrecisionPolicy

        mp_policy = None
        if trainable and self.precision == "bf16-mixed":  # fp32 sharded masters, gathered as bf16 for compute
            mp_policy = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
        shard_fsdp2(model, self.mesh, mp_policy)
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
        """The full CPU state dict on every rank (collective), in `export_dtype`."""
        return _cast(self._full_weights(model), self.export_dtype)

    def _full_weights(self, model) -> dict[str, Any]:
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))

    def _masters_differ(self) -> bool:
        """Whether the exported (checkpoint) weights are a lossy cast of the weights the optimizer steps."""
        return precision_dtypes(self.precision)[0] != self.export_dtype

    def load_full_state_dict(self, model, state: dict[str, Any]) -> None:
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

        set_model_state_dict(model, state, options=StateDictOptions(full_state_dict=True))

    def save_optimizer(self, state_dir: Path, rank: int) -> None:
        """The full (unsharded) optimizer state, written once by rank 0."""
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

        options = StateDictOptions(full_state_dict=True, cpu_offload=True)
        optim = get_optimizer_state_dict(self.model, self.optimizer, options=options)
        # a bf16 model directory would round the fp32 masters on resume: keep them beside the optimizer state
        masters = self._full_weights(self.model) if self._masters_differ() else None
        if rank == 0:
            ckpt.save_flat_state(ckpt.optimizer_to_flat(optim), state_dir, "optimizer")
            if masters is not None:
                ckpt.save_flat_state(masters, state_dir, "master_weights")

    def load_optimizer(self, state_dir: Path, rank: int) -> None:
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

        if (state_dir / "master_weights.json").is_file():  # exact fp32 masters (the model directory is bf16)
            self.load_full_state_dict(self.model, ckpt.load_flat_state(state_dir, "master_weights"))
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
        self.precision = resolve_precision(cfg.precision, device.type)
        if self.precision == "bf16-pure":
            raise ValueError("precision 'bf16-pure' is FSDP2 only: DeepSpeed keeps fp32 masters whenever bf16 is on")
        self.export_dtype = export_dtype(self.precision, device.type)
        # ZeRO-3 gathers the vision tower's parameters each time it runs: every rank must run it equally often
        self.every_vision_kind = cfg.zero_stage == 3

    def _ds_config(self) -> dict[str, Any]:
        zero = {"stage": self.cfg.zero_stage, **dict(self.cfg.zero_config or {})}
        return {
            "train_micro_batch_size_per_gpu": 1,  # nominal: the trainer cuts its own micro-batches
            "gradient_accumulation_steps": 1,  # the trainer marks the accumulation boundary itself
            "gradient_clipping": self.cfg.grad_clip,
            "zero_optimization": zero,
            # bf16 compute over the ZeRO optimizer's fp32 master partition (DeepSpeed casts the fp32-loaded module)
            "bf16": {"enabled": self.precision == "bf16-mixed"},
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
        """The full CPU state dict on every rank (ZeRO-3 gathers the partitioned parameters), in `export_dtype`."""
        module = getattr(model, "module", model)
        with self._gathered(module, modify=False):
            return _cast({k: v.detach().cpu().clone() for k, v in module.state_dict().items()}, self.export_dtype)

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
