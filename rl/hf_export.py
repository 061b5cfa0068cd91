"""A model folder in Hugging Face format, written tensor by tensor from a sharded model: what `save_pretrained`
writes (config.json, generation_config.json, model*.safetensors under the on-disk key names, and
model.safetensors.index.json when there are several files), without any host buffer holding the whole model.

    error = stream_model_dir(model, folder, state, dtype=torch.bfloat16, max_file_bytes=5 * 10**9,
                             gather=lambda t: t.full_tensor(), writer=rank == 0)

Every rank runs the loop (each `gather` may be a collective); only the writer keeps the gathered tensors, one
file's worth at a time, cast to `dtype` one tensor at a time. transformers keeps some names in memory that differ
from those in the files (Qwen2.5-VL: `model.language_model.layers.0...` in memory, `model.layers.0...` on disk);
`disk_names` asks transformers' own reverse mapping (`revert_weight_conversion`, as `save_pretrained` does) and
drops tied copies (`lm_head.weight` when the embeddings are tied), so `from_pretrained` and vLLM load the folder
as if `save_pretrained` had written it.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

INDEX_NAME = "model.safetensors.index.json"


def tied_copies(model: Any, state: dict[str, Any]) -> dict[str, str]:
    """{name: the name it is tied to} for the entries of `state` that are tied copies of another entry (declared
    tied by the model and sharing its storage): `save_pretrained` leaves them out, and safetensors refuses them."""
    tied = getattr(model, "all_tied_weights_keys", None) or {}
    return {
        target: source
        for target, source in tied.items()
        if target in state and source in state and _storage(state[target]) == _storage(state[source])
    }


def _storage(tensor: Any) -> int:
    local = tensor.to_local() if hasattr(tensor, "to_local") else tensor
    return local.untyped_storage().data_ptr()


def disk_names(model: Any, state: dict[str, Any]) -> dict[str, str]:
    """{in-memory name: the name `save_pretrained` writes it under} for every entry of `state` but tied copies,
    in the order of `state`. Only renaming conversions are supported: a model whose conversion merges or splits
    tensors (e.g. stacked MoE experts) is refused, as streaming those would need the tensors together."""
    import torch
    from transformers.core_model_loading import revert_weight_conversion

    skip = tied_copies(model, state)
    meta = {k: torch.empty(tuple(v.shape), dtype=v.dtype, device="meta") for k, v in state.items() if k not in skip}
    by_id = {id(t): k for k, t in meta.items()}
    reverted = revert_weight_conversion(model, dict(meta))
    names = {by_id.get(id(t)): disk for disk, t in reverted.items()}
    if None in names or len(names) != len(meta):
        raise NotImplementedError(
            f"{type(model).__name__}: its weight conversion merges or splits tensors on save; the streamed "
            "checkpoint export supports renaming conversions only"
        )
    return {k: names[k] for k in meta}


def plan_files(sizes: list[tuple[str, int]], max_bytes: int) -> list[list[str]]:
    """The names in order, cut into consecutive groups of at most `max_bytes` (a larger tensor gets a group alone).

    >>> plan_files([("a", 4), ("b", 4), ("c", 9), ("d", 1), ("e", 2)], 8)
    [['a', 'b'], ['c'], ['d', 'e']]
    """
    groups: list[list[str]] = []
    used = max_bytes + 1  # forces a first group
    for name, size in sizes:
        if used + size > max_bytes:
            groups.append([])
            used = 0
        groups[-1].append(name)
        used += size
    return groups


def file_names(count: int) -> list[str]:
    """The weights files of a model folder cut in `count` files, named as `save_pretrained` names them.

    >>> file_names(1), file_names(2)
    (['model.safetensors'], ['model-00001-of-00002.safetensors', 'model-00002-of-00002.safetensors'])
    """
    if count == 1:
        return ["model.safetensors"]
    return [f"model-{i:05d}-of-{count:05d}.safetensors" for i in range(1, count + 1)]


def write_config(model: Any, folder: Path, dtype: Any) -> None:
    """config.json (with the dtype of the written weights and the unwrapped class as architecture) and, for a
    generative model, generation_config.json, as `save_pretrained` writes them; the live config is not changed."""
    config = copy.deepcopy(model.config)
    config.dtype = str(dtype).removeprefix("torch.")
    config.architectures = [type(model).__name__.removeprefix("FSDP")]
    config.save_pretrained(str(folder))
    generation = getattr(model, "generation_config", None)
    if generation is not None and model.can_generate():
        generation.save_pretrained(str(folder))


def stream_model_dir(
    model: Any,
    folder: Path,
    state: dict[str, Any],
    *,
    dtype: Any,
    max_file_bytes: int,
    gather: Callable[[Any], Any],
    writer: bool,
) -> BaseException | None:
    """Write `state` (in-memory names, possibly sharded tensors) as the Hugging Face model folder `folder`: every
    rank calls it and gathers each tensor with `gather` in the same order; the `writer` rank writes config files
    and files of at most `max_file_bytes` (see `plan_files`). Returns the writer's error instead of raising it:
    after a failed write it keeps gathering, so the other ranks are never left waiting in a collective."""
    names = disk_names(model, state)
    sizes = [(k, state[k].numel() * _export_itemsize(state[k], dtype)) for k in names]
    groups = plan_files(sizes, max_file_bytes)
    files = file_names(len(groups))
    error: BaseException | None = None
    if writer:
        error = _attempt(write_config, model, folder, dtype)
    for group, file in zip(groups, files):
        tensors = {}
        for key in group:
            full = gather(state[key])  # every rank, in the same order
            if writer and error is None:
                tensors[names[key]] = _exported(full, dtype)
            del full
        if writer and error is None:
            error = _attempt(_save, tensors, folder / file)
        del tensors
    if writer and error is None and len(files) > 1:
        weight_map = {names[k]: file for group, file in zip(groups, files) for k in group}
        index = {"metadata": {"total_size": sum(size for _, size in sizes)}, "weight_map": weight_map}
        error = _attempt((folder / INDEX_NAME).write_text, json.dumps(index, indent=2, sort_keys=True) + "\n")
    return error


def _export_itemsize(tensor: Any, dtype: Any) -> int:
    return dtype.itemsize if tensor.is_floating_point() else tensor.element_size()


def _exported(tensor: Any, dtype: Any) -> Any:
    """`tensor` on the CPU, contiguous, floating tensors in `dtype` (cast on their device first: less to copy)."""
    if tensor.is_floating_point() and tensor.dtype != dtype:
        tensor = tensor.to(dtype)
    return tensor.detach().cpu().contiguous()


def _save(tensors: dict[str, Any], path: Path) -> None:
    from safetensors.torch import save_file

    save_file(tensors, str(path), metadata={"format": "pt"})


def _attempt(fn: Callable, *args) -> BaseException | None:
    try:
        fn(*args)
    except Exception as e:
        return e
    return None
