"""What benchmarks/trainer_scale.py measures with, beside the trainer: the bytes of live tensors on CPU (where torch
has no `max_memory_allocated`), the process's peak RSS, and a torch transcription of the GRPO loss for a machine
without verl (a GPU box with only torch and transformers)."""

from __future__ import annotations

import contextlib
import weakref
from pathlib import Path


class LiveBytes:
    """Bytes of live tensor storages, counted op by op (a torch dispatch mode) and at their release (a finalizer
    on each storage), with the peak: the CPU's stand-in for `torch.cuda.max_memory_allocated`. `add` registers
    tensors made before counting began (weights, optimizer state). FSDP2 frees and regrows its gathered weights
    with `UntypedStorage.resize_`, which is followed too."""

    def __init__(self):
        self.sizes: dict[int, int] = {}
        self.now = self.peak = 0
        self._mode = None

    def add(self, tensor) -> None:
        import torch

        tensor = getattr(tensor, "_local_tensor", tensor)  # a DTensor's shard
        if not isinstance(tensor, torch.Tensor) or tensor.device.type == "meta":
            return
        storage = tensor.untyped_storage()
        key = id(storage)
        if key not in self.sizes:
            self.sizes[key] = 0
            weakref.finalize(storage, self._resize, key, None)
            self._resize(key, storage.nbytes())

    def _resize(self, key: int, size: int | None) -> None:
        old = self.sizes.pop(key, 0) if size is None else self.sizes.get(key, 0)
        if size is not None and key in self.sizes:
            self.sizes[key] = size
        self.now += (size or 0) - old
        self.peak = max(self.peak, self.now)

    @contextlib.contextmanager
    def counting(self):
        """Count the tensors every op makes while inside."""
        import torch
        from torch.utils._python_dispatch import TorchDispatchMode
        from torch.utils._pytree import tree_leaves

        tracker = self

        class Mode(TorchDispatchMode):
            def __torch_dispatch__(self, func, types, args=(), kwargs=None):
                out = func(*args, **(kwargs or {}))
                for leaf in tree_leaves(out):
                    tracker.add(leaf)
                return out

        original = torch.UntypedStorage.resize_

        def resize_(storage, size):
            result = original(storage, size)
            if id(storage) in tracker.sizes:
                tracker._resize(id(storage), storage.nbytes())
            return result

        torch.UntypedStorage.resize_ = resize_
        try:
            with Mode():
                yield self
        finally:
            torch.UntypedStorage.resize_ = original


def proc_status(field: str) -> int:
    """A /proc/self/status memory field in bytes (0 where there is none)."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    return 0


def reset_peak_rss() -> bool:
    """Reset the kernel's peak RSS (VmHWM) of this process; False where that is not possible."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def plain_grpo_loss(
    log_prob,
    old_log_prob,
    ref_log_prob,
    advantages,
    response_mask,
    clip_ratio=0.2,
    kl_coef=0.01,
    kl_type="low_var_kl",
    loss_agg_mode="token-mean",
    batch_num_tokens=None,
    global_batch_size=None,
    dp_size=1,
):
    """`rl.grpo.grpo_loss` for a machine without verl (a GPU box with only torch and transformers): verl's vanilla
    PPO-clip loss (dual clip at 3) and low_var_kl, token-mean over the global token count, written out in torch.
    The smoke test checks it against `rl.grpo.grpo_loss`; only the defaults (token-mean, low_var_kl) are written."""
    import torch

    if loss_agg_mode != "token-mean" or kl_type != "low_var_kl":
        raise ValueError("without verl the benchmark only has token-mean and low_var_kl (the trainer's defaults)")
    mask = response_mask.to(log_prob.dtype)
    tokens = float(batch_num_tokens) if batch_num_tokens is not None else mask.sum()
    adv = advantages.unsqueeze(-1).expand_as(log_prob) if advantages.dim() == 1 else advantages
    log_ratio = torch.clamp(log_prob - old_log_prob, -20.0, 20.0)
    ratio = torch.exp(log_ratio)
    loss1, loss2 = -adv * ratio, -adv * torch.clamp(ratio, 1 - clip_ratio, 1 + clip_ratio)
    clipped = torch.maximum(loss1, loss2)
    dual = torch.minimum(-adv * 3.0, clipped)
    pg = torch.where(adv < 0, dual, clipped)
    pg_loss = (pg * mask).sum() / tokens * dp_size
    loss, kl_value = pg_loss, 0.0
    if kl_coef != 0.0:
        diff = torch.clamp(ref_log_prob - log_prob, -20.0, 20.0)
        kld = torch.clamp(torch.exp(diff) - diff - 1, -10.0, 10.0)
        kl_loss = (kld * mask).sum() / tokens * dp_size
        loss, kl_value = pg_loss + kl_coef * kl_loss, float(kl_loss.detach())
    n = mask.sum().clamp(min=1)
    log_ratio, loss1, loss2, clipped, adv = (t.detach() for t in (log_ratio, loss1, loss2, clipped, adv))
    metrics = {
        "pg_loss": float(pg_loss.detach()),
        "kl": kl_value,
        "clipfrac": float(((loss2 > loss1).float() * mask).sum() / n),
        "clipfrac_lower": float(((clipped > -adv * 3.0).float() * (adv < 0).float() * mask).sum() / n),
        "ppo_kl": float((-log_ratio * mask).sum() / n),
    }
    return loss, metrics
