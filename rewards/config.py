"""The rewards' config: one dataclass, the `rewards:` section of every recipe.

    rewards:
      components:
        - {name: accuracy, weight: 1.0}
        - {name: tool_usage, weight: 1.0, when: accuracy}
        - {name: my_pkg.my_mod:my_reward, weight: 0.5, args: {scale: 2}}

Each component is a `rewards.combine.RewardSpec` (name, weight, args, when); `validate()` resolves every name,
checks the gates and that each plugin takes the `args` given (naming the closest parameter on a typo).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from rewards.combine import RewardSpec


@dataclass
class RewardsConfig:
    """Reward components, combined into one weighted total per trajectory, and the workers that score them."""

    components: list[RewardSpec] = field(default_factory=list)
    """Reward components: {name (registered, or pkg.module:function), weight, args, when (a gate)}; see
    docs/rewards.md."""
    num_workers: int = 1
    """RewardWorker actors; a batch is split across them."""
    num_cpus: float = 0.25
    """CPUs reserved for each reward worker."""
    max_error_share: float = 0.5
    """A component is failing in a step when it errors on more than this share of the samples it scores."""
    dead_after_steps: int = 3
    """A component failing this many steps in a row stops the run with its last error (a judge endpoint that is
    down should not silently score 0 for hours); 0 turns the check off."""

    def validate(self, where: str = "rewards", required: bool = True) -> list[str]:
        """Problems (empty when usable). `required`: at least one component (GRPO needs a reward)."""
        from rewards.combine import parse_specs

        problems = []
        if required and not self.components:
            problems.append(f"{where}.components: at least one reward is needed")
        try:
            parse_specs(self.components)
        except (KeyError, ValueError, ImportError) as e:
            problems.append(f"{where}.components: {e}")
        if self.num_workers < 1:
            problems.append(f"{where}.num_workers: must be >= 1, got {self.num_workers}")
        if not 0.0 <= self.max_error_share < 1.0:
            problems.append(f"{where}.max_error_share: in [0, 1), got {self.max_error_share}")
        if self.dead_after_steps < 0:
            problems.append(f"{where}.dead_after_steps: 0 (off) or a number of steps, got {self.dead_after_steps}")
        return problems
