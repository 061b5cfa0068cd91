"""Checkpoint files without pickle: weights, optimizer state and RNG states as safetensors + JSON.

Layout written by `save_rank` (every trainer rank calls it; `load_rank` reads it back):

    dir/                       loads with AutoModelForImageTextToText.from_pretrained / vLLM as is
      config.json, generation_config.json, model.safetensors (or model-0000i-of-0000N.safetensors and
      model.safetensors.index.json: files of at most trainer.checkpoint_shard_mb), processor / chat template files
      COMPLETE                 written last: the step and every file with its size (common/checkpoint_marker.py)
      trainer_state/
        dcp/                   FSDP2: the weights (in the dtype the optimizer steps: fp32 masters under bf16-mixed)
                               and the optimizer tensors as a sharded torch.distributed.checkpoint, each rank's own
          shard-0000{r+1}-model-0000i-of-0000N.safetensors    shards, the sharding offsets in each file's header
        optimizer_values.json  FSDP2: the optimizer's non-tensor entries (param groups)
        optimizer_rank{r}.safetensors, optimizer_rank{r}.json  DeepSpeed: each rank's optimizer partition
        rng_rank{r}.safetensors, rng_rank{r}.json   torch / CUDA / numpy / python RNG of each rank
        trainer.json           the trainer config, world size, optimizer step count and the reference policy
                               (its directory and the sha256 of its weights files)
        extra_state.json       the caller's state (data cursor, step, ...)

No rank gathers the optimizer state, and FSDP2 never holds the whole model in one buffer: rank 0 writes the model
folder one gathered tensor at a time, and on resume each rank reads the slices of trainer_state/dcp/ that overlap
its own shards, whatever world size saved them. FSDP2 checkpoints of the earlier layout (the full optimizer state
in trainer_state/optimizer.safetensors + optimizer.json, fp32 masters in master_weights.* when the model folder
is bf16) still resume: the weights then come from the model folder.

A save is atomic: the ranks write into the hidden sibling `.<name>.tmp/`, fsync every file, rank 0 writes the
marker and renames the folder into place. A save that fails (a full disk) or a process that dies leaves no `<name>`
behind, only the hidden folder, which the next save or resume removes. `prune_checkpoints` applies a run's
retention (run.keep_last, run.keep_every).
"""

from __future__ import annotations

import fnmatch
import functools
import hashlib
import json
import os
import random
import shutil
from dataclasses import asdict
from pathlib import Path
from typing import Any

from common.checkpoint_marker import (
    CHECKPOINT_PREFIX,
    STATE_DIR,
    complete_checkpoints,
    fsync_dir,
    fsync_tree,
    read_marker,
    step_dirs,
    write_marker,
)

DCP_DIR = "dcp"  # trainer_state/dcp/: the FSDP2 ranks' shards of weights and optimizer state
OPTIMIZER_VALUES = "optimizer_values.json"  # trainer_state/: the FSDP2 optimizer's non-tensor entries


class CheckpointMismatch(ValueError):
    """This trainer may not resume that checkpoint (another strategy, world size or reference policy): resuming
    from an older checkpoint of the same run would not help."""


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
    """The checkpoint of `run_dir` with the highest step: among the complete ones (`complete`: the marker there and
    every file it lists with its size), or any `checkpoint-<N>` directory."""
    found = complete_checkpoints(run_dir) if complete else step_dirs(run_dir)
    return found[-1][1] if found else None


def partial_dir(final: str | Path, what: str = "") -> Path:
    """The hidden sibling a save writes `final` into (`what`: another use, e.g. an old copy being replaced)."""
    final = Path(final)
    return final.parent / f".{final.name}{'.' + what if what else ''}.tmp"


def remove_partial_saves(run_dir: str | Path) -> list[str]:
    """Remove what saves and prunes that did not finish left in `run_dir` (`.checkpoint-<N>*.tmp/`); their names."""
    removed = []
    for path in sorted(Path(run_dir).glob(f".{CHECKPOINT_PREFIX}*.tmp")):
        shutil.rmtree(path, ignore_errors=True)
        removed.append(path.name)
    return removed


def publish(tmp: Path, final: Path) -> None:
    """Rename the finished `tmp` folder to `final` (replacing an older `final`) and make the rename durable."""
    if final.exists():  # e.g. a checkpoint of this step that did not load, saved again after resuming earlier
        old = partial_dir(final, "replaced")
        shutil.rmtree(old, ignore_errors=True)
        os.rename(final, old)
        os.rename(tmp, final)
        fsync_dir(final.parent)
        shutil.rmtree(old)
    else:
        os.rename(tmp, final)
        fsync_dir(final.parent)


def agree(error: BaseException | None, what: str) -> None:
    """All ranks learn whether any of them failed `what`, then every rank raises (its own error, or one naming the
    ranks that failed: an OSError when each of those failed with one, e.g. a full disk, so that the caller sees the
    same kind of error whichever rank answers first). A rank failing alone would leave the others waiting in the
    next collective."""
    import torch
    import torch.distributed as dist

    cuda = dist.get_backend() == "nccl"
    device = torch.device("cuda", torch.cuda.current_device()) if cuda else torch.device("cpu")
    failed = torch.zeros(dist.get_world_size(), device=device)  # 0: fine, 1: an OSError, 2: any other error
    failed[dist.get_rank()] = 0.0 if error is None else 1.0 if isinstance(error, OSError) else 2.0
    dist.all_reduce(failed)
    if error is not None:
        raise error
    kinds = failed.tolist()
    ranks = [i for i, f in enumerate(kinds) if f]
    if ranks:
        kind = OSError if all(kinds[i] == 1.0 for i in ranks) else RuntimeError
        raise kind(f"{what} failed on rank(s) {ranks} (their errors are in their logs)")


# ---- the reference policy ---------------------------------------------------------------------------------------


def weights_sha256(model_dir: str | Path) -> dict[str, str]:
    """{file name: sha256} of the *.safetensors files of `model_dir`; hashed once per process while the files stay
    as they are (their sizes and modification times)."""
    files = sorted(Path(model_dir).resolve().glob("*.safetensors"))
    stamp = tuple((str(f), f.stat().st_size, f.stat().st_mtime_ns) for f in files)
    return dict(_hash_files(stamp))


@functools.lru_cache(maxsize=8)
def _hash_files(stamp: tuple) -> tuple[tuple[str, str], ...]:
    out = []
    for path, _, _ in stamp:
        with open(path, "rb") as f:
            out.append((Path(path).name, hashlib.file_digest(f, "sha256").hexdigest()))
    return tuple(out)


def reference_record(model_dir: str | Path) -> dict[str, Any]:
    """What trainer.json records of the reference policy: its directory and the sha256 of its weights files."""
    return {"path": str(Path(model_dir).resolve()), "sha256": weights_sha256(model_dir)}


def check_reference(saved: dict[str, Any] | None, current: dict[str, Any] | None, where: str | Path) -> None:
    """Raise CheckpointMismatch when the reference policy recorded in a checkpoint (`saved`) has other weights
    than the one this trainer loaded (`current`). Nothing to compare without either (kl_coef 0: no reference)."""
    if not saved or not current or saved["sha256"] == current["sha256"]:
        return
    old, new = saved["sha256"], current["sha256"]
    diff = [
        f"{name}: {old[name][:12] if name in old else 'absent'} -> {new[name][:12] if name in new else 'absent'}"
        for name in sorted(set(old) | set(new))
        if old.get(name) != new.get(name)
    ]
    raise CheckpointMismatch(
        f"{where}: was trained against the reference policy {saved['path']}, but this run's reference "
        f"{current['path']} has other weights (sha256 {'; '.join(diff)}). The KL term would pull toward another "
        "policy: resume with the reference it was trained against (the same init_from / model.path, unchanged), "
        "or start a new run_dir"
    )


# ---- saving, loading, pruning -----------------------------------------------------------------------------------


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
    reference: dict[str, Any] | None = None,
) -> Path:
    """One trainer rank's part of writing a checkpoint (every rank calls it): the model folder through
    `strategy.write_model_dir` (rank 0 writes), the processor files of `model_path`, trainer.json (with
    `reference`, see `reference_record`) and `extra_state` (rank 0), the weights and optimizer state through
    `strategy.save_state` (FSDP2: every rank its shards; DeepSpeed: its optimizer partition), each rank its RNG
    states. Atomic (see the module docstring): on any rank's failure every rank raises and `directory` is left as
    it was."""
    final = Path(directory)
    tmp = partial_dir(final)
    state_dir = tmp / STATE_DIR
    try:
        error = _attempt(_fresh_folder, tmp, state_dir) if rank == 0 else None
        agree(error, "creating the checkpoint folder")  # the folder exists before any rank writes
        error = strategy.write_model_dir(model, tmp, rank)  # a collective: rank 0 writes, the others gather
        if rank == 0 and error is None:
            trainer = {"world_size": cfg.world_size, "config": asdict(cfg), "opt_steps": opt_steps}
            error = _attempt(_write_run_files, tmp, model_path, extra_state, {**trainer, "reference": reference})
        agree(error, "writing the checkpoint's model files")
        try:
            strategy.save_state(state_dir, rank)
            save_flat_state(rng_state(), state_dir, f"rng_rank{rank}")
            fsync_tree(tmp)  # on a shared filesystem only the writer's fsync makes its files durable
        except Exception as e:
            error = e
        agree(error, "writing the checkpoint's trainer state")
        if rank == 0:
            error = _attempt(_publish_with_marker, tmp, final, extra_state.get("step"))
        agree(error, "publishing the checkpoint")
    except BaseException:
        if rank == 0:  # every rank is past its writes: free the space now (a full disk) rather than at next save
            shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


def _attempt(fn, *args) -> BaseException | None:
    """`fn(*args)`'s exception, or None: a rank that fails must still reach the next `agree`."""
    try:
        fn(*args)
    except Exception as e:
        return e
    return None


def _fresh_folder(tmp: Path, state_dir: Path) -> None:
    shutil.rmtree(tmp, ignore_errors=True)  # a save of this step that did not finish
    state_dir.mkdir(parents=True)


def _write_run_files(tmp: Path, model_path: str, extra_state: dict[str, Any], trainer: dict[str, Any]) -> None:
    copy_processor_files(model_path, tmp)
    write_json(tmp / STATE_DIR / "extra_state.json", extra_state)
    write_json(tmp / STATE_DIR / "trainer.json", trainer)


def _publish_with_marker(tmp: Path, final: Path, step: int | None) -> None:
    write_marker(tmp, step)
    publish(tmp, final)


def check_resumable(saved: dict[str, Any], cfg: Any, where: str | Path) -> None:
    """Raise CheckpointMismatch unless a trainer of config `cfg` can resume from a checkpoint whose trainer.json is
    `saved`: the same strategy, and for DeepSpeed (each rank reads its own optimizer partition) the same world
    size and ZeRO stage. FSDP2 checkpoints resume on any number of ranks (their sharded state is resharded on
    load; one of the earlier layout holds the full optimizer state)."""
    saved_cfg = saved.get("config", {})
    if saved_cfg.get("strategy", "fsdp2") != cfg.strategy:
        raise CheckpointMismatch(
            f"{where}: saved by strategy {saved_cfg.get('strategy')!r}, this trainer is {cfg.strategy!r}; "
            "start from its weights instead (model.path / init_from) to change strategy"
        )
    if cfg.strategy == "deepspeed" and (
        saved["world_size"] != cfg.world_size or saved_cfg.get("zero_stage") != cfg.zero_stage
    ):
        raise CheckpointMismatch(
            f"{where}: a DeepSpeed checkpoint of world_size {saved['world_size']} and ZeRO stage "
            f"{saved_cfg.get('zero_stage')} resumes only with the same (here {cfg.world_size}, {cfg.zero_stage})"
        )


def load_rank(directory: str | Path, *, rank: int, cfg: Any, model: Any, strategy: Any) -> tuple[dict[str, Any], int]:
    """One trainer rank's part of resuming (every rank calls it): check the checkpoint fits `cfg`, restore the
    weights and optimizer state through `strategy.load_state` (FSDP2: from the sharded trainer_state/dcp/; else
    the weights from the model folder first), restore this rank's RNG. Returns the saved extra_state and the
    optimizer step count (the learning-rate schedule's clock). A file that does not read fails every rank
    together."""
    src = Path(directory)
    state_dir = src / STATE_DIR
    error = loaded = extra = saved = None
    try:
        extra = read_json(state_dir / "extra_state.json")
        saved = read_json(state_dir / "trainer.json")
        check_resumable(saved, cfg, src)
        if not strategy.weights_in_state(state_dir):  # DeepSpeed, or an FSDP2 checkpoint of the earlier layout
            loaded = _read_model_folder(src, model)
    except Exception as e:
        error = e
    agree(error, f"reading checkpoint {src}")
    if loaded is not None:
        strategy.load_full_state_dict(model, loaded)
        del loaded
    try:
        strategy.load_state(state_dir, rank)
        rng_name = f"rng_rank{rank}"
        if (state_dir / f"{rng_name}.json").is_file():
            set_rng_state(load_flat_state(state_dir, rng_name))
    except Exception as e:
        error = e
    agree(error, f"loading the trainer state of {src}")
    return extra, int(saved.get("opt_steps", 0))


def _read_model_folder(src: Path, model: Any) -> dict[str, Any]:
    """The full state dict of model folder `src` in the dtype of `model`'s parameters (every rank reads it):
    from_pretrained maps the saved key names to the in-memory ones."""
    from transformers import AutoModelForImageTextToText

    dtype = next(getattr(model, "module", model).parameters()).dtype
    return AutoModelForImageTextToText.from_pretrained(str(src), dtype=dtype).state_dict()


def prune_checkpoints(run_dir: str | Path, keep_last: int, keep_every: int = 0, keep: str | Path = "") -> list[str]:
    """Apply a run's retention after a save: the newest `keep_last` resumable checkpoints stay whole (0: all of
    them); of the older ones, those whose step is a multiple of `keep_every` (0: none) keep their weights (their
    trainer_state/ is removed, the marker rewritten: they stay complete, for evaluation), the others are removed.
    `keep` (the checkpoint just written) is never touched. Returns what was done, one line per checkpoint."""
    if keep_last < 1:
        return []
    spared = Path(keep).resolve() if keep else None
    done = []
    for step, path in complete_checkpoints(run_dir, resumable=True)[:-keep_last]:
        if path.resolve() == spared:
            continue
        if keep_every and step % keep_every == 0:
            marker = read_marker(path)
            weights = {k: v for k, v in marker["files"].items() if not k.startswith(f"{STATE_DIR}/")}
            write_marker(path, marker.get("step"), weights)  # first: the checkpoint never lists missing files
            shutil.rmtree(path / STATE_DIR)
            done.append(f"{path.name}: weights kept, {STATE_DIR}/ removed")
        else:
            gone = partial_dir(path, "removed")
            os.rename(path, gone)  # disappears whole; a crash mid-delete leaves a hidden folder the next save removes
            shutil.rmtree(gone)
            done.append(f"{path.name}: removed")
    return done
