"""Checkpoint files without pickle: optimizer state and RNG states as safetensors + JSON, processor files copied.

Layout written by `save_rank` (every trainer rank calls it; `load_rank` reads it back):

    dir/                       loads with AutoModelForImageTextToText.from_pretrained / vLLM as is
      config.json, model*.safetensors, generation_config.json, tokenizer / processor / chat template files
      trainer_state/
        optimizer.safetensors  every tensor of the (full, flattened) optimizer state (DeepSpeed: one
        optimizer.json         optimizer_rank{r} pair per rank); every other entry (param groups, scalar steps)
        rng_rank{r}.safetensors, rng_rank{r}.json   torch / CUDA / numpy / python RNG of each rank
        trainer.json           the trainer config, world size and optimizer step count
        extra_state.json       the caller's state (data cursor, step, ...)
"""

from __future__ import annotations

import fnmatch
import json
import random
import shutil
from dataclasses import asdict
from pathlib import Path
from typing import Any

STATE_DIR = "trainer_state"
CHECKPOINT_PREFIX = "checkpoint-"  # a run directory's checkpoints: checkpoint-<step>/
# Files a model directory needs besides the weights and config.json (which save_pretrained writes).
PROCESSOR_FILES = (
    "tokenizer*",
    "*processor_config.json",
    "preprocessor_config.json",
    "chat_template*",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.json",
    "merges.txt",
    "*.tiktoken",
)


def copy_processor_files(src: str | Path, dst: str | Path) -> list[str]:
    """Copy the tokenizer / processor / chat-template files of model directory `src` into `dst`."""
    copied = []
    for path in sorted(Path(src).iterdir()):
        if path.is_file() and any(fnmatch.fnmatch(path.name, pat) for pat in PROCESSOR_FILES):
            shutil.copy2(path, Path(dst) / path.name)
            copied.append(path.name)
    return copied


def save_flat_state(flat: dict[str, Any], folder: Path, name: str) -> None:
    """Write a flat {key: tensor | JSON value} dict as `name.safetensors` (tensors) + `name.json` (the rest)."""
    import torch
    from safetensors.torch import save_file

    tensors = {k: v.detach().cpu().contiguous().clone() for k, v in flat.items() if torch.is_tensor(v)}
    others = {k: v for k, v in flat.items() if not torch.is_tensor(v)}
    folder.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(folder / f"{name}.safetensors"))
    (folder / f"{name}.json").write_text(json.dumps({"values": others, "tensor_keys": sorted(tensors)}, indent=1))


def load_flat_state(folder: Path, name: str) -> dict[str, Any]:
    """Inverse of `save_flat_state`."""
    from safetensors.torch import load_file

    meta_path, tensor_path = folder / f"{name}.json", folder / f"{name}.safetensors"
    for path in (meta_path, tensor_path):
        if not path.is_file():
            raise FileNotFoundError(f"checkpoint file missing: {path}")
    meta = json.loads(meta_path.read_text())
    tensors = load_file(str(tensor_path))
    missing = set(meta["tensor_keys"]) - set(tensors)
    if missing:
        raise ValueError(f"{tensor_path}: missing tensors {sorted(missing)[:5]}")
    return {**meta["values"], **tensors}


def nested_to_flat(value: Any, prefix: str = "") -> dict[str, Any]:
    """A nested dict / list of tensors and JSON scalars as one flat {"a/0/b": leaf} dict, for `save_flat_state`.
    Leaves of other types (e.g. a DeepSpeed loss-scaler object) are left out: `overlay_tensors` restores onto a
    live state dict that has them.

    >>> nested_to_flat({"state": {0: {"step": 3}}, "groups": [{"lr": 0.1, "fn": object}]})
    {'state/0/step': 3, 'groups/0/lr': 0.1}
    """
    import torch

    if isinstance(value, dict):
        items = value.items()
    elif isinstance(value, (list, tuple)) and not _is_fragment(value):
        items = enumerate(value)
    elif torch.is_tensor(value) or isinstance(value, (bool, int, float, str)) or value is None:
        return {prefix: value}
    else:
        return {}
    flat: dict[str, Any] = {}
    for key, item in items:
        flat.update(nested_to_flat(item, f"{prefix}/{key}" if prefix else str(key)))
    return flat


def _is_fragment(value: Any) -> bool:
    return hasattr(value, "_fields")  # a namedtuple: kept whole by the live state, not saved


def overlay_tensors(live: Any, saved: dict[str, Any], prefix: str = "") -> Any:
    """`live` (a nested state dict) with every tensor replaced by the saved tensor at the same flat key."""
    import torch

    if isinstance(live, dict):
        return {k: overlay_tensors(v, saved, f"{prefix}/{k}" if prefix else str(k)) for k, v in live.items()}
    if isinstance(live, (list, tuple)) and not _is_fragment(live):
        out = [overlay_tensors(v, saved, f"{prefix}/{i}" if prefix else str(i)) for i, v in enumerate(live)]
        return type(live)(out) if isinstance(live, tuple) else out
    if torch.is_tensor(live):
        if prefix not in saved or not torch.is_tensor(saved[prefix]):
            raise ValueError(f"checkpoint optimizer state lacks tensor {prefix!r}")
        if saved[prefix].shape != live.shape:
            raise ValueError(
                f"checkpoint optimizer tensor {prefix!r} has shape {tuple(saved[prefix].shape)}, "
                f"expected {tuple(live.shape)} (resume with the same world size, strategy and ZeRO stage)"
            )
        return saved[prefix].to(live.dtype)
    return live


def _json_safe(value: Any) -> Any:
    if isinstance(value, tuple):
        return [_json_safe(v) for v in value]
    if isinstance(value, list):
        return [_json_safe(v) for v in value]
    return value


def optimizer_to_flat(osd: dict[str, Any]) -> dict[str, Any]:
    """A full optimizer state dict ({"state": {fqn: {name: value}}, "param_groups": [...]}) as one flat dict:
    "state/<fqn>/<name>" -> tensor or number, "param_groups" -> JSON list (tuples as lists)."""
    flat: dict[str, Any] = {"param_groups": _json_safe(list(osd["param_groups"]))}
    for fqn, entries in osd["state"].items():
        for name, value in entries.items():
            flat[f"state/{fqn}/{name}"] = value
    return flat


def optimizer_from_flat(flat: dict[str, Any]) -> dict[str, Any]:
    """Inverse of `optimizer_to_flat` (betas back to tuples, as torch's optimizers keep them)."""
    state: dict[str, dict[str, Any]] = {}
    for key, value in flat.items():
        if key.startswith("state/"):
            fqn, _, name = key[len("state/") :].rpartition("/")
            state.setdefault(fqn, {})[name] = value
    groups = [{k: tuple(v) if k == "betas" else v for k, v in g.items()} for g in flat["param_groups"]]
    return {"state": state, "param_groups": groups}


def rng_state() -> dict[str, Any]:
    """torch (CPU and every CUDA device), numpy and python RNG states as a flat tensor / JSON dict."""
    import numpy as np
    import torch

    flat: dict[str, Any] = {"torch_cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        for i, state in enumerate(torch.cuda.get_rng_state_all()):
            flat[f"torch_cuda_{i}"] = state
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    flat.update({"numpy_keys": torch.from_numpy(keys.astype(np.int64)), "numpy_meta": [kind, pos, has_gauss, cached]})
    version, internal, gauss_next = random.getstate()
    flat.update({"python_state": torch.tensor(internal, dtype=torch.int64), "python_meta": [version, gauss_next]})
    return flat


def set_rng_state(flat: dict[str, Any]) -> None:
    """Restore what `rng_state` captured."""
    import numpy as np
    import torch

    torch.set_rng_state(flat["torch_cpu"])
    cuda = [flat[k] for k in sorted(k for k in flat if k.startswith("torch_cuda_"))]
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda)
    kind, pos, has_gauss, cached = flat["numpy_meta"]
    np.random.set_state((kind, flat["numpy_keys"].numpy().astype(np.uint32), pos, has_gauss, cached))
    version, gauss_next = flat["python_meta"]
    random.setstate((version, tuple(int(x) for x in flat["python_state"].tolist()), gauss_next))


def write_json(path: Path, value: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(value, indent=1, sort_keys=True))


def read_json(path: Path) -> Any:
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint file missing: {path}")
    return json.loads(path.read_text())


def checkpoint_path(run_dir: str | Path, step: int) -> Path:
    return Path(run_dir) / f"{CHECKPOINT_PREFIX}{step}"


def latest_checkpoint(run_dir: str | Path, complete: bool = True) -> Path | None:
    """The checkpoint of `run_dir` with the highest step: among those whose trainer_state/ exists (`complete`),
    or any `checkpoint-<N>` directory."""
    found = []
    for path in Path(run_dir).glob(CHECKPOINT_PREFIX + "*"):
        tail = path.name[len(CHECKPOINT_PREFIX) :]
        if tail.isdigit() and (not complete or (path / STATE_DIR).is_dir()):
            found.append((int(tail), path))
    return max(found)[1] if found else None


def save_rank(
    directory: str | Path,
    extra_state: dict[str, Any],
    *,
    rank: int,
    cfg: Any,
    model: Any,
    strategy: Any,
    model_path: str,
    opt_steps: int,
) -> Path:
    """One trainer rank's part of writing a checkpoint (every rank calls it): rank 0 writes the model directory
    (weights gathered from every rank, processor files of `model_path`), trainer.json and `extra_state`; each rank
    its optimizer state through `strategy` and its RNG states. The same layout for every strategy, except that
    DeepSpeed writes one optimizer partition per rank."""
    import torch.distributed as dist

    out = Path(directory)
    state_dir = out / STATE_DIR
    state = strategy.full_state_dict(model)  # a collective: every rank takes part, rank 0 keeps the result
    if rank == 0:
        out.mkdir(parents=True, exist_ok=True)
        module = getattr(model, "module", model)  # a DeepSpeed engine wraps the HF model
        module.save_pretrained(str(out), state_dict=state, safe_serialization=True)
        copy_processor_files(model_path, out)
        write_json(state_dir / "extra_state.json", extra_state)
        write_json(
            state_dir / "trainer.json", {"world_size": cfg.world_size, "config": asdict(cfg), "opt_steps": opt_steps}
        )
    dist.barrier()  # the folder exists before the other ranks write their files
    strategy.save_optimizer(state_dir, rank)
    save_flat_state(rng_state(), state_dir, f"rng_rank{rank}")
    dist.barrier()
    return out


def check_resumable(saved: dict[str, Any], cfg: Any, where: str | Path) -> None:
    """Raise unless a trainer of config `cfg` can resume from a checkpoint whose trainer.json is `saved`: the same
    strategy, and for DeepSpeed (each rank reads its own optimizer partition) the same world size and ZeRO stage.
    FSDP2 checkpoints hold the full optimizer state and resume on any number of ranks."""
    saved_cfg = saved.get("config", {})
    if saved_cfg.get("strategy", "fsdp2") != cfg.strategy:
        raise ValueError(
            f"{where}: saved by strategy {saved_cfg.get('strategy')!r}, this trainer is {cfg.strategy!r}; "
            "start from its weights instead (model.path / init_from) to change strategy"
        )
    if cfg.strategy == "deepspeed" and (
        saved["world_size"] != cfg.world_size or saved_cfg.get("zero_stage") != cfg.zero_stage
    ):
        raise ValueError(
            f"{where}: a DeepSpeed checkpoint of world_size {saved['world_size']} and ZeRO stage "
            f"{saved_cfg.get('zero_stage')} resumes only with the same (here {cfg.world_size}, {cfg.zero_stage})"
        )


def load_rank(directory: str | Path, *, rank: int, cfg: Any, model: Any, strategy: Any) -> tuple[dict[str, Any], int]:
    """One trainer rank's part of resuming (every rank calls it): check the checkpoint fits `cfg`, load the
    weights into `model` and the optimizer state through `strategy`, restore this rank's RNG. Returns the saved
    extra_state and the optimizer step count (the learning-rate schedule's clock)."""
    import torch.distributed as dist
    from transformers import AutoModelForImageTextToText

    src = Path(directory)
    state_dir = src / STATE_DIR
    extra = read_json(state_dir / "extra_state.json")
    saved = read_json(state_dir / "trainer.json")
    check_resumable(saved, cfg, src)
    # from_pretrained maps the saved key names to the in-memory ones; every rank reads the (shared) folder.
    dtype = next(getattr(model, "module", model).parameters()).dtype
    loaded = AutoModelForImageTextToText.from_pretrained(str(src), dtype=dtype)
    strategy.load_full_state_dict(model, loaded.state_dict())
    del loaded
    strategy.load_optimizer(state_dir, rank)
    rng_name = f"rng_rank{rank}"
    if (state_dir / f"{rng_name}.json").is_file():
        set_rng_state(load_flat_state(state_dir, rng_name))
    dist.barrier()
    return extra, int(saved.get("opt_steps", 0))
