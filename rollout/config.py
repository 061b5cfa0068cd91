"""The rollout's config: one dataclass, the `rollout:` section of every recipe, passed whole to `RolloutWorker` and
to the eval actors, so a checkpoint is evaluated with exactly the prompt, tools and frames it was trained with.

    worker = RolloutWorker(RolloutConfig(num_frames=8, tools={"pose_estimation": {}}), model_path)

`system_prompt` is text, or the name of a file (`*.txt`: a path, or a file under `recipes/prompts/`);
`resolve_system_prompt()` reads the file, so a run's saved config.yaml holds the very text the policy saw.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

ENGINES = ("hf", "vllm")
PLACEMENTS = ("split", "colocated")
LOOPS = ("async", "barrier")
PROMPTS_DIR = Path(__file__).resolve().parents[1] / "recipes" / "prompts"
DEFAULT_SYSTEM_PROMPT = (
    "You are a helpful assistant that understands human actions in videos. Think step by step; call tools when "
    "they help; put the final answer in <answer></answer>."
)


@dataclass
class ToolPoolConfig:
    """How the tool actors run (the tools themselves are `rollout.tools`)."""

    actors_per_tool: int = 1
    """Ray actors per tool; calls are spread over them."""
    timeout_s: float = 60.0
    """A call that takes longer gets an error reply; the episode goes on."""
    cache_size: int = 512
    """Results cached by (video, frames, tool, arguments): a group of G rollouts pays once."""
    num_cpus: float = 0.25
    """CPUs reserved for each tool actor."""
    num_gpus: float = 0.0
    """GPUs for each tool actor (e.g. 0.1 to run YOLO on a shared GPU)."""
    share_process: bool = False
    """Run all the tools in the same actors: `actors_per_tool` processes in all, each holding every tool (and one
    copy of each YOLO file the tools load), instead of one process per tool. Cheaper to start and to hold (one torch
    import, one model where the pose, detection and description tools would each load it), but the tools' calls
    take turns in a process and a restart restarts them all. Measured on the embedded default with its four tools:
    1.1 GB of tool-actor memory instead of 2.5 GB, the same time to the first step (docs/performance.md)."""


@dataclass
class RolloutConfig:
    """How episodes are generated: engine, sampling, budgets, frames, the system prompt and the tools."""

    engine: str = "hf"
    """"hf" (transformers generate, CPU or GPU) or "vllm" (GPU, the `gpu` extra)."""
    engine_kwargs: dict[str, Any] = field(default_factory=dict)
    """Extra engine arguments, e.g. {dtype: bfloat16} for hf, {gpu_memory_utilization: 0.5} for vllm."""
    placement: str = "split"
    """Where the engines run. "split": rollout workers are actors of their own (`num_workers`, `num_cpus`,
    `num_gpus`), weights streamed to them in buckets after each step. "colocated": each trainer rank hosts one
    engine in its own process (no rollout GPUs; `num_workers` / `num_cpus` / `num_gpus` unused), weights loaded
    in process tensor by tensor, the engine asleep during training where it can sleep (vLLM on GPU). GRPO only;
    an SFT cold start replays with split workers. See docs/scale.md."""
    num_workers: int = 1
    """RolloutWorker actors (split placement); a batch is balanced across them (`chunks_per_worker`)."""
    chunks_per_worker: int = 2
    """With several workers (split placement), a batch is cut into about this many contiguous chunks per worker
    (at most one per record; a record's G rollouts always in one chunk) and a worker that is free takes the next
    chunk, so a slow conversation holds up only its own worker. More chunks balance better; fewer give each engine
    call a larger batch. Each chunk samples with its own seed (the rollout seed and the chunk's number), so the
    trajectories do not depend on which worker ran which chunk. One worker: always one chunk. See docs/scale.md."""
    n: int = 4
    """Group size G: rollouts per sample."""
    temperature: float = 0.7
    """Sampling temperature. The engines report the log-probs of the tempered distribution they sampled from and the
    trainer scores tokens at the same temperature; greedy decoding (0) is scored at temperature 1."""
    top_p: float = 1.0
    """Nucleus sampling threshold (1: off)."""
    top_k: int = 0
    """Sample among the k most likely tokens (0: the whole vocabulary). Log-probs stay those of the full
    distribution, as the engines report them."""
    is_correction: float = 0.0
    """Truncated importance sampling (TIS) of the engine-trainer mismatch, the cap C of verl's token-level TIS
    (formerly `tis_imp_ratio_cap`): the policy loss of each model token is multiplied by min(exp(trainer's old
    log-prob - engine's log-prob), C), a constant (no gradient). 0: off. Worth turning on when the engine's numerics
    differ from the trainer's (vLLM in bf16 vs the FSDP trainer); 2.0 is verl's default cap. See docs/scale.md."""
    staleness: int = 0
    """How many updates old the policy that sampled a trained batch may be. 0: the synchronous loop (rollout, then
    train, then sync). 1: one-step off-policy: the rollout of step k+1 runs while step k trains, with the weights
    of step k-1, so the rollout and the trainer work at the same time; the engines take the new weights between
    rollouts. Split placement only (colocated engines share the trainer's devices). The trainer's old log-probs
    are those of its current policy; `is_correction` weights each token by min(exp(old - sampling log-prob), C),
    which then corrects the one-step lag as well as the engine mismatch. Metrics: rollout/staleness,
    train/rollout_logprob_diff, train/is_weight_mean, train/is_clipped_share. See docs/performance.md."""
    max_new_tokens: int = 96
    """Tokens per assistant turn."""
    max_response_tokens: int = 1024
    """Tokens of the whole response: all turns and tool replies (a pose reply is ~200 tokens per person-frame)."""
    max_turns: int = 3
    """Assistant turns per episode (a turn that calls tools is followed by another)."""
    loop: str = "async"
    """How a worker's conversations advance (rollout/tool_loop.py). "async": each on its own; its tool calls run in
    the background and its next turn is generated as soon as its replies are in, batched with whatever else is
    ready, so a slow tool call holds up only its own conversation. "barrier": turn by turn, one generate over all
    running conversations, then all of the turn's tool calls, everyone waiting for the slowest. Given the same
    completions both give the same trajectories. What differs: the batches the engine sees, and so the sampled
    tokens. A generate call's seed is the rollout seed plus the call's number; in "barrier" the call number is the
    turn, the same in every run, while in "async" which conversations share a call depends on when tools answer,
    so sampled tokens are reproducible run to run only in "barrier" (and in "async" with a tool client that has
    no `submit_many`: its calls come back together, one batch per generate call, as in "barrier")."""
    num_frames: int = 8
    """Frames sampled uniformly from each clip; the model and the tools see the same frames."""
    max_side: int = 448
    """Frames are resized so that their longest side is at most this many pixels; so are images from tool replies
    (only shrunk, keeping the aspect ratio; the built-in tools' images are drawn on the frames, so already fit)."""
    max_images: int = 8
    """Images per conversation, tool images included: a tool reply that would bring more has the images past the
    limit dropped, with a note in its text (docs/tools.md). The vllm engine's limit_mm_per_prompt image limit is set
    to this."""
    system_prompt: str = DEFAULT_SYSTEM_PROMPT
    """The system prompt: the text itself, or a `.txt` file (a path, or a name under recipes/prompts/). The
    enabled tools' schemas are appended by the chat template."""
    tools: dict[str, Optional[dict[str, Any]]] = field(default_factory=dict)  # noqa: UP045 (OmegaConf)
    """Tools by name, each with its config (e.g. pose_estimation: {weights: /w/yolo11x-pose.pt, device: cuda}),
    see docs/tools.md. A tool set to null is disabled (rollout.tools.video_description=null)."""
    tool_pool: ToolPoolConfig = field(default_factory=ToolPoolConfig)
    """How the tool actors run."""
    num_cpus: float = 0.5
    """CPUs reserved for each rollout worker."""
    cpu_threads: int = 1
    """torch intra-op threads of each rollout engine on CPU (also in a colocated trainer rank); a GPU worker
    leaves torch's default. As trainer.cpu_threads: more pays where generation does not overlap other work."""
    num_gpus: float = 0.0
    """GPUs for each rollout worker (1 with vllm)."""

    def enabled_tools(self) -> dict[str, dict[str, Any]]:
        """Tool name -> config of the enabled tools (a tool whose config is null is disabled)."""
        return {name: dict(conf) for name, conf in self.tools.items() if conf is not None}

    def resolve_system_prompt(self) -> None:
        """Replace a prompt file name by the file's text (a no-op on text)."""
        text = self.system_prompt.strip()
        if not text.endswith(".txt") or "\n" in text:
            return
        for path in (Path(text).expanduser(), PROMPTS_DIR / text):
            if path.is_file():
                self.system_prompt = path.read_text().strip()
                return

    def validate(self, where: str = "rollout") -> list[str]:
        """Problems, each naming the field, its value and what is allowed (empty when the config is usable)."""
        from envs.base import config_problems

        problems = []
        if self.placement not in PLACEMENTS:
            problems.append(f"{where}.placement: {self.placement!r} is not one of {', '.join(map(repr, PLACEMENTS))}")
        if self.engine not in ENGINES:
            problems.append(f"{where}.engine: {self.engine!r} is not one of {', '.join(map(repr, ENGINES))}")
        if self.loop not in LOOPS:
            problems.append(f"{where}.loop: {self.loop!r} is not one of {', '.join(map(repr, LOOPS))}")
        text = self.system_prompt.strip()
        if text.endswith(".txt") and "\n" not in text:
            problems.append(f"{where}.system_prompt: prompt file {text!r} not found (a path, or under {PROMPTS_DIR})")
        for name in (
            "num_workers",
            "chunks_per_worker",
            "n",
            "max_new_tokens",
            "max_response_tokens",
            "max_turns",
            "num_frames",
            "cpu_threads",
        ):
            if getattr(self, name) < 1:
                problems.append(f"{where}.{name}: must be >= 1, got {getattr(self, name)}")
        if self.max_side < 28:
            problems.append(f"{where}.max_side: at least 28 pixels (one vision patch pair), got {self.max_side}")
        if self.max_images < 0:
            problems.append(f"{where}.max_images: must be >= 0 (0: no images), got {self.max_images}")
        if self.staleness not in (0, 1):
            problems.append(f"{where}.staleness: 0 (synchronous) or 1 (one-step off-policy), got {self.staleness}")
        elif self.staleness and self.placement == "colocated":
            problems.append(
                f"{where}.staleness: 1 overlaps the rollout with training, which needs engines of their own "
                f"(placement=split); colocated engines share the trainer ranks' devices (got placement=colocated)"
            )
        if self.temperature < 0:
            problems.append(f"{where}.temperature: must be >= 0, got {self.temperature}")
        if not self.is_correction >= 0:  # NaN too
            problems.append(f"{where}.is_correction: the TIS cap, >= 0 (0: off), got {self.is_correction}")
        if not 0.0 < self.top_p <= 1.0:
            problems.append(f"{where}.top_p: in (0, 1], got {self.top_p}")
        if self.top_k < 0:
            problems.append(f"{where}.top_k: 0 (off) or a positive count, got {self.top_k}")
        for name, conf in self.tools.items():
            problems += config_problems(name, None if conf is None else dict(conf), where=f"{where}.tools")
        problems += engine_kwargs_problems(self.engine, self.engine_kwargs, f"{where}.engine_kwargs")
        if "max_images" in self.engine_kwargs:
            problems.append(
                f"{where}.engine_kwargs.max_images: set {where}.max_images instead (the tool loop and the engine "
                "share that limit)"
            )
        if self.is_correction > 0 and (self.top_k > 0 or self.top_p < 1.0):
            problems.append(
                f"{where}.is_correction: the engines report log-probs of the top-k / top-p truncated distribution, "
                "the trainer those of the whole policy: importance weights between them would be biased; turn "
                f"top_k / top_p off (got top_k={self.top_k}, top_p={self.top_p}) or is_correction=0"
            )
        problems += tool_device_problems(self, where)
        pool = self.tool_pool
        if pool.actors_per_tool < 1 or pool.timeout_s <= 0 or pool.cache_size < 0:
            problems.append(f"{where}.tool_pool: actors_per_tool >= 1, timeout_s > 0, cache_size >= 0; got {pool}")
        return problems


def tool_device_problems(cfg: RolloutConfig, where: str = "rollout") -> list[str]:
    """An enabled tool set to run on a GPU (a `device` option at any depth of its config: "cuda", "cuda:1", "0")
    while the tool actors get no GPU (`tool_pool.num_gpus` 0): Ray hides the GPUs from an actor that asks for none,
    so the tool would fail at its first call.

    >>> cfg = RolloutConfig(tools={"pose_estimation": {"device": "cuda"}, "human_detection": {"device": "cpu"}})
    >>> print(*tool_device_problems(cfg))  # doctest: +ELLIPSIS
    rollout.tools.pose_estimation.device: 'cuda' (a GPU) but rollout.tool_pool.num_gpus is 0: ...
    >>> cfg.tool_pool.num_gpus = 0.05
    >>> tool_device_problems(cfg)
    []
    """
    if cfg.tool_pool.num_gpus > 0:
        return []
    return [
        f"{where}.tools.{key}: {value!r} (a GPU) but {where}.tool_pool.num_gpus is 0: the tool actors would see no "
        f"GPU; give them a share ({where}.tool_pool.num_gpus=0.05: each tool actor of every rollout worker takes "
        "that much) or run the tool on the CPU (device=cpu)"
        for name, conf in cfg.enabled_tools().items()
        for key, value in _device_options(conf, name)
        if _is_gpu(value)
    ]


def _device_options(conf: Any, prefix: str) -> list[tuple[str, Any]]:
    """("pose_estimation.device", value) for each `device` key in a tool's (nested) config."""
    if not isinstance(conf, dict):
        return []
    found = [(f"{prefix}.device", conf["device"])] if "device" in conf else []
    for key, value in conf.items():
        found += _device_options(value, f"{prefix}.{key}")
    return found


def _is_gpu(device: Any) -> bool:
    import re

    text = str(device).strip().lower()
    return text.startswith("cuda") or re.fullmatch(r"\d+(,\d+)*", text) is not None


def engine_kwargs_problems(engine: str, kwargs: dict[str, Any], where: str) -> list[str]:
    """Keys of `kwargs` the engine does not take, each with the closest valid one: the engine class's keyword
    parameters, and for vllm (which passes the rest on to vLLM) vLLM's EngineArgs fields where vLLM is installed;
    without vLLM there is nothing to check the rest against."""
    import dataclasses
    import importlib
    import importlib.util
    import inspect

    from common.hints import did_you_mean
    from rollout.engine import ENGINES as TARGETS

    if engine not in TARGETS or not kwargs:
        return []
    module, _, name = TARGETS[engine].partition(":")
    params = inspect.signature(getattr(importlib.import_module(module), name).__init__).parameters.values()
    named = (inspect.Parameter.KEYWORD_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    valid = [p.name for p in params if p.kind in named and p.name not in ("self", "model_path", "seed")]
    if any(p.kind == p.VAR_KEYWORD for p in params):
        if engine != "vllm" or importlib.util.find_spec("vllm") is None:
            return []
        from vllm import EngineArgs

        valid += [f.name for f in dataclasses.fields(EngineArgs)]
    return [
        f"{where}.{key}: unknown key{did_you_mean(key, valid)} (valid: {', '.join(valid)})"
        for key in kwargs
        if key not in valid
    ]
