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

Checkpoints (`rl.checkpoint.save_rank` / `load_rank` call `write_model_dir`, `save_state`, `load_state`): FSDP2
streams the Hugging Face model folder from rank 0 one gathered tensor at a time (`rl.hf_export`) and keeps the
weights and optimizer state as a sharded torch.distributed.checkpoint: each rank writes and reads only its own
shards, and a checkpoint resumes on any number of ranks. DeepSpeed writes the folder with `save_pretrained` from
the gathered state dict and one optimizer partition per rank (resume with the same world size and ZeRO stage).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from rl import checkpoint as ckpt
from rl import hf_export

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


def shard_fsdp2(model, mesh, mp_policy: Any = None, offload: bool = False) -> None:
    """FSDP2: one shard group per text decoder layer (from the model's `_no_split_modules`), then the root.

    The vision tower stays in the root group on purpose: it runs a data-dependent number of times per forward
    (0 for a text-only micro-batch, once for videos, once more for tool images), and a shard group per vision
    block would then issue a different number of all-gathers on different ranks and deadlock the collective.
    With `offload` the shards (and their gradients, and so the optimizer state) live in CPU memory and each group is
    copied to the device for its forward and backward (FSDP2's CPUOffloadPolicy).
    """
    from torch.distributed.fsdp import CPUOffloadPolicy, MixedPrecisionPolicy, OffloadPolicy, fully_shard

    mp_policy = mp_policy or MixedPrecisionPolicy()  # fully_shard's default: compute in the parameters' dtype
    policy = CPUOffloadPolicy(pin_memory=_cuda()) if offload else OffloadPolicy()
    names = set(getattr(model, "_no_split_modules", None) or [])
    inner = getattr(model, "model", model)
    visual = getattr(inner, "visual", None) or getattr(model, "visual", None)
    in_visual = {id(m) for m in visual.modules()} if visual is not None else set()
    for module in model.modules():
        if type(module).__name__ in names and id(module) not in in_visual:
            fully_shard(module, mesh=mesh, mp_policy=mp_policy, offload_policy=policy)
    fully_shard(model, mesh=mesh, mp_policy=mp_policy, offload_policy=policy)


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def offloaded(cfg: Any, trainable: bool) -> bool:
    """Whether `trainer.offload` keeps this model's shards in CPU memory (the policy: "all"; the reference: also
    "reference").

    >>> from types import SimpleNamespace as C
    >>> offloaded(C(offload="reference"), True), offloaded(C(offload="reference"), False)
    (False, True)
    """
    return cfg.offload == "all" or (cfg.offload == "reference" and not trainable)


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
        shard_fsdp2(model, self.mesh, mp_policy, offload=offloaded(self.cfg, trainable))
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
        """The full CPU state dict on rank 0 (a collective; the other ranks get {}), in `export_dtype`: what weight
        sync sends. Checkpoints never gather the whole model (`write_model_dir`, `save_state`)."""
        return _cast(self._full_weights(model), self.export_dtype)

    def _full_weights(self, model) -> dict[str, Any]:
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))

    def iter_full_weights(self, model) -> Iterator[tuple[str, Any]]:
        """(name, whole tensor in `export_dtype`) one at a time on every rank (each a collective): what a rank
        gives its colocated engine, never the whole model at once."""
        from torch.distributed.checkpoint.state_dict import get_model_state_dict

        for name, shard in get_model_state_dict(model).items():  # sharded: nothing gathered yet
            yield name, _cast({name: _full_tensor(shard).detach()}, self.export_dtype)[name]

    def load_full_state_dict(self, model, state: dict[str, Any]) -> None:
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

        set_model_state_dict(model, state, options=StateDictOptions(full_state_dict=True))

    def write_model_dir(self, model, folder: Path, rank: int) -> BaseException | None:
        """The checkpoint's Hugging Face model folder, streamed (`rl.hf_export.stream_model_dir`): every rank
        gathers one tensor at a time (`DTensor.full_tensor`), rank 0 casts it to `export_dtype` and writes files of
        at most `cfg.checkpoint_shard_mb`. A collective; returns rank 0's write error instead of raising it."""
        from torch.distributed.checkpoint.state_dict import get_model_state_dict

        state = get_model_state_dict(model)  # sharded: this rank's DTensors, nothing gathered yet
        return hf_export.stream_model_dir(
            model,
            folder,
            state,
            dtype=self.export_dtype,
            max_file_bytes=_max_file_bytes(self.cfg),
            gather=_full_tensor,
            writer=rank == 0,
        )

    def weights_in_state(self, state_dir: Path) -> bool:
        """Whether `load_state` restores the weights too (a sharded checkpoint) or they come from the model folder
        (a checkpoint of the earlier layout, with the full optimizer.safetensors)."""
        return (state_dir / ckpt.DCP_DIR).is_dir()

    def save_state(self, state_dir: Path, rank: int) -> None:
        """Every rank writes its own shards of the weights (in the dtype the optimizer steps: the fp32 masters under
        bf16-mixed) and of the optimizer state into `state_dir/dcp/` with torch.distributed.checkpoint: safetensors
        files with the sharding offsets in their headers, nothing gathered. Rank 0 writes the optimizer's
        non-tensor entries (param groups) to optimizer_values.json. A collective."""
        import torch.distributed.checkpoint as dcp
        from torch.distributed.checkpoint import HuggingFaceStorageWriter

        flat, values, _ = self._dcp_state()
        writer = HuggingFaceStorageWriter(
            str(state_dir / ckpt.DCP_DIR), fqn_to_index_mapping=self._dcp_files(flat), save_distributed=True
        )
        with _dcp_errors_as_oserror():
            dcp.save(flat, storage_writer=writer)  # a failure on any rank raises on every rank
        if rank == 0:
            ckpt.write_json(state_dir / ckpt.OPTIMIZER_VALUES, values)

    def load_state(self, state_dir: Path, rank: int) -> None:
        """Restore weights and optimizer state saved by `save_state`, whatever world size saved them: each rank
        reads the slices of the saved shards that overlap its own shards (torch.distributed.checkpoint reshards).
        A checkpoint of the earlier layout restores its full optimizer state instead. A collective."""
        import torch.distributed.checkpoint as dcp
        from torch.distributed.checkpoint import HuggingFaceStorageReader

        if not self.weights_in_state(state_dir):
            return self._load_full_optimizer(state_dir)
        folder = state_dir / ckpt.DCP_DIR
        error = target = None
        try:
            target, tied, values = self._dcp_target(state_dir)
        except Exception as e:
            error = e
        ckpt.agree(error, f"reading the sharded trainer state in {folder}")
        dcp.load(target, storage_reader=HuggingFaceStorageReader(str(folder)))  # in place, into this rank's shards
        self._set_dcp_state(target, tied, values)

    def _dcp_state(self) -> tuple[dict[str, Any], dict[str, Any], dict[str, str]]:
        """This rank's state through torch's `get_state_dict` (sharded): the flat {"model/<name>": weight,
        "optim/state/<name>/<entry>": optimizer tensor} that DCP saves, the optimizer's non-tensor entries, and
        the tied copies left out of the weights ({name: the name it is tied to})."""
        import torch
        from torch.distributed.checkpoint.state_dict import get_state_dict

        model_state, optim_state = get_state_dict(self.model, self.optimizer)
        tied = hf_export.tied_copies(self.model, model_state)
        flat = {f"model/{k}": v for k, v in model_state.items() if k not in tied}
        values = {}
        for key, value in ckpt.optimizer_to_flat(optim_state).items():
            if torch.is_tensor(value):
                flat[f"optim/{key}"] = value
            else:
                values[key] = value
        return flat, values, tied

    def _dcp_files(self, flat: dict[str, Any]) -> dict[str, int]:
        """{key: file number from 1}: each rank's share cut into files of at most `cfg.checkpoint_shard_mb`, so
        that writing one (safetensors serialises a file in memory) holds a bounded part of the state."""
        world = self.mesh.size()
        sizes = [
            (k, v.numel() * v.dtype.itemsize // (world if hasattr(v, "to_local") else 1)) for k, v in flat.items()
        ]
        groups = hf_export.plan_files(sizes, _max_file_bytes(self.cfg))
        return {key: i for i, group in enumerate(groups, 1) for key in group}

    def _dcp_target(self, state_dir: Path) -> tuple[dict[str, Any], dict[str, str], dict[str, Any]]:
        """The tensors `dcp.load` fills: every weight, and the optimizer entries the checkpoint holds, on a fresh
        optimizer (a parameter that never had a gradient has no Adam state, then as in the run that saved it)."""
        from torch.distributed.checkpoint import HuggingFaceStorageReader

        folder = state_dir / ckpt.DCP_DIR
        saved = set(HuggingFaceStorageReader(str(folder)).read_metadata().state_dict_metadata)
        values = ckpt.read_json(state_dir / ckpt.OPTIMIZER_VALUES)
        self.reset_optimizer()
        flat, _, tied = self._dcp_state()  # torch fills a fresh optimizer's state with a zero-lr step first
        missing = sorted(k for k in flat if k.startswith("model/") and k not in saved)
        unknown = sorted(k for k in saved if k not in flat)
        if missing or unknown:
            raise ValueError(
                f"{folder} does not fit this model and optimizer: "
                f"weights missing {missing[:5]}, entries this trainer does not have {unknown[:5]}"
            )
        return {k: v for k, v in flat.items() if k in saved}, tied, values

    def _set_dcp_state(self, target: dict[str, Any], tied: dict[str, str], values: dict[str, Any]) -> None:
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_state_dict

        weights = {k.removeprefix("model/"): v for k, v in target.items() if k.startswith("model/")}
        weights.update({name: weights[source] for name, source in tied.items()})
        optim = ckpt.optimizer_from_flat(
            {**values, **{k.removeprefix("optim/"): v for k, v in target.items() if k.startswith("optim/")}}
        )
        # not strict: parameters without optimizer state keep none (every weight was checked in `_dcp_target`)
        options = StateDictOptions(strict=False)
        set_state_dict(self.model, self.optimizer, model_state_dict=weights, optim_state_dict=optim, options=options)

    def _load_full_optimizer(self, state_dir: Path) -> None:
        """A checkpoint of the earlier layout: the full optimizer state in optimizer.safetensors / .json, and the
        fp32 masters in master_weights.* when its model folder is bf16; every rank reads them whole."""
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

        if not (state_dir / "optimizer.safetensors").is_file():
            raise FileNotFoundError(
                f"{state_dir}: holds neither the sharded state ({ckpt.DCP_DIR}/) nor optimizer.safetensors"
            )
        if (state_dir / "master_weights.json").is_file():
            self.load_full_state_dict(self.model, ckpt.load_flat_state(state_dir, "master_weights"))
        optim = ckpt.optimizer_from_flat(ckpt.load_flat_state(state_dir, "optimizer"))
        set_optimizer_state_dict(self.model, self.optimizer, optim, options=StateDictOptions(full_state_dict=True))


@contextlib.contextmanager
def _dcp_errors_as_oserror():
    """torch.distributed.checkpoint wraps each rank's failure in a CheckpointException (a BaseException): re-raise it
    as the OSError it was when every rank's failure is one (a full disk), on every rank, so that the caller sees
    a failed save it can skip (recipes/grpo.py) whichever rank answers first; anything else raises as it is."""
    from torch.distributed.checkpoint.api import CheckpointException

    try:
        yield
    except CheckpointException as e:
        causes = [failure[0] if isinstance(failure, tuple) else failure for failure in e.failures.values()]
        if causes and all(isinstance(cause, OSError) for cause in causes):
            first = causes[0]
            raise OSError(first.errno, f"{first.strerror or first} (writing the sharded trainer state)") from e
        raise


def _full_tensor(tensor: Any) -> Any:
    """The whole tensor of a DTensor shard (a collective); an offloaded shard (in CPU memory under a CUDA mesh) is
    copied to the mesh's device first, where the collective runs."""
    if not hasattr(tensor, "full_tensor"):
        return tensor
    if tensor.device.type != tensor.device_mesh.device_type:
        tensor = tensor.to(tensor.device_mesh.device_type)
    return tensor.full_tensor()


def _max_file_bytes(cfg: Any) -> int:
    return int(cfg.checkpoint_shard_mb * 10**6)


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

    def iter_full_weights(self, model) -> Iterator[tuple[str, Any]]:
        """(name, whole tensor) on every rank: the full state dict (gathered under ZeRO-3), item by item."""
        yield from self.full_state_dict(model).items()

    def load_full_state_dict(self, model, state: dict[str, Any]) -> None:
        import torch

        module = getattr(model, "module", model)
        with self._gathered(module, modify=True), torch.no_grad():  # under ZeRO-3 rank 0's copy is scattered on exit
            missing, _ = module.load_state_dict(state, strict=False)
        if missing:
            raise ValueError(f"checkpoint lacks parameters: {missing[:5]}")
        if module is getattr(self.engine, "module", None):
            self.optimizer.refresh_fp32_params()  # the optimizer's fp32 master copy follows the new weights

    def write_model_dir(self, model, folder: Path, rank: int) -> BaseException | None:
        """The checkpoint's Hugging Face model folder: the full state dict (gathered under ZeRO-3) on every rank,
        written by rank 0 with `save_pretrained`. A collective; returns rank 0's write error instead of raising."""
        state = self.full_state_dict(model)
        if rank != 0:
            return None
        try:
            module = getattr(model, "module", model)  # the engine wraps the HF model
            module.save_pretrained(str(folder), state_dict=state, max_shard_size=_max_file_bytes(self.cfg))
        except Exception as e:
            return e
        return None

    def weights_in_state(self, state_dir: Path) -> bool:
        """False: the weights come from the model folder (`load_state` restores the optimizer partitions only)."""
        return False

    def save_state(self, state_dir: Path, rank: int) -> None:
        """Each rank writes its own partition of the optimizer state (resume needs the same world size)."""
        flat = ckpt.nested_to_flat(self.optimizer.state_dict())
        ckpt.save_flat_state(flat, state_dir, f"optimizer_rank{rank}")

    def load_state(self, state_dir: Path, rank: int) -> None:
        import torch.distributed as dist

        saved = ckpt.load_flat_state(state_dir, f"optimizer_rank{rank}")
        state = ckpt.overlay_tensors(self.optimizer.state_dict(), saved)
        self.optimizer.load_state_dict([state] * dist.get_world_size(), load_from_fp32_weights=True)


STRATEGIES = {"fsdp2": FSDP2Strategy, "deepspeed": DeepSpeedStrategy}


def make_strategy(cfg: Any, device: Any, mesh: Any):
    if cfg.strategy not in STRATEGIES:
        raise ValueError(f"unknown strategy {cfg.strategy!r}; available: {', '.join(sorted(STRATEGIES))}")
    return STRATEGIES[cfg.strategy](cfg, device, mesh)
