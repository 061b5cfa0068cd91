"""FSDP2 checkpoints keep the weights and the Adam state sharded (torch.distributed.checkpoint): each rank writes its
own slices, and a checkpoint saved by 2 rank actors resumes on 1 and then on 2 again with the same weights, moments
and next loss. The model folder beside it is streamed in bounded files that from_pretrained loads as is, and a
checkpoint of the earlier layout (the full optimizer.safetensors) still resumes."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests.rl.rl_test_data import make_trajectories

SHARD_MB = 10  # the tiny model (~78 MB in fp32) then needs several files, its 39 MB embedding one of its own


def _assemble(dcp_dir: Path) -> dict:
    """Every tensor of a sharded checkpoint, whole: each rank's slices put back at the offsets its file headers
    record, read with plain safetensors (not torch's reader); every element must be written exactly once."""
    import torch
    from safetensors import safe_open

    pieces: dict[str, list] = {}
    for path in sorted(dcp_dir.glob("*.safetensors")):
        with safe_open(str(path), "pt") as f:
            offsets = json.loads(f.metadata()["DCP_SHARDING_INFO"])
            for key in f.keys():
                pieces.setdefault(key, []).append((offsets[key]["saved_offsets"], f.get_tensor(key)))
    whole = {}
    for key, parts in pieces.items():
        shape = [max(o[d] + t.shape[d] for o, t in parts) for d in range(parts[0][1].dim())]
        out, count = torch.zeros(shape, dtype=parts[0][1].dtype), torch.zeros(shape, dtype=torch.int64)
        for o, t in parts:
            where = tuple(slice(a, a + n) for a, n in zip(o, t.shape))
            out[where] = t
            count[where] += 1
        assert bool((count == 1).all()), key
        whole[key] = out
    return whole


def _assert_equal(got: dict, want: dict) -> None:
    import torch

    assert sorted(got) == sorted(want)
    for key in want:
        assert torch.equal(got[key], want[key]), key


def _state(path: Path) -> tuple[dict, dict]:
    values = json.loads((path / "trainer_state" / "optimizer_values.json").read_text())
    return _assemble(path / "trainer_state" / "dcp"), values


def _check_model_folder(path: Path, exported: dict, model_dir: str) -> None:
    """from_pretrained loads `path` with nothing missing or left over and the trainer's exported weights; the key
    names are those save_pretrained wrote for the tiny model; files of at most SHARD_MB unless one tensor is larger."""
    import torch
    from safetensors import safe_open
    from transformers import AutoModelForImageTextToText

    model, info = AutoModelForImageTextToText.from_pretrained(str(path), dtype=torch.float32, output_loading_info=True)
    assert info == {"missing_keys": set(), "unexpected_keys": set(), "mismatched_keys": set(), "error_msgs": []}
    loaded = model.state_dict()
    assert sorted(loaded) == sorted(exported)
    for key, value in exported.items():
        assert torch.equal(loaded[key], value), key
    index = json.loads((path / "model.safetensors.index.json").read_text())
    with safe_open(str(Path(model_dir) / "model.safetensors"), "pt") as f:
        assert sorted(index["weight_map"]) == sorted(f.keys())  # written by save_pretrained
    files = sorted(set(index["weight_map"].values()))
    assert files == [f"model-{i:05d}-of-{len(files):05d}.safetensors" for i in range(1, len(files) + 1)]
    assert len(files) >= 3 and sorted(p.name for p in path.glob("*.safetensors")) == files
    total = 0
    for name in files:
        with safe_open(str(path / name), "pt") as f:
            sizes = [f.get_tensor(k).nbytes for k in f.keys()]
        assert sum(sizes) <= SHARD_MB * 10**6 or len(sizes) == 1, name
        total += sum(sizes)
    assert index["metadata"]["total_size"] == total


def _as_earlier_layout(src: Path, dst: Path) -> None:
    """A copy of checkpoint `src` in the layout FSDP2 wrote before the sharded state: the full optimizer state in
    trainer_state/optimizer.safetensors + .json (its flat keys "state/<name>/<entry>" and "param_groups")."""
    from common.checkpoint_marker import write_marker
    from rl.checkpoint import save_flat_state

    shutil.copytree(src, dst)
    tensors, values = _state(src)
    flat = {k.removeprefix("optim/"): v for k, v in tensors.items() if k.startswith("optim/")}
    save_flat_state({**values, **flat}, dst / "trainer_state", "optimizer")
    shutil.rmtree(dst / "trainer_state" / "dcp")
    (dst / "trainer_state" / "optimizer_values.json").unlink()
    write_marker(dst, 1)


def test_two_rank_checkpoint_resumes_on_one_rank_then_two_exactly(ray_local, tiny_model_dir, tmp_path):
    import torch

    from common.checkpoint_marker import incomplete_reason, is_resumable, read_marker, write_marker
    from rl.checkpoint import prune_checkpoints
    from rl.config import TrainerConfig
    from rl.trainer import TrainerGroup

    fields = {"lr": 1e-3, "kl_coef": 0.0, "micro_batch_size": 1, "checkpoint_shard_mb": SHARD_MB}
    trajs, other = make_trajectories(tiny_model_dir, seed=0), make_trajectories(tiny_model_dir, seed=1)
    run = tmp_path / "run"
    saved2, saved1, again2 = (run / f"checkpoint-{i}" for i in (1, 2, 3))
    group2 = TrainerGroup(TrainerConfig(world_size=2, **fields), tiny_model_dir)
    try:
        group2.sft_step(trajs)
        group2.save_checkpoint(saved2, {"step": 1})
        exported = group2.export_weights()
        never_stopped = group2.sft_step(other)  # the step a run that never stopped takes next
        tensors, values = _state(saved2)
        # each rank wrote its own files, several of them at this file size
        shards = sorted(p.name for p in (saved2 / "trainer_state" / "dcp").iterdir())
        assert {s.split("-model-")[0] for s in shards} == {"shard-00001", "shard-00002"} and len(shards) > 2
        listed = read_marker(saved2)["files"]
        for name in shards:
            assert listed[f"trainer_state/dcp/{name}"] == (saved2 / "trainer_state" / "dcp" / name).stat().st_size
        # the weights in the sharded state are the exported ones (fp32 on CPU), tied lm_head left out
        assert sorted(k.removeprefix("model/") for k in tensors if k.startswith("model/")) == sorted(
            k for k in exported if k != "lm_head.weight"
        )
        for key, value in exported.items():
            if key != "lm_head.weight":
                assert torch.equal(tensors[f"model/{key}"], value), key
        assert any(k.endswith("/exp_avg_sq") for k in tensors) and values["param_groups"][0]["lr"] == 1e-3
        _check_model_folder(saved2, exported, tiny_model_dir)

        group1 = TrainerGroup(TrainerConfig(world_size=1, **fields), tiny_model_dir)
        try:
            group1.sft_step(other)  # moves weights, moments and step count away from the checkpoint first
            assert group1.load_checkpoint(saved2) == {"step": 1}
            group1.save_checkpoint(saved1, {"step": 1})  # what one rank now holds, written out
            _assert_equal(_state(saved1)[0], tensors)
            assert _state(saved1)[1] == values
            on_one = group1.sft_step(other)
        finally:
            group1.shutdown()
        assert on_one["sft/loss"] == pytest.approx(never_stopped["sft/loss"], rel=0, abs=1e-6)

        assert group2.load_checkpoint(saved1) == {"step": 1}  # 1 -> 2 ranks
        group2.save_checkpoint(again2, {"step": 1})
        _assert_equal(_state(again2)[0], tensors)
        on_two = group2.sft_step(other)
        assert on_two["sft/loss"] == pytest.approx(never_stopped["sft/loss"], rel=0, abs=1e-6)
        assert on_two["sft/grad_norm"] == pytest.approx(never_stopped["sft/grad_norm"], rel=1e-6)

        earlier = tmp_path / "earlier" / "checkpoint-1"
        _as_earlier_layout(saved2, earlier)
        assert group2.load_checkpoint(earlier) == {"step": 1}
        assert group2.sft_step(other)["sft/loss"] == pytest.approx(never_stopped["sft/loss"], rel=0, abs=1e-6)
        (earlier / "trainer_state" / "optimizer.json").unlink()
        (earlier / "trainer_state" / "optimizer.safetensors").unlink()
        write_marker(earlier, 1)  # complete without them: refused, naming what is missing
        with pytest.raises(Exception, match=r"holds neither the sharded state \(dcp/\) nor optimizer.safetensors"):
            group2.load_checkpoint(earlier)
    finally:
        group2.shutdown()

    # retention: checkpoint-2 keeps its model folder (still complete, no longer resumable), checkpoint-1 goes
    done = prune_checkpoints(run, keep_last=1, keep_every=2)
    assert done == ["checkpoint-1: removed", "checkpoint-2: weights kept, trainer_state/ removed"]
    assert incomplete_reason(saved1) is None and not is_resumable(saved1) and not (saved1 / "trainer_state").exists()


def test_doctests():
    import doctest

    import rl.hf_export

    assert doctest.testmod(rl.hf_export).failed == 0


def test_a_failed_write_keeps_gathering_so_no_rank_waits(tiny_model_dir, tmp_path, monkeypatch):
    """The writer rank that fails a file (a full disk) returns the error after gathering every tensor like the
    other ranks; a rank that is not the writer gathers the same tensors in the same order and writes nothing."""
    import errno

    import torch
    from transformers import AutoModelForImageTextToText

    from rl import hf_export

    model = AutoModelForImageTextToText.from_pretrained(tiny_model_dir, dtype=torch.float32)
    state = model.state_dict()
    real_save = hf_export._save

    def full_disk(tensors, path):
        if path.name.startswith("model-00002-"):
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        real_save(tensors, path)

    monkeypatch.setattr(hf_export, "_save", full_disk)
    orders = {}
    for writer in (True, False):
        folder = tmp_path / str(writer)
        folder.mkdir()
        orders[writer] = []

        def gather(tensor, seen=orders[writer]):
            seen.append(tensor.data_ptr())
            return tensor

        kwargs = {"dtype": torch.float32, "max_file_bytes": SHARD_MB * 10**6, "gather": gather, "writer": writer}
        error = hf_export.stream_model_dir(model, folder, state, **kwargs)
        written = sorted(p.name for p in folder.iterdir())
        if writer:
            assert isinstance(error, OSError) and error.errno == errno.ENOSPC
            assert written == ["config.json", "generation_config.json", "model-00001-of-00003.safetensors"]
        else:
            assert error is None and written == []
    # every entry but the tied lm_head (56 of the tiny model's 57), in the same order on both ranks
    assert len(orders[True]) == len(state) - 1 and orders[True] == orders[False]
