"""The chaos benchmark's cheaper cases, run as CI tests: the whole Video-STAR recipe (cold start, then GRPO) with a
trainer rank SIGKILLed mid-run, and with the driver's process group SIGKILLed then resumed. Both must finish every
step, log each step once, and reproduce the fault-free run's per-step metrics exactly (same seeds)."""

from __future__ import annotations

import argparse
import math

import pytest

from benchmarks import chaos

STEPS = 4


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    work = tmp_path_factory.mktemp("chaos")
    args = argparse.Namespace(steps=STEPS, batch_size=2, n=4, cold_start_steps=2, timeout_s=120.0)
    reference = chaos.run_case(chaos.Case("two-stage", "no fault"), work, args, init_from="")
    assert reference["code"] == 0, (work / "two-stage.log").read_text()[-3000:]
    cold = sorted((work / "two-stage" / "cold_start").glob("checkpoint-*"))
    return work, args, reference, str(cold[-1])


def _check(result, reference, args, work, name):
    log = (work / f"{name}.log").read_text()
    assert result["code"] == 0, log[-3000:]
    summary = chaos.summarise(result, reference, args)
    assert (summary["recovered"], summary["steps"], summary["lost"], summary["twice"]) == ("yes", STEPS, 0, 0)
    steps = [row["step"] for row in result["rows"]]
    assert steps == list(range(1, STEPS + 1))  # each step once, in order
    ref = {row["step"]: row for row in reference["rows"]}
    for row in result["rows"]:  # the same metrics as the undisturbed run, step by step
        for key in ("reward/total_mean", "train/loss", "train/grad_norm", "train/kl", "rollout/response_tokens_mean"):
            assert math.isclose(row[key], ref[row["step"]][key], rel_tol=0, abs_tol=1e-6), (row["step"], key)
    return summary


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_a_killed_trainer_rank_is_rebuilt_from_its_checkpoint(runs):
    work, args, reference, init_from = runs
    # after step 3: checkpoint-2 is complete, so the rebuilt trainer restores it and steps 3 and 4 run again
    case = chaos.Case("kill-trainer-rank", "SIGKILL a trainer rank", "ray::TrainerRank", after_step=3)
    result = chaos.run_case(case, work, args, init_from)
    assert result["injected"].startswith("SIGKILL pid "), result["injected"]
    summary = _check(result, reference, args, work, case.name)
    assert "trainer_restarts 1" in summary["recovery"]
    assert any(row["train/grad_norm"] > 0 for row in result["rows"])  # the updates compared are not all zero


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_a_crashed_driver_resumes_to_the_same_metrics_with_the_warm_up_on(runs):
    work, args, reference, _ = runs
    case = chaos.Case("driver-crash-resume", "driver crash", after_step=3, driver_crash=True)
    result = chaos.run_case(case, work, args, init_from="")
    assert result["injected"].startswith("SIGKILL process group"), result["injected"]
    _check(result, reference, args, work, case.name)
    assert "[videostar_cold_start] already done" in (work / f"{case.name}.log").read_text()
