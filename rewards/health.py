"""Stop a run whose reward component is dead.

A plugin that raises scores 0 for that sample and the run goes on (rewards/combine.py): right for a bad sample,
wrong when the component fails everywhere (its judge endpoint is down, a model file is gone), because the run then
trains for hours on a reward that is silently missing. `RewardHealth` watches each step's `RewardOutput`: a
component that errors on more than `max_error_share` of the samples it was computed on, `patience` steps in a
row, raises `DeadRewardError` naming the component, its error share and its last error.

    health = RewardHealth(max_error_share=0.5, patience=3)
    health.check(scored)      # after each step's scoring; raises DeadRewardError
"""

from __future__ import annotations

from rewards.combine import RewardOutput


class DeadRewardError(RuntimeError):
    """A reward component failed on most of its samples for several steps in a row."""


class RewardHealth:
    def __init__(self, max_error_share: float = 0.5, patience: int = 3):
        """`patience` 0 turns the check off."""
        self.max_error_share, self.patience = max_error_share, patience
        self.streak: dict[str, int] = {}

    def check(self, output: RewardOutput) -> None:
        """Count this step; raise DeadRewardError for a component over the share `patience` steps in a row.

        >>> h = RewardHealth(max_error_share=0.5, patience=2)
        >>> out = RewardOutput([0.0] * 4, {"judge": [0.0] * 4}, {"judge": 3}, {"judge": 4}, {"judge": "OSError: down"})
        >>> h.check(out)
        >>> h.check(out)  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        rewards.health.DeadRewardError: reward 'judge' failed on 75% of its samples (3/4) for 2 steps in a row; ...
        """
        if self.patience <= 0:
            return
        for name, errors in output.errors.items():
            scored = output.scored.get(name, 0)
            failing = scored > 0 and errors / scored > self.max_error_share
            self.streak[name] = self.streak.get(name, 0) + 1 if failing else 0
            if self.streak[name] >= self.patience:
                last = output.last_error.get(name, "unknown")
                raise DeadRewardError(
                    f"reward {name!r} failed on {errors / scored:.0%} of its samples ({errors}/{scored}) for "
                    f"{self.streak[name]} steps in a row; last error: {last}. The run stops: fix the component, or "
                    "raise rewards.max_error_share / set rewards.dead_after_steps=0 to go on without it."
                )
