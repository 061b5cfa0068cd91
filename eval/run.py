"""Evaluate checkpoints on a benchmark with N parallel eval actors; or watch a training run and evaluate each new
checkpoint as it appears.

    python -m eval.run --checkpoint runs/videostar/checkpoint-4 --benchmark sample-ovar
    python -m eval.run --checkpoint A --checkpoint B --benchmark /data/hmdb51/test.jsonl --actors 4 --out evals/
    python -m eval.run --watch /shared/runs/videostar --benchmark /data/hmdb51 --watch-timeout 3600

Everything is checked before any actor starts: each checkpoint directory loads, the benchmark resolves and its
records follow the schema, the options fit the task. Writes to --out: results.jsonl (one line per sample and
checkpoint, tagged with its step), metrics.json, table.md and PNG plots. See docs/eval.md.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from common.offline import offline_env
from common.waits import DEFAULT_TIMEOUT_S, check_timeout
from eval import gps, report
from eval import metrics as M
from eval.benchmarks import Benchmark, BenchmarkError, load_benchmark
from eval.checkpoints import Checkpoint, CheckpointError, check_checkpoint, run_checkpoints, run_final_step
from eval.config import EvalConfig, run_rollout_config
from eval.fineagent import FineAgentError, check_fineagent, parse_variant
from eval.runner import EvalOptions, EvalResult, Evaluator
from rewards.helpers import TIOU_MODES
from rollout.config import RolloutConfig


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m eval.run", description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", action="append", default=[], help="a checkpoint directory (repeatable)")
    p.add_argument("--benchmark", required=True, help="a benchmark name, records .jsonl, or builder output folder")
    p.add_argument("--actors", type=int, default=1, help="eval actors splitting the benchmark")
    p.add_argument("--out", default="eval_out", help="output folder")
    p.add_argument("--skip-failed", action="store_true", help="leave samples whose video failed out of the metrics")
    p.add_argument("--watch", metavar="RUN_DIR", help="evaluate each new checkpoint of a training run directory")
    p.add_argument("--watch-timeout", type=float, default=3600.0, help="stop after this long without a checkpoint")
    p.add_argument("--poll", type=float, default=10.0, help="seconds between looks at the run directory")
    # How each record is rolled out. By default from the run's config.yaml (beside the checkpoint, or --watch's run
    # directory): the prompt, tools, frames and budgets the policy was trained with. A flag overrides its setting.
    p.add_argument("--engine", default=None, choices=["hf", "vllm"])
    p.add_argument("--engine-kwargs", default=None, help='JSON engine arguments, e.g. \'{"dtype": "bfloat16"}\'')
    p.add_argument("--num-cpus", type=float, default=1.0, help="CPUs per eval actor")
    p.add_argument("--num-gpus", type=float, default=0.0, help="GPUs per eval actor")
    p.add_argument("--tools", default=None, help="JSON tool configs, for tasks with tools")
    p.add_argument("--num-frames", type=int, default=None)
    p.add_argument("--max-side", type=int, default=None)
    p.add_argument("--max-new-tokens", type=int, default=None, help="tokens per assistant turn")
    p.add_argument("--max-response-tokens", type=int, default=None, help="tokens of the whole response")
    p.add_argument("--max-turns", type=int, default=None)
    p.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (the default)")
    p.add_argument("--system-prompt", default=None, help="system prompt text, or a .txt file")
    p.add_argument("--limit", type=int, default=None, help="evaluate the first N records only")
    p.add_argument(
        "--fineagent",
        action="append",
        default=[],
        help="mcq: a FineAgent variant, modules localizer:oracle (the annotated box), localizer:detector (the "
        "human_detection tool picks the described person) and descriptor, comma-separated, e.g. "
        "'localizer:detector,descriptor'; repeatable; each checkpoint is also evaluated without",
    )
    p.add_argument(
        "--gps-staged",
        action="store_true",
        help="describe: also evaluate with GPS's staged inference (extract gold points -> validate -> Socratic "
        "questions -> describe, each a prompt to the model; eval/gps.py)",
    )
    p.add_argument(
        "--gps-without",
        action="append",
        default=[],
        metavar="STAGES",
        help="describe: also evaluate GPS's staged inference without these stages (GPS Table III), comma-separated "
        "from gpe (gold points extraction), gpv (gold points validation), sqr (selective questioning refinement); "
        "repeatable, one variant each, named gps:staged-gpe, ...",
    )
    p.add_argument(
        "--fineagent-tools",
        default="",
        help='JSON options of FineAgent\'s tools, as rollout.tools, e.g. \'{"video_description": {"describer": '
        '{"kind": "endpoint", "base_url": URL, "model": NAME, "api_key_env": "VLM_KEY"}}}\'',
    )
    judge_help = 'JSON judge spec (needed for describe and --llm-judge), e.g. \'{"kind": "openai", "base_url": '
    judge_help += 'URL, "model": NAME, "api_key_env": "JUDGE_KEY"}\''
    p.add_argument("--judge", default="", help=judge_help)
    p.add_argument("--llm-judge", action="store_true", help="HieroAction's yes/no + 0-5 judge on every reply")
    p.add_argument(
        "--entailment-mode",
        default="all",
        choices=["all", "each"],
        help="describe: the judge labels all gold points of a description in one prompt (all, the paper's "
        "evaluator) or each point in its own prompt (each)",
    )
    p.add_argument(
        "--rl2-range",
        default="set",
        choices=M.RL2_RANGES,
        help="aqa: relative L2 divides by the evaluated set's true range (set, CoRe's code) or the action's (action)",
    )
    p.add_argument(
        "--tiou-mode",
        default="max",
        choices=TIOU_MODES,
        help="aqa: matched IoU sum / max(#pred, #true) (max), or / #matched pairs (paper, HieroAction's)",
    )
    p.add_argument("--ray-address", default="", help="a Ray cluster to join; empty starts a local one")
    p.add_argument("--ray-num-cpus", type=int, default=None, help="logical CPUs of a local Ray")
    p.add_argument(
        "--timeout-s", type=float, default=DEFAULT_TIMEOUT_S, help="an eval actor silent this long is replaced"
    )
    p.add_argument("--retries", type=int, default=2, help="times a chunk whose actor died or hung runs again")
    return p.parse_args(argv)


def _json_arg(text: str, name: str) -> dict:
    try:
        value = json.loads(text) if text else {}
    except ValueError as e:
        raise ValueError(f"{name}: not valid JSON ({e})") from None
    if not isinstance(value, dict):
        raise ValueError(f"{name}: expected a JSON object, got {text!r}")
    return value


def prepare(args: argparse.Namespace) -> tuple[Benchmark, list[Checkpoint], list[str], EvalOptions]:
    """Every check that can fail, before Ray or an actor starts."""
    benchmark = load_benchmark(args.benchmark, limit=args.limit)
    checkpoints = [check_checkpoint(c) for c in args.checkpoint]
    if args.watch and not Path(args.watch).is_dir():
        raise CheckpointError(f"--watch {args.watch}: not a directory (expected a training run directory)")
    if not checkpoints and not args.watch:
        raise CheckpointError("nothing to evaluate: give --checkpoint DIR (repeatable) or --watch RUN_DIR")
    if args.actors < 1:
        raise ValueError(f"--actors must be >= 1, got {args.actors}")
    variants = fineagent_variants(args, benchmark)
    judge = _json_arg(args.judge, "--judge") or None
    if (benchmark.task == "describe" or args.llm_judge) and judge is None:
        why = "--llm-judge" if args.llm_judge else f"the describe benchmark {benchmark.name} (semantic entailment)"
        raise ValueError(
            f'{why} needs --judge, e.g. \'{{"kind": "openai", "base_url": "http://host:8000/v1", '
            '"model": "NAME", "api_key_env": "JUDGE_KEY"}\''
        )
    rollout, sources = rollout_settings(args, [c.path.parent for c in checkpoints] or [Path(args.watch)])
    if not benchmark.spec.uses_tools:  # the eval actors get no tools for such a task: say so in the report
        rollout.tools, sources["tools"] = {}, f"not used by {benchmark.task}"
    if args.retries < 0:
        raise ValueError(f"--retries must be >= 0 (0: a dead or hung actor fails the evaluation), got {args.retries}")
    options = EvalOptions(
        rollout=EvalConfig(temperature=args.temperature).rollout_for_eval(rollout),
        actors=args.actors,
        num_cpus=args.num_cpus,
        num_gpus=args.num_gpus,
        skip_failed=args.skip_failed,
        judge=judge,
        entailment_mode=args.entailment_mode,
        llm_judge=args.llm_judge,
        sources=sources,
        metric_options={"rl2_range": args.rl2_range, "tiou_mode": args.tiou_mode},
        timeout_s=check_timeout(args.timeout_s),
        retries=args.retries,
        fineagent_tools=_json_arg(args.fineagent_tools, "--fineagent-tools"),
    )
    previous = Path(args.out).expanduser() / "metrics.json"
    if previous.is_file() and json.loads(previous.read_text()).get("records") != str(benchmark.path):
        raise ValueError(f"--out {args.out} holds the results of another benchmark ({previous}); choose another --out")
    return benchmark, checkpoints, variants, options


def fineagent_variants(args: argparse.Namespace, benchmark: Benchmark) -> list[str]:
    """The variants each checkpoint is evaluated in: "" (plain), then one per --fineagent ("localizer:oracle",
    "localizer:detector+descriptor", ...), each checked (tools registered, options valid, boxes for the oracle),
    then "gps:staged" with --gps-staged and one per --gps-without ("gps:staged-gpe", ...; describe benchmarks
    only)."""
    if args.fineagent_tools and not args.fineagent:
        raise FineAgentError("--fineagent-tools without --fineagent: name the FineAgent variant(s) to evaluate")
    if args.fineagent and benchmark.task != "mcq":
        raise FineAgentError(f"--fineagent applies to mcq benchmarks; {benchmark.name} is {benchmark.task}")
    tools = _json_arg(args.fineagent_tools, "--fineagent-tools")
    variants = [""]
    for value in args.fineagent:
        modules = parse_variant(value)
        check_fineagent(modules, benchmark.records, tools)
        variants.append("+".join(modules))
    return list(dict.fromkeys(variants + gps_variants(args, benchmark)))


def gps_variants(args: argparse.Namespace, benchmark: Benchmark) -> list[str]:
    """GPS's staged-inference variants: "gps:staged" with --gps-staged, then one per --gps-without, its stage names
    checked (describe benchmarks only)."""
    for flag, given in (("--gps-staged", args.gps_staged), ("--gps-without", args.gps_without)):
        if given and benchmark.task != "describe":
            raise ValueError(f"{flag} applies to describe benchmarks; {benchmark.name} is {benchmark.task}")
    variants = [gps.STAGED] if args.gps_staged else []
    return variants + [gps.variant_name(gps.parse_without(value)) for value in args.gps_without]


# Settings an evaluation takes from the run's config.yaml unless a flag gives them; without a run config (a bare
# model directory) the fallbacks below, which suit a real model.
FLAG_SETTINGS = (
    "engine",
    "engine_kwargs",
    "tools",
    "num_frames",
    "max_side",
    "max_new_tokens",
    "max_response_tokens",
    "max_turns",
    "system_prompt",
)  # each is rollout.<name> and --<name>
FALLBACKS = {"tools": {"pose_estimation": {}}, "max_new_tokens": 256, "max_side": 448}


def rollout_settings(args: argparse.Namespace, run_dirs: list[Path]) -> tuple[RolloutConfig, dict[str, str]]:
    """The rollout config to evaluate with, and where each setting came from ("run config", "flag", "default").
    Checkpoints of runs with different rollout configs cannot share one evaluation."""
    configs = {str(d): run_rollout_config(d) for d in dict.fromkeys(run_dirs)}
    found = {d: c for d, c in configs.items() if c is not None}
    distinct = {repr(c) for c in found.values()}
    if len(distinct) > 1:
        raise ValueError(
            f"the checkpoints come from runs with different rollout settings ({', '.join(found)}): "
            "evaluate each run on its own"
        )
    base = next(iter(found.values()), None)
    sources = dict.fromkeys(FLAG_SETTINGS, "run config" if base is not None else "default")
    if base is None:
        base = RolloutConfig(**FALLBACKS)
    for key in FLAG_SETTINGS:
        value = getattr(args, key)
        if value is None:
            continue
        if key in ("tools", "engine_kwargs"):
            value = _json_arg(value, "--" + key.replace("_", "-"))
        setattr(base, key, value)
        sources[key] = "flag"
    base.resolve_system_prompt()
    problems = base.validate(where="eval settings")
    if problems:
        raise ValueError("; ".join(problems))
    return base, sources


def describe_settings(rollout: RolloutConfig, sources: dict[str, str]) -> str:
    """One line per setting: its value (the prompt shortened) and where it came from."""
    lines = []
    for key, source in sources.items():
        value = getattr(rollout, key)
        shown = repr(value)
        shown = shown if len(shown) <= 80 else shown[:77] + "..."
        lines.append(f"  {key:<20} {shown:<84} ({source})")
    return "\n".join(lines)


class Session:
    """The outputs of one evaluation folder, rewritten after each checkpoint so a watcher's partial work is kept."""

    def __init__(self, out: Path, benchmark: Benchmark, evaluator: Evaluator):
        self.out, self.benchmark, self.evaluator = out, benchmark, evaluator
        out.mkdir(parents=True, exist_ok=True)
        self.entries = report.load_entries(out, benchmark)  # an earlier run on the same benchmark: kept
        self.results: list[EvalResult] = []

    def done(self, checkpoint: Checkpoint, variant: str) -> bool:
        return any(e["checkpoint"] == str(checkpoint.path) and e["variant"] == variant for e in self.entries)

    def run(self, checkpoint: Checkpoint, variant: str) -> EvalResult:
        result = self.evaluator.collect(self.evaluator.submit(checkpoint, variant))
        self.results.append(result)
        self.entries = [e for e in self.entries if (e["checkpoint"], e["variant"]) != (str(checkpoint.path), variant)]
        self.entries.append(report.entry(result))
        report.append_results(self.out, result)
        self.write()
        m = result.metrics
        print(
            f"[eval] {checkpoint.label} (step {checkpoint.step}){' +' + variant if variant else ''}: n={m['n']} "
            f"failed={m['failed']}",
            flush=True,
        )
        return result

    def write(self) -> None:
        report.write_metrics(self.out, self.benchmark, self.entries)
        (self.out / "table.md").write_text(report.table(self.benchmark, self.entries))
        report.plot_metrics(self.benchmark, self.entries, self.out)
        report.plot_aqa_scatter(self.results, self.benchmark, self.out)


def watch(run_dir: Path, session: Session, variants: list[str], poll_s: float, timeout_s: float) -> None:
    """Evaluate each complete checkpoint of `run_dir` not yet in the session, in step order. Stops when the run's
    last step (config.yaml run.steps) has been evaluated, or after `timeout_s` without a new checkpoint."""
    last_new, failed = time.monotonic(), set()
    print(f"[eval] watching {run_dir} (stops at the run's last step or after {timeout_s:.0f}s without a checkpoint)")
    while True:
        final = run_final_step(run_dir)
        todo = [
            (c, v)
            for c in run_checkpoints(run_dir)
            for v in variants
            if not session.done(c, v) and (str(c.path), v) not in failed
        ]
        for ckpt, variant in todo:
            try:
                check_checkpoint(ckpt.path)
            except CheckpointError as e:
                print(f"[eval] skipped: {e}", file=sys.stderr)
                continue
            try:
                session.run(ckpt, variant)
            except Exception as e:  # e.g. weights that do not load: report it, keep watching the others
                print(f"[eval] {ckpt.path} failed: {type(e).__name__}: {str(e)[:500]}", file=sys.stderr)
                failed.add((str(ckpt.path), variant))
            last_new = time.monotonic()
        steps = [e["step"] for e in session.entries if e["step"] is not None]
        if final is not None and steps and max(steps) >= final:
            print(f"[eval] the run's last step ({final}) is evaluated; done")
            return
        if time.monotonic() - last_new > timeout_s:
            print(f"[eval] no new checkpoint for {timeout_s:.0f}s; done")
            return
        time.sleep(poll_s)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    offline_env()  # evaluation never needs the network
    try:
        benchmark, checkpoints, variants, options = prepare(args)
    except (BenchmarkError, CheckpointError, FineAgentError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(2) from None
    import ray

    if not ray.is_initialized():
        if args.ray_address:
            ray.init(address=args.ray_address)
        else:
            ray.init(num_cpus=args.ray_num_cpus, include_dashboard=False)
    out = Path(args.out).expanduser().resolve()
    out.mkdir(parents=True, exist_ok=True)
    print("[eval] rollout settings:\n" + describe_settings(options.rollout, options.sources))
    settings = {k: {"value": getattr(options.rollout, k), "source": v} for k, v in options.sources.items()}
    settings |= {k: {"value": v, "source": "metric option"} for k, v in options.metric_options.items()}
    if args.fineagent:
        source = "flag" if args.fineagent_tools else "default"
        settings["fineagent"] = {
            "value": {"variants": variants[1:], "tools": options.fineagent_tools},
            "source": source,
        }
    if benchmark.task == "describe":
        settings["entailment_mode"] = {"value": options.entailment_mode, "source": "flag"}
        staged = {v: list(gps.staged_without(v)) for v in variants if gps.staged_without(v) is not None}
        if staged:  # each staged variant and the stages it drops
            settings["gps_staged"] = {"value": {"without": staged}, "source": "flag"}
    (out / "settings.json").write_text(json.dumps(settings, indent=1))
    if benchmark.spec.options:
        print("[eval] metric options: " + ", ".join(f"{k}={v}" for k, v in options.metric_options.items()))
    evaluator = Evaluator(benchmark, options)
    try:
        session = Session(out, benchmark, evaluator)
        for ckpt in checkpoints:
            for variant in variants:
                session.run(ckpt, variant)
        if args.watch:
            watch(Path(args.watch), session, variants, args.poll, args.watch_timeout)
    finally:
        evaluator.shutdown()
    print(report.table(benchmark, session.entries))
    print(f"[eval] outputs in {out}")
    return {"out": str(out), "entries": session.entries}


if __name__ == "__main__":
    main()
