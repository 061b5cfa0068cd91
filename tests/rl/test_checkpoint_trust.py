"""Checkpoints you can trust: the COMPLETE marker, atomic saves (a failure mid-save leaves no checkpoint), resume
falling back past a checkpoint that does not load, retention, and the reference policy recorded by its hash."""

from __future__ import annotations

import errno
import hashlib
import json
import socket
from pathlib import Path

import pytest

from common.checkpoint_marker import MARKER, complete_checkpoints, incomplete_reason, read_marker, write_marker
from rl import checkpoint as ckpt


def _fake_checkpoint(run_dir: Path, step: int, resumable: bool = True) -> Path:
    """A checkpoint-<step> with a 10-byte weights file (and a 5-byte trainer.json), its marker written last."""
    path = run_dir / f"checkpoint-{step}"
    path.mkdir(parents=True)
    (path / "config.json").write_text("{}")
    (path / "model.safetensors").write_bytes(b"0123456789")
    if resumable:
        (path / "trainer_state").mkdir()
        (path / "trainer_state" / "trainer.json").write_text('{"a"}')
    write_marker(path, step)
    return path


def test_the_marker_lists_every_file_with_its_size_and_shows_what_changed(tmp_path):
    path = _fake_checkpoint(tmp_path, 7)
    files = {"config.json": 2, "model.safetensors": 10, "trainer_state/trainer.json": 5}
    assert json.loads((path / MARKER).read_text()) == {"step": 7, "files": files}
    assert incomplete_reason(path) is None

    (path / "model.safetensors").write_bytes(b"0123")  # cut short
    assert incomplete_reason(path) == "model.safetensors has 4 bytes, the marker says 10"
    (path / "model.safetensors").unlink()
    assert incomplete_reason(path) == "model.safetensors is missing"
    (path / MARKER).unlink()
    assert incomplete_reason(path) == "no readable COMPLETE marker (the save did not finish)"
    (path / MARKER).write_text('{"step": 7, "fi')  # a marker cut short reads as none
    assert read_marker(path) is None and incomplete_reason(path).startswith("no readable")


def test_the_newest_complete_checkpoint_is_the_latest(tmp_path):
    from eval.checkpoints import run_checkpoints

    _fake_checkpoint(tmp_path, 2)
    _fake_checkpoint(tmp_path, 4)
    (tmp_path / "checkpoint-6" / "trainer_state").mkdir(parents=True)  # a save that died before its marker
    (_fake_checkpoint(tmp_path, 8) / "model.safetensors").write_bytes(b"01234")  # a file cut short since
    (tmp_path / ".checkpoint-10.tmp").mkdir()  # a save in progress (or a crashed one)
    assert ckpt.latest_checkpoint(tmp_path) == tmp_path / "checkpoint-4"
    assert ckpt.latest_checkpoint(tmp_path, complete=False) == tmp_path / "checkpoint-8"
    assert [c.step for c in run_checkpoints(tmp_path)] == [2, 4]  # eval reads by the same rule
    assert ckpt.remove_partial_saves(tmp_path) == [".checkpoint-10.tmp"]
    assert not (tmp_path / ".checkpoint-10.tmp").exists()


def test_retention_keeps_the_newest_whole_and_the_weights_of_every_nth(tmp_path):
    from eval.checkpoints import run_checkpoints

    for step in range(1, 8):
        _fake_checkpoint(tmp_path, step)
    # keep_last 3 -> 5, 6, 7 whole; of 1..4, the multiples of 2 keep their weights, 1 and 3 go
    done = ckpt.prune_checkpoints(tmp_path, keep_last=3, keep_every=2, keep=tmp_path / "checkpoint-7")
    assert done == [
        "checkpoint-1: removed",
        "checkpoint-2: weights kept, trainer_state/ removed",
        "checkpoint-3: removed",
        "checkpoint-4: weights kept, trainer_state/ removed",
    ]
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"checkpoint-{s}" for s in (2, 4, 5, 6, 7)]
    assert [s for s, _ in complete_checkpoints(tmp_path, resumable=True)] == [5, 6, 7]
    assert [c.step for c in run_checkpoints(tmp_path)] == [2, 4, 5, 6, 7]  # the weights stay evaluable
    assert read_marker(tmp_path / "checkpoint-2") == {"step": 2, "files": {"config.json": 2, "model.safetensors": 10}}
    assert not (tmp_path / "checkpoint-2" / "trainer_state").exists()

    _fake_checkpoint(tmp_path, 8)
    assert ckpt.prune_checkpoints(tmp_path, 3, 2, keep=tmp_path / "checkpoint-8") == ["checkpoint-5: removed"]
    _fake_checkpoint(tmp_path, 9)
    assert ckpt.prune_checkpoints(tmp_path, 0, 2) == []  # keep_last 0 keeps everything
    # the checkpoint just written is never pruned, even when newer ones exist (a resume that fell back to it)
    assert ckpt.prune_checkpoints(tmp_path, 1, 0, keep=tmp_path / "checkpoint-6") == [
        "checkpoint-7: removed",
        "checkpoint-8: removed",
    ]
    assert [s for s, _ in complete_checkpoints(tmp_path)] == [2, 4, 6, 9]


def test_the_reference_is_recorded_by_the_sha256_of_its_weights_and_checked(tmp_path):
    ref = tmp_path / "ref"
    ref.mkdir()
    (ref / "model.safetensors").write_bytes(b"abc")
    (ref / "config.json").write_text("{}")  # not weights: not hashed
    # sha256("abc"), the FIPS 180-2 example
    abc = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    saved = ckpt.reference_record(ref)
    assert saved == {"path": str(ref.resolve()), "sha256": {"model.safetensors": abc}}
    ckpt.check_reference(saved, ckpt.reference_record(ref), "ckpt")  # unchanged: nothing to say
    moved = tmp_path / "moved"
    ref.rename(moved)
    ckpt.check_reference(saved, ckpt.reference_record(moved), "ckpt")  # another folder, the same weights: fine
    ckpt.check_reference(None, ckpt.reference_record(moved), "ckpt")  # nothing recorded (kl_coef 0 then)

    (moved / "model.safetensors").write_bytes(b"abcd")
    abcd = hashlib.sha256(b"abcd").hexdigest()
    assert ckpt.reference_record(moved)["sha256"] == {"model.safetensors": abcd}
    with pytest.raises(ckpt.CheckpointMismatch) as err:
        ckpt.check_reference(saved, ckpt.reference_record(moved), "run/checkpoint-4")
    text = str(err.value)
    assert text.startswith(f"run/checkpoint-4: was trained against the reference policy {ref.resolve()}")
    assert f"model.safetensors: {abc[:12]} -> {abcd[:12]}" in text and "new run_dir" in text


def _agree_on_rank(rank: int, port: int, results) -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", world_size=2, rank=rank)
    try:
        ckpt.agree(OSError(errno.ENOSPC, "No space left on device") if rank == 1 else None, "writing the state")
        results.put((rank, "no error"))
    except Exception as e:
        results.put((rank, f"{type(e).__name__}: {e}"))
    finally:
        dist.destroy_process_group()


def test_when_one_rank_fails_every_rank_raises():
    """Rank 1 alone hits a full disk: rank 0 must not go on to the next collective (it would wait there)."""
    import multiprocessing

    ctx = multiprocessing.get_context("spawn")
    results = ctx.Queue()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    procs = [ctx.Process(target=_agree_on_rank, args=(r, port, results)) for r in (0, 1)]
    for proc in procs:
        proc.start()
    got = dict(results.get(timeout=120) for _ in procs)
    for proc in procs:
        proc.join(timeout=60)
    assert got == {
        0: "OSError: writing the state failed on rank(s) [1] (their errors are in their logs)",
        1: "OSError: [Errno 28] No space left on device",
    }


# ---- a real trainer rank, in this process (one rank: a gloo group of its own) ------------------------------------


@pytest.fixture
def rank(tiny_model_dir):
    import torch

    from rl.config import TrainerConfig
    from rl.trainer import TrainerRank

    threads = torch.get_num_threads()
    r = TrainerRank(0, TrainerConfig(world_size=1, lr=1e-3, kl_coef=0.01), tiny_model_dir, 0, 1.0, 4)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    r.setup("127.0.0.1", port)
    yield r
    r.shutdown()
    torch.set_num_threads(threads)


def test_a_full_disk_inside_the_sharded_state_is_an_oserror_and_leaves_nothing(rank, tmp_path, monkeypatch):
    """torch.distributed.checkpoint wraps the ENOSPC of its writer in a CheckpointException (a BaseException): the
    save still fails with an OSError, which the GRPO loop skips (recipes/grpo.py `_save`), and leaves no folder."""
    import os

    from recipes.config import RunConfig
    from recipes.run import Sampler, save_checkpoint

    real_fsync = os.fsync

    def full_disk(fd):  # the DCP writer's fsync of its shard fails, as on a full disk with delayed allocation
        if "/dcp/" in os.readlink(f"/proc/self/fd/{fd}"):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_fsync(fd)

    monkeypatch.setattr(os, "fsync", full_disk)
    run_dir = tmp_path / "run"
    sampler = Sampler([{"id": str(i)} for i in range(5)], batch_size=2)
    with pytest.raises(OSError, match="No space left on device") as info:
        save_checkpoint(rank, run_dir, 1, sampler, RunConfig())
    assert info.value.errno == errno.ENOSPC
    assert not run_dir.exists() or sorted(p.name for p in run_dir.iterdir()) == []


def test_a_failed_save_leaves_no_checkpoint_and_resume_falls_back(rank, tiny_model_dir, tmp_path, monkeypatch, capsys):
    from recipes.config import RunConfig
    from recipes.run import Sampler, resume, save_checkpoint

    run_dir, run = tmp_path / "run", RunConfig(keep_last=3, resume=True)
    sampler = Sampler([{"id": str(i)} for i in range(5)], batch_size=2)
    sampler.next_batch()  # step 1 drew 2 records: the cursor is at epoch 0, index 2
    first = save_checkpoint(rank, run_dir, 1, sampler, run)
    assert first == run_dir / "checkpoint-1" and sorted(p.name for p in run_dir.iterdir()) == ["checkpoint-1"]
    marker = read_marker(first)
    assert marker["step"] == 1
    shard = "trainer_state/dcp/shard-00001-model-00001-of-00001.safetensors"  # rank 0's weights and optimizer
    for name in ("config.json", "model.safetensors", "tokenizer.json", shard):
        assert marker["files"][name] == (first / name).stat().st_size
    assert {n for n in marker["files"] if n.startswith("trainer_state/")} == {
        f"trainer_state/{n}"
        for n in ("extra_state.json", "trainer.json", "optimizer_values.json", shard.removeprefix("trainer_state/"))
        + ("rng_rank0.json", "rng_rank0.safetensors")
    }
    trainer_json = json.loads((first / "trainer_state" / "trainer.json").read_text())
    weights = Path(tiny_model_dir) / "model.safetensors"
    assert trainer_json["reference"] == {
        "path": str(Path(tiny_model_dir).resolve()),
        "sha256": {"model.safetensors": hashlib.sha256(weights.read_bytes()).hexdigest()},
    }
    assert rank.check_checkpoint(str(first)) is None

    # a full disk while the RNG states are written (after the weights and the optimizer): no checkpoint-2
    real_save = ckpt.save_flat_state

    def full_disk(flat, folder, name):
        if name.startswith("rng"):
            raise OSError(errno.ENOSPC, "No space left on device", str(folder / name))
        real_save(flat, folder, name)

    monkeypatch.setattr(ckpt, "save_flat_state", full_disk)
    sampler.next_batch()
    with pytest.raises(OSError, match="No space left on device"):
        save_checkpoint(rank, run_dir, 2, sampler, run)
    assert sorted(p.name for p in run_dir.iterdir()) == ["checkpoint-1"]  # not even the hidden folder
    assert ckpt.latest_checkpoint(run_dir) == first
    monkeypatch.setattr(ckpt, "save_flat_state", real_save)

    # checkpoint-2 is written, then its sharded state is overwritten with zeros (same size: the marker cannot
    # tell); a crashed save left .checkpoint-3.tmp. Resume removes the leftover, tries 2, falls back to 1.
    save_checkpoint(rank, run_dir, 2, sampler, run)
    optimizer = run_dir / "checkpoint-2" / shard
    optimizer.write_bytes(bytes(optimizer.stat().st_size))
    (run_dir / ".checkpoint-3.tmp" / "trainer_state").mkdir(parents=True)
    assert ckpt.latest_checkpoint(run_dir) == run_dir / "checkpoint-2"
    sampler.next_batch()
    assert resume(run, run_dir, rank, sampler) == 1
    assert sampler.state() == {"epoch": 0, "index": 2}
    out = capsys.readouterr()
    assert "[resume] removed .checkpoint-3.tmp" in out.out and "[resume] from " in out.out
    assert "checkpoint-2 does not load (" in out.err and "trying the checkpoint before it" in out.err
    assert not (run_dir / ".checkpoint-3.tmp").exists()

    # nothing that loads: an error, not a silent restart at step 0 over the run's checkpoints
    optimizer = run_dir / "checkpoint-1" / shard
    optimizer.write_bytes(bytes(optimizer.stat().st_size))
    with pytest.raises(RuntimeError, match="no checkpoint of .* loads"):
        resume(run, run_dir, rank, sampler)
