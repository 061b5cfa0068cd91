"""Learning-rate schedules, as a pure function of the optimizer step (so a resumed run continues the curve)."""

from __future__ import annotations

import math

SCHEDULES = ("constant", "cosine")


def lr_at(
    step: int,
    base_lr: float,
    kind: str = "constant",
    warmup_steps: int = 0,
    total_steps: int = 0,
    min_lr_ratio: float = 0.0,
) -> float:
    """The learning rate of optimizer step `step` (0-based).

    Linear warm-up from base_lr / warmup_steps to base_lr over the first `warmup_steps` steps, then "constant"
    (base_lr) or "cosine" (half a cosine from base_lr down to base_lr * min_lr_ratio at `total_steps`, held there
    after). A cosine schedule needs total_steps > warmup_steps.

    >>> [round(lr_at(s, 1.0, "cosine", warmup_steps=2, total_steps=6), 6) for s in range(7)]
    [0.5, 1.0, 1.0, 0.75, 0.25, 0.0, 0.0]
    >>> round(lr_at(4, 1.0, "cosine", warmup_steps=2, total_steps=6, min_lr_ratio=0.1), 6)
    0.325
    >>> lr_at(0, 2.0, "constant", warmup_steps=4), lr_at(9, 2.0, "constant", warmup_steps=4)
    (0.5, 2.0)
    """
    if kind not in SCHEDULES:
        raise ValueError(f"unknown lr schedule {kind!r}; available: {', '.join(SCHEDULES)}")
    if step < warmup_steps:
        return base_lr * (step + 1) / warmup_steps
    if kind == "constant":
        return base_lr
    if total_steps <= warmup_steps:
        raise ValueError(f"cosine schedule needs total_steps ({total_steps}) > warmup_steps ({warmup_steps})")
    progress = min(1.0, (step - warmup_steps) / (total_steps - warmup_steps - 1 or 1))
    floor = base_lr * min_lr_ratio
    return floor + (base_lr - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))
