"""Reward plugins that hang, named by dotted path (`tests.rewards.sleepy_reward:...`): a judge stuck on a socket."""

import os
import time


def sleepy(traj, record):
    """Hangs on the sample "slow" (far past any test's timeout), takes S seconds on "pause-S", scores 1 elsewhere."""
    if traj.sample_id == "slow":
        time.sleep(600)
    if traj.sample_id.startswith("pause"):  # "pause-1.5": a slow judge
        time.sleep(float(traj.sample_id.split("-")[1]))
    return 1.0


class SlowToLoad:
    """A model-based reward whose load hangs for $SLEEPY_LOAD_S seconds (set in the workers only)."""

    def __init__(self):
        time.sleep(float(os.environ.get("SLEEPY_LOAD_S", "0")))

    def __call__(self, traj, record):
        return 1.0
