"""The GRPO loop: rollout -> rewards -> advantages -> train -> sync -> log -> checkpoint/eval, once for every recipe.

Paper recipes are leaves (`recipes/videostar_grpo.py`, `recipes/hieroaction_grpo.py`): a docstring with launch
commands, a YAML under `recipes/configs/`, a system prompt under `recipes/prompts/`; they call `main` or `run`.
The config is `GrpoConfig` below, one documented section per component; `python recipes/<recipe>.py --help` prints
it whole. Everything that can be checked is checked before Ray starts.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import math
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from eval.config import EvalConfig
from recipes.config import (
    EMBEDDED,
    ConfigError,
    DataConfig,
    ModelConfig,
    RunConfig,
    load_recipe_config,
    raise_problems,
    validate_sections,
)
from recipes.resources import check_cluster
from recipes.run import (
    Quarantine,
    Sampler,
    init_ray,
    load_records,
    prepare_run_dir,
    resolve_init_from,
    resolve_model,
    resolve_records,
    resume,
    save_checkpoint,
)
from rewards.config import RewardsConfig
from rl.config import TrainerConfig
from rollout.config import RolloutConfig, engine_kwargs_problems


@dataclass
class ColdStartConfig:
    """A supervised stage before GRPO, for the embedded tiny model: recipes/sft.py on teacher chains of the training
    records that the recipe's builder writes (Video-STAR: the template teacher; HieroAction: brief SAR chains), run
    through the real tools, then GRPO from its last checkpoint (as init_from)."""

    steps: int = 0
    """SFT steps of the stage; 0 skips it. A real model starts from its own SFT run instead (init_from=...)."""
    lr: float = 5e-3
    """The stage's constant learning rate (tuned for the tiny random model)."""
    batch_size: int = 4
    """Chains per step (a multiple of trainer.world_size)."""


@dataclass
class GrpoConfig:
    """Group-relative policy optimisation of a video VLM, with tools and reward plugins."""

    model: ModelConfig = field(default_factory=ModelConfig)
    """The policy (and the reference, unless init_from names a checkpoint)."""
    data: DataConfig = field(default_factory=DataConfig)
    """Training records."""
    rollout: RolloutConfig = field(default_factory=RolloutConfig)
    """Episodes: engine, sampling, budgets, frames, system prompt, tools."""
    rewards: RewardsConfig = field(default_factory=RewardsConfig)
    """Reward components and their weights."""
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    """Trainer ranks: strategy, optimisation, the GRPO loss."""
    eval: EvalConfig = field(default_factory=EvalConfig)
    """Evaluation every K steps by eval actors beside training (docs/eval.md); off by default."""
    run: RunConfig = field(default_factory=lambda: RunConfig(run_dir="runs/grpo"))
    """Run directory, length, checkpoints, trackers, Ray."""
    init_from: str = ""
    """A checkpoint directory (e.g. an SFT run's): GRPO starts from it, policy and reference. Empty: model.path."""
    cold_start: ColdStartConfig = field(default_factory=ColdStartConfig)
    """A supervised stage first (embedded default only); recipes that use it run it before `run`."""
    best_of_g: bool = False
    """HieroAction's best-of-G: of each sample's rollout.n responses, train only on the highest-reward one (ties:
    the lowest group index), with its advantage normalised over the whole group; false: all of them (plain GRPO).
    "For each input, G = 8 responses are sampled, and the highest-reward response is used for training"
    (HieroAction, Implementation Details). The batch is then data.batch_size trajectories. docs/hieroaction_grpo.md."""

    def validate(self) -> list[str]:
        problems = validate_sections(self)
        problems += engine_kwargs_problems(self.rollout.engine, self.eval.engine_kwargs, "eval.engine_kwargs")
        group = self.data.batch_size * self.rollout.n
        if self.rollout.n < 2:
            problems.append(f"rollout.n: GRPO needs at least 2 rollouts per sample, got {self.rollout.n}")
        if self.best_of_g and self.data.batch_size % self.trainer.world_size:
            problems.append(
                f"data.batch_size = {self.data.batch_size} must be divisible by trainer.world_size with best_of_g "
                "(one trajectory per sample is trained)"
            )
        elif group % self.trainer.world_size:
            problems.append(f"data.batch_size * rollout.n = {group} must be divisible by trainer.world_size")
        if self.init_from and not (Path(self.init_from).expanduser() / "config.json").is_file():
            problems.append(f"init_from: no model directory (config.json) at {self.init_from}")
        cold = self.cold_start
        if cold.steps > 0 and not self.init_from:
            if self.model.path != EMBEDDED:
                problems.append(
                    "cold_start.steps: the cold start trains on template chains at a rate tuned for the "
                    "embedded tiny model; for a real model run an SFT recipe and pass init_from=..., "
                    "or set cold_start.steps=0"
                )
            if cold.batch_size % self.trainer.world_size:
                problems.append(f"cold_start.batch_size {cold.batch_size} must be a multiple of trainer.world_size")
        return problems


def load(argv: list[str], default_yaml: str | Path | None, title: str = "") -> GrpoConfig:
    """The config from defaults <- YAML <- `key=value`, checked (ConfigError); `--help` prints it and exits."""
    return load_recipe_config(GrpoConfig, argv, default_yaml, title)


def main(argv: list[str], default_yaml: str | Path | None, name: str = "grpo", title: str = "") -> dict[str, float]:
    """Load the config (`title` heads `--help`), then train."""
    return run(load(argv, default_yaml, title or __doc__), name)


def run(cfg: GrpoConfig, name: str = "grpo", workers: Any = None) -> dict[str, float]:
    """Train; returns the last step's metrics. The run directory gets config.yaml, metrics.jsonl, rewards.png,
    checkpoint-<step>/ and, with eval.every_k, eval/ and eval_metrics.jsonl. `workers`: a running RolloutGroup
    of the same rollout config to use (a previous stage's); they get the policy's weights before the first step.
    A dead trainer rank rebuilds the trainer from the last complete checkpoint, and the steps after it run again
    (run.actor_retries times in the run; docs/reliability.md)."""
    from recipes.tracking import GRPO_CONSOLE_KEYS, Tracker, plot_rewards
    from rewards.health import RewardHealth
    from rl.trainer import TrainerDiedError

    s = _start(cfg, name, workers)
    health = RewardHealth(cfg.rewards.max_error_share, cfg.rewards.dead_after_steps)
    tracker = Tracker(s.run_dir, cfg.run.trackers, dataclasses.asdict(cfg), name, GRPO_CONSOLE_KEYS, s.resumed_at)
    with contextlib.ExitStack() as cleanup:
        _shut_down_on_exit(cleanup, s, tracker)
        step = s.start_step + 1
        while step <= cfg.run.steps:
            try:
                metrics, scored = _train_step(cfg, s, name, step)
            except TrainerDiedError as error:
                step = _rebuild_trainer(cfg, s, name, error, tracker) + 1
                continue
            tracker.log(metrics)
            health.check(scored)  # a reward component that keeps failing ends the run, with its last error
            if step % cfg.run.save_every == 0 or step == cfg.run.steps or s.evals.due(step):
                try:
                    ckpt = _save(cfg, s, name, step)
                except TrainerDiedError as error:  # the step's metrics stand; the steps since the last save rerun
                    step = _rebuild_trainer(cfg, s, name, error, tracker) + 1
                    continue
                if ckpt is not None:
                    s.evals.launch(step, ckpt)  # eval actors on their own resources; training does not wait
            s.evals.poll()  # log the evaluations that have finished, tagged with their step
            step += 1

    plot_rewards(tracker.rows(), s.run_dir / "rewards.png")
    print(f"[{name}] done: {cfg.run.steps} steps; run dir: {s.run_dir}")
    return tracker.last


def _train_step(cfg: GrpoConfig, s: Any, name: str, step: int) -> tuple[dict[str, float], Any]:
    """One step: rollout -> rewards -> advantages -> train -> sync. Returns its metrics and the reward output."""
    from rl.grpo import compute_advantages

    t_step = time.perf_counter()

    # rollout: G episodes per sample, with tool calls; samples that could not be prepared are skipped. With
    # rollout.staleness=1 it was sampled during the previous step, and the next step's starts now.
    out, t_rollout, t_wait, stale = _rollout(cfg, s, step)
    trajs, dropped = fit_world_size(out.trajectories, cfg.trainer.world_size, per_group=cfg.best_of_g)
    s.empty_streak = _count_empty(name, step, trajs, out, dropped, s.empty_streak, cfg.run.max_empty_steps)

    # rewards: every component separately, then the weighted total
    t0 = time.perf_counter()
    scored = s.rewards.score(trajs)
    t_rewards = time.perf_counter() - t0

    # advantages: group-normalised GRPO (verl's core_algos)
    advantages = compute_advantages(scored.totals, [t.sample_id for t in trajs])
    # best_of_g: only the highest-reward trajectory of each group is trained, with that advantage
    trained, advantages, selection = select_trained(trajs, scored.totals, advantages, cfg.best_of_g)

    # train: clipped policy loss + KL to the reference, on the trainer ranks
    t0 = time.perf_counter()
    with s.trainer_lock:
        train_metrics = s.trainer.train_step(trained, advantages) if trajs else {}
    t_train = time.perf_counter() - t0

    # sync: the rollout engines get the new weights (a worker that died meanwhile is replaced), between rollouts
    t_sync = 0.0
    if trajs:
        t_wait += _await_prefetch(s)
        t_sync = s.workers.load_weights(s.trainer)

    times = {"rollout": t_rollout, "rewards": t_rewards, "train": t_train, "sync": t_sync, "rollout_wait": t_wait}
    times["step"] = time.perf_counter() - t_step
    metrics = step_metrics(step, trajs, out, dropped, scored, advantages, train_metrics, times)
    metrics["rollout/staleness"] = stale
    metrics["time/end"] = time.time()  # wall clock (unix seconds) at the step's end: lines steps up with traces
    metrics.update(selection)
    metrics.update(_recovery_metrics(s, out))
    return metrics, scored


@dataclass
class _Prefetch:
    """The next step's rollout, running in a background thread while this step trains (rollout.staleness=1)."""

    step: int
    future: concurrent.futures.Future  # of (RolloutOutput, seconds)
    sampler_state: dict  # the sampler's state before its batch was drawn: what a checkpoint of this step saves

    def state(self) -> dict:
        return self.sampler_state


def _timed_rollout(workers: Any, batch: list, seed: int) -> tuple[Any, float]:
    t0 = time.perf_counter()
    return workers.rollout(batch, seed=seed), time.perf_counter() - t0


def _rollout(cfg: GrpoConfig, s: Any, step: int) -> tuple[Any, float, float, int]:
    """This step's rollout, as (output, its seconds, seconds this step waited for it, staleness): the one started
    during the previous step when there is one (sampled with the weights before that step's update: staleness 1),
    else one run now. With rollout.staleness=1 the next step's rollout starts before returning, with the weights
    the engines hold now. Either way batch k is the sampler's k-th batch, sampled with seed `seed * 100003 + k`."""
    t0 = time.perf_counter()
    if s.prefetch is not None and s.prefetch.step == step:
        (out, seconds), stale = s.prefetch.future.result(), 1
        s.prefetch = None
    else:
        _drop_prefetch(s)
        (out, seconds), stale = _timed_rollout(s.workers, s.sampler.next_batch(), cfg.run.seed * 100003 + step), 0
    waited = time.perf_counter() - t0
    if cfg.rollout.staleness and step < cfg.run.steps:
        state = s.sampler.state()
        batch = s.sampler.next_batch()
        future = s.executor.submit(_timed_rollout, s.workers, batch, cfg.run.seed * 100003 + step + 1)
        s.prefetch = _Prefetch(step + 1, future, state)
    return out, seconds, waited, stale


def _await_prefetch(s: Any) -> float:
    """Wait for the background rollout to end (its engines take new weights only between rollouts); the seconds
    waited. Its errors are raised when its step takes it."""
    t0 = time.perf_counter()
    if s.prefetch is not None:
        concurrent.futures.wait([s.prefetch.future])
    return time.perf_counter() - t0


def _drop_prefetch(s: Any) -> None:
    """Let a background rollout end and forget it (the trainer is rebuilt, or the run ends): its batch is drawn
    again from the restored sampler, or never used."""
    if s.prefetch is not None:
        concurrent.futures.wait([s.prefetch.future])
        s.prefetch = None


def _recovery_metrics(s: Any, out: Any) -> dict[str, float]:
    """What recovery did this step: actors replaced and calls retried by kind, records quarantined, and the
    trainer rebuilds and failed checkpoint saves of the run so far."""
    rewards = s.rewards.take_counts()
    return {
        "recovery/rollout_restarts": out.recovery.get("restarts", 0),
        "recovery/rollout_retries": out.recovery.get("retries", 0),
        "recovery/quarantined": out.recovery.get("quarantined", 0),
        "recovery/reward_restarts": rewards["restarts"],
        "recovery/reward_retries": rewards["retries"],
        "recovery/trainer_restarts": s.trainer_restarts,
        "recovery/failed_saves": s.failed_saves,
    }


def _save(cfg: GrpoConfig, s: Any, name: str, step: int) -> Path | None:
    """The step's checkpoint, or None when the save failed with an OSError (a full disk): nothing half-written is
    left, training goes on and the next save tries again; the run's last save must succeed."""
    sampler = s.prefetch or s.sampler  # the next step's batch, drawn early by a prefetch, is not consumed yet
    try:
        with s.trainer_lock:
            return save_checkpoint(s.trainer, s.run_dir, step, sampler, cfg.run)
    except OSError as error:
        if step == cfg.run.steps:
            raise
        s.failed_saves += 1
        print(f"[{name}] step {step}: the checkpoint was not written ({error}); training goes on", flush=True)
        return None


def _rebuild_trainer(cfg: GrpoConfig, s: Any, name: str, error: Exception, tracker: Any) -> int:
    """A trainer rank died: tear the group down, start a new one, restore the last complete checkpoint (or the
    start), give the rollout workers its weights, and return the step to go on after. The steps after it run
    again with the same seeds; their rows leave metrics.jsonl. At most run.actor_retries times in a run."""
    s.trainer_restarts += 1
    if s.trainer_restarts > cfg.run.actor_retries:
        raise RuntimeError(
            f"{error}; the trainer was rebuilt {cfg.run.actor_retries} times already in this run "
            "(run.actor_retries): giving up"
        ) from error
    print(f"[{name}] {error}: rebuilding the trainer ({s.trainer_restarts}/{cfg.run.actor_retries})", flush=True)
    _drop_prefetch(s)  # the sampler goes back to the checkpoint; that batch is drawn again
    s.trainer.shutdown()
    s.trainer = _make_trainer(cfg, s.model_path)
    if cfg.rollout.placement == "colocated":  # the engines died with the ranks: new ones in the new ranks
        s.workers.rebind(s.trainer)
    step = resume(dataclasses.replace(cfg.run, resume=True), s.run_dir, s.trainer, s.sampler)
    if step == 0:
        s.sampler.load_state(s.initial_sampler)  # no checkpoint yet: from the start, with the initial weights
    s.workers.load_weights(s.trainer)
    s.empty_streak = 0
    tracker.rewind(step)
    print(f"[{name}] trainer rebuilt; going on after step {step}", flush=True)
    return step


def _shut_down_on_exit(cleanup: contextlib.ExitStack, s: Any, tracker: Any) -> None:
    """On an error too, the actors end (the trainer's placement group freed, so later jobs in this Ray session can
    schedule) and the metrics are flushed; in reverse order of registration, each even if another one fails."""
    cleanup.push(lambda error, *_: tracker.close(failed=error is not None))  # wandb marks a failed run
    cleanup.callback(s.workers.shutdown)
    cleanup.callback(s.rewards.shutdown)
    cleanup.callback(lambda: s.trainer.shutdown())  # the trainer of the moment (a rebuilt one replaces it)
    cleanup.callback(s.evals.close)  # waits for the evaluations still running, logs them, ends their actors
    if s.executor is not None:  # first: a background rollout ends before its workers do
        cleanup.callback(s.executor.shutdown)
        cleanup.callback(_drop_prefetch, s)


def _count_empty(name: str, step: int, trajs: list, out: Any, dropped: int, streak: int, limit: int) -> int:
    """The number of empty steps in a row after this one. An empty step is logged and trains and syncs nothing;
    `limit` in a row (run.max_empty_steps; 0: never) stop the run."""
    if trajs:
        return 0
    why = f"empty batch (skipped {out.skipped_by_kind}, {dropped} groups dropped)"
    print(f"[{name}] step {step}: {why}")
    if streak + 1 == limit:
        raise RuntimeError(
            f"{limit} steps in a row came back empty, the last with {why}: the data or the rollout "
            "workers are broken (see the warnings above)"
        )
    return streak + 1


@dataclass
class _Started:
    run_dir: Path
    workers: Any
    rewards: Any
    trainer: Any
    sampler: Any
    evals: Any
    start_step: int
    resumed_at: int | None
    model_path: str = ""
    initial_sampler: dict = field(default_factory=dict)  # the sampler's state at step 0
    empty_streak: int = 0  # steps in a row with nothing to train on
    trainer_restarts: int = 0
    failed_saves: int = 0
    executor: Any = None  # rollout.staleness=1: the thread that runs the next step's rollout
    prefetch: _Prefetch | None = None  # the next step's rollout, running
    trainer_lock: Any = field(default_factory=threading.RLock)  # a replaced worker's weight sync waits for training


def _make_trainer(cfg: GrpoConfig, model_path: str) -> Any:
    from rl.trainer import TrainerGroup

    return TrainerGroup(
        cfg.trainer,
        model_path,
        seed=cfg.run.seed,
        temperature=cfg.rollout.temperature,
        is_correction=cfg.rollout.is_correction,
        total_steps=cfg.run.steps * cfg.trainer.mini_batches,
        timeout_s=cfg.run.timeout_s,
    )


def _start(cfg: GrpoConfig, name: str, workers: Any = None) -> _Started:
    """Resolve the model and data, prepare the run directory, check the eval benchmark (all before Ray), then
    start the actors and resume."""
    from eval.during_training import TrainingEval
    from rewards.worker import RewardPool
    from rollout.group import RolloutGroup

    if cfg.cold_start.steps > 0 and not cfg.init_from:
        raise ConfigError(
            "cold_start.steps > 0: run the stage first (init_from=recipes.sft.cold_start(cfg), as "
            "recipes/videostar_grpo.py does) or set cold_start.steps=0"
        )
    model_path = resolve_init_from(cfg.init_from, cfg.rollout) if cfg.init_from else resolve_model(cfg.model.path)
    train_path = resolve_records(cfg.data.train)
    records = load_records(train_path)
    run_dir = prepare_run_dir(cfg)
    # the benchmark is checked now, before Ray starts
    evals = TrainingEval(cfg.eval, run_dir, cfg.rollout, cfg.run.timeout_s, cfg.run.actor_retries)
    print(f"[{name}] run dir: {run_dir}  model: {model_path}  train: {train_path} ({len(records)} records)")

    init_ray(cfg.run)
    raise_problems(check_cluster(cfg))  # the cluster Ray joined: before any actor starts
    synced = workers is None  # new workers load the policy themselves
    quarantine = Quarantine(run_dir)  # records that crashed or hung a rollout worker twice: never sampled again
    # every wait on these actors is bounded by run.timeout_s; a dead or hung actor is replaced (run.actor_retries)
    colocated = cfg.rollout.placement == "colocated"
    if colocated and workers is not None:  # a cold start's split workers: the engines move into the trainer ranks
        workers.shutdown()
        workers, synced = None, True
    with contextlib.ExitStack() as started:  # if a later part fails to start, the earlier ones are shut down
        if not colocated:
            workers = workers or RolloutGroup(
                cfg.rollout, model_path, seed=cfg.run.seed, timeout_s=cfg.run.timeout_s, retries=cfg.run.actor_retries
            )
            workers.on_quarantine = quarantine.add
            started.callback(workers.shutdown)
        rewards = RewardPool(
            cfg.rewards.components,
            num_workers=cfg.rewards.num_workers,
            actor_options={"num_cpus": cfg.rewards.num_cpus},
            timeout_s=cfg.run.timeout_s,
            retries=cfg.run.actor_retries,
        )
        started.callback(rewards.shutdown)
        trainer = _make_trainer(cfg, model_path)
        started.callback(trainer.shutdown)
        if colocated:  # one engine in each trainer rank, loaded from the same model
            from rollout.colocated import ColocatedRollout

            workers = ColocatedRollout(cfg.rollout, trainer, model_path, seed=cfg.run.seed)
        sampler = Sampler(records, cfg.data.batch_size, seed=cfg.data.seed, skip=quarantine.keys)
        initial = sampler.state()
        start_step = resume(cfg.run, run_dir, trainer, sampler)
        s = _Started(run_dir, workers, rewards, trainer, sampler, evals, start_step, None, model_path, initial)
        workers.on_replace = lambda worker: _sync_one(s, worker)  # the trainer of the moment
        if cfg.rollout.staleness:
            s.executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="rollout")
        if start_step > 0 or not synced:
            workers.load_weights(trainer)  # the rollout engines start from the resumed or given policy
        started.pop_all()  # all up: from here the loop's own cleanup owns them
    s.resumed_at = start_step if cfg.run.resume else None
    return s


def _sync_one(s: Any, worker: Any) -> None:
    """A new rollout worker gets the trainer's weights; a background rollout's replacement waits for training to
    end (the trainer ranks take one call at a time, in the same order), so it gets the newest weights."""
    with s.trainer_lock:
        s.trainer.sync_weights([worker])


def fit_world_size(trajs: list, world_size: int, per_group: bool = False) -> tuple[list, int]:
    """Drop whole trailing groups until the batch splits evenly across the trainer ranks (after skipped samples).
    `per_group`: the number of groups must split evenly (best-of-G trains one trajectory per group)."""
    dropped = 0
    while trajs and (len({t.sample_id for t in trajs}) if per_group else len(trajs)) % world_size:
        last = trajs[-1].sample_id
        n = sum(1 for t in trajs if t.sample_id == last)
        trajs, dropped = trajs[:-n], dropped + 1
    return trajs, dropped


def select_trained(trajs: list, totals: list[float], advantages: list[float], best_of_g: bool) -> tuple:
    """What the trainer gets: (trajectories, their advantages, metrics). Plain GRPO: all of them, no metrics.
    best_of_g: the highest-reward trajectory of each group (`rl.grpo.best_of_group`) with the advantage it has in
    its whole group, and grpo/best_of_g_kept (trajectories kept), grpo/best_of_g_reward_mean (their mean total
    reward) and grpo/best_of_g_flat_groups (groups whose rewards are all equal: their kept trajectory carries no
    reward signal, only the KL term acts on it)."""
    from rl.grpo import best_of_group

    if not best_of_g or not trajs:
        return trajs, advantages, {}
    groups = [t.sample_id for t in trajs]
    keep = best_of_group(totals, groups, [t.group_index for t in trajs])
    flat = [i for i in keep if all(totals[j] == totals[i] for j, g in enumerate(groups) if g == groups[i])]
    metrics = {
        "grpo/best_of_g_kept": len(keep),
        "grpo/best_of_g_reward_mean": sum(totals[i] for i in keep) / len(keep),
        "grpo/best_of_g_flat_groups": len(flat),
    }
    return [trajs[i] for i in keep], [advantages[i] for i in keep], metrics


def _stats(prefix: str, values: list[float]) -> dict[str, float]:
    if not values:
        return {}
    mean = sum(values) / len(values)
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / len(values))
    return {f"{prefix}_mean": mean, f"{prefix}_std": std, f"{prefix}_min": min(values), f"{prefix}_max": max(values)}


def step_metrics(step, trajs, out, dropped, scored, advs, train_metrics, times) -> dict[str, float]:
    """One flat dict per step: reward components, advantages, train stats, tool calls, tokens, time split."""
    from rewards.combine import summarize

    calls = [c for t in trajs for c in t.tool_calls]
    n = max(1, len(trajs))
    m: dict[str, float] = {"step": step, **summarize(scored), **_stats("adv", list(advs))}
    m.update({k: float(v) for k, v in train_metrics.items()})
    m.update(
        {
            "rollout/trajectories": len(trajs),
            "rollout/skipped_samples": out.skipped,  # they could not be prepared; by kind below
            **{f"rollout/skipped/{kind}": count for kind, count in out.skipped_by_kind.items()},
            "rollout/dropped_groups": dropped,  # left out so the batch splits evenly across trainer ranks
            "rollout/empty_batch": float(not trajs),  # nothing left to train on: no update this step
            "rollout/model_tokens_mean": sum(t.num_model_tokens for t in trajs) / n,
            "rollout/response_tokens_mean": sum(len(t.response_ids) for t in trajs) / n,
            "rollout/turns_mean": sum(len(t.turns) for t in trajs) / n,
            "tools/calls": len(calls),
            "tools/failed": sum(1 for c in calls if not c.ok),
            "tools/cached": sum(1 for c in calls if c.cached),
            "tools/dropped_images": sum(c.dropped_images for c in calls),  # past rollout.max_images
            "tools/call_rate": sum(1 for t in trajs if t.tool_calls) / n,
        }
    )
    for tool, stat in out.tool_stats.items():
        m.update({f"tools/{tool}/{key}": value for key, value in stat.items()})
    # Tool time is spent inside the rollout call; split the rollout wall time by the workers' own accounting.
    tool_s = sum(t.timings.get("tools", 0.0) for t in trajs)
    gen_s = sum(t.timings.get("generate", 0.0) for t in trajs)
    tools_share = tool_s / (tool_s + gen_s) if tool_s + gen_s > 0 else 0.0
    m["time/rollout"], m["time/tools"] = times["rollout"] * (1 - tools_share), times["rollout"] * tools_share
    m.update({f"time/{k}": times[k] for k in ("rewards", "train", "sync", "step") if k in times})
    if "rollout_wait" in times:  # the part of the rollout the step waited for (all of it at rollout.staleness=0)
        m["time/rollout_wait"] = times["rollout_wait"]
    return m
