"""RolloutWorker: records in, trajectories out. A plain class, made a Ray actor where it is used:

    worker = ray.remote(num_cpus=1)(RolloutWorker).remote(cfg.rollout, model_path, seed=0)
    trajectories = ray.get(worker.rollout.remote(records, n=4, sampling=SamplingParams(max_new_tokens=128)))
    ray.get(worker.update_weights.remote(state_dict_ref))

For each record it decodes the video once, builds the prompt with the processor's chat template (system prompt
and tool schemas), runs G=n multi-turn episodes, and returns the trajectories in record order then group order,
each with its `record` and the processed `mm_inputs` the trainer needs.

A record that cannot be prepared yields n placeholder trajectories instead, and the other records of the batch go
on: finish_reason "video_error" when its video does not decode, "sample_error" for anything else (a missing or bad
field, building the prompt, the processor failing on its frames). They have empty token ids and no mm_inputs, so the
group structure stays intact, and their `record` is a copy of the record with the error text under
`"rollout_error"` ("KeyError: ..."). The driver drops them before rewards (RolloutGroup counts them by kind);
`stats()` counts them too ("video_errors", "sample_errors").
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from rollout.config import DEFAULT_SYSTEM_PROMPT, RolloutConfig  # noqa: F401 (re-exported)
from rollout.engine import SamplingParams, make_engine
from rollout.multimodal import process_video, seconds_per_frame
from rollout.tool_loop import run_episodes
from rollout.trajectory import Episode, Trajectory

log = logging.getLogger(__name__)

# The finish_reasons of the placeholders of a record that could not be prepared, one per kind of failure.
SAMPLE_ERRORS = ("video_error", "sample_error")


class _NoTools:
    """The tool client of a worker without tools: every call is answered with an error the model can read."""

    def schemas(self) -> list[dict]:
        return []

    def call_many(self, calls: list) -> list:
        from envs.base import ToolResult

        return [
            ToolResult(text=f"Error: no tool named {name!r} is available", ok=False, error="unknown_tool")
            for name, *_ in calls
        ]


class RolloutWorker:
    def __init__(
        self,
        cfg: RolloutConfig,
        model_path: str,
        *,
        seed: int = 0,
        engine: Any = None,
        tools: Any = None,
        video_reader: Callable[..., Any] | None = None,
        torch_threads: int | None = None,
    ):
        """`cfg`: the recipe's `rollout:` section (engine, frames, prompt, tools, budgets). `engine`: an Engine object
        that replaces `cfg.engine` (e.g. the ScriptedEngine in tests). `tools`: a tool client (`schemas()`,
        `call_many(...)`) that replaces the ToolPool built from `cfg.tools`. `video_reader`: replaces
        `envs.video.read_video` (same signature), e.g. for a custom frame source. `torch_threads`: intra-op threads
        (1 in an actor that shares a CPU node with the trainer ranks)."""
        if torch_threads:
            import torch

            torch.set_num_threads(torch_threads)
        cfg.resolve_system_prompt()
        self.cfg, self.seed = cfg, seed
        if tools is None and cfg.enabled_tools():
            tools = make_tool_pool(cfg)
            for name in cfg.enabled_tools():  # start the tool actors first: they load while this worker imports
                tools.actors(name)  # transformers and loads the processor and the engine
        self.tools = tools if tools is not None else _NoTools()
        from transformers import AutoProcessor

        self.processor = AutoProcessor.from_pretrained(model_path)
        self.tokenizer = self.processor.tokenizer
        self.engine = engine or make_engine(cfg.engine, model_path, **engine_kwargs(cfg, seed))
        self.video_reader = video_reader
        self._stats = {"records": 0, "trajectories": 0, "video_errors": 0, "rollout_s": 0.0, "weight_updates": 0}

    # ----- prompt and video -----
    def build_prompt(self, record: dict[str, Any]) -> list[int]:
        """Token ids of the chat prompt (one unexpanded `<|video_pad|>`), ending with the assistant cue."""
        if "prompt" not in record:
            raise KeyError(f"record {record.get('id', '?')!r} has no field 'prompt'")
        messages = [
            {"role": "system", "content": self.cfg.system_prompt},
            {"role": "user", "content": [{"type": "video"}, {"type": "text", "text": record["prompt"]}]},
        ]
        schemas = self.tools.schemas() or None
        text = self.processor.apply_chat_template(messages, tools=schemas, add_generation_prompt=True, tokenize=False)
        return self.tokenizer.encode(text, add_special_tokens=False)

    def _read_video(self, record: dict[str, Any]) -> Any:
        """The decoded Video; raises (envs.VideoDecodeError when the file cannot be decoded)."""
        reader = self.video_reader
        if reader is None:
            from envs.video import read_video as reader
        cfg = self.cfg
        return reader(record["video"], num_frames=cfg.num_frames, clip=record.get("clip"), max_side=cfg.max_side)

    # ----- rollout -----
    def rollout(self, records: list[dict[str, Any]], n: int, sampling: SamplingParams) -> list[Trajectory]:
        """n trajectories per record, in record order then group order."""
        start = time.perf_counter()
        episodes, failed = self._episodes(records, n)
        trajs: list[Trajectory] = []
        if episodes:
            seed = sampling.seed if sampling.seed is not None else self.seed + self._stats["records"]
            trajs = run_episodes(
                self.engine,
                self.tools,
                episodes,
                _with_seed(sampling, seed),
                self.tokenizer,
                max_turns=self.cfg.max_turns,
                max_response_tokens=self.cfg.max_response_tokens,
                processor=self.processor,
                max_images=self.cfg.max_images,
                max_side=self.cfg.max_side,
                loop=self.cfg.loop,
            )
        # The episodes are in record order then group order, so the trajectories of record r are the next n of them.
        ran = iter(trajs)
        out: list[Trajectory] = []
        for r in range(len(records)):
            out += failed[r] if r in failed else [next(ran) for _ in range(n)]
        self._stats["records"] += len(records)
        self._stats["trajectories"] += len(out)
        self._stats["rollout_s"] += time.perf_counter() - start
        return out

    def _episodes(self, records: list[Any], n: int) -> tuple[list[Episode], dict[int, list[Trajectory]]]:
        """n episodes per record that could be prepared, in record order then group order; and, by record position,
        the n placeholders of each record that could not (see the module docstring)."""
        episodes: list[Episode] = []
        failed: dict[int, list[Trajectory]] = {}
        for r, rec in enumerate(records):
            try:
                episodes += self._record_episodes(rec, r, n)
            except Exception as err:  # one bad record costs its own trajectories, not the batch
                failed[r] = self._placeholders(rec, r, n, err)
        return episodes, failed

    def _record_episodes(self, rec: dict[str, Any], r: int, n: int) -> list[Episode]:
        video = self._read_video(rec)
        prompt = self.build_prompt(rec)
        # Decoded and processed once per record: the n episodes share the video and its arrays.
        inputs = process_video(self.processor, video.frames, seconds_per_frame(video.timestamps))
        cfg = self.cfg
        key = getattr(video, "key", "") or f"{rec['video']}|{rec.get('clip')}|{cfg.num_frames}|{cfg.max_side}"
        sample_id = _sample_id(rec, r)
        return [
            Episode(
                prompt_ids=prompt,
                video=video,
                mm_key=key,
                video_inputs=inputs,
                sample_id=sample_id,
                group_index=g,
                record=rec,
            )
            for g in range(n)
        ]

    def _placeholders(self, rec: Any, r: int, n: int, err: Exception) -> list[Trajectory]:
        """The n trajectories of a record that could not be prepared, with the error's kind and text; counted."""
        kind = error_kind(err)
        message = f"{type(err).__name__}: {err}"[:2000]
        self._stats[f"{kind}s"] = self._stats.get(f"{kind}s", 0) + 1
        sample_id = _sample_id(rec, r)
        log.warning("record %r skipped (%s): %s", sample_id, kind, message)
        record = {**rec, "rollout_error": message} if isinstance(rec, dict) else {"rollout_error": message}
        return [
            Trajectory(
                sample_id=sample_id,
                group_index=g,
                prompt_ids=[],
                response_ids=[],
                response_mask=[],
                rollout_logprobs=[],
                finish_reason=kind,
                record=record,
            )
            for g in range(n)
        ]

    def replay(self, records: list[dict[str, Any]], scripts: list[list[str]], sampling: SamplingParams) -> list:
        """One trajectory per record whose assistant turns are `scripts[i]` (e.g. a teacher's chain), with the real
        tools answering its calls: supervised data in exactly the format that `rollout` samples."""
        from rollout.scripted_engine import ScriptedEngine

        engine, out = self.engine, []
        try:
            for record, script in zip(records, scripts, strict=True):
                self.engine = ScriptedEngine(self.tokenizer, list(script))
                out.extend(self.rollout([record], 1, sampling))
        finally:
            self.engine = engine
        return out

    def update_weights(self, state_dict_or_ref: Any) -> None:
        """Load new policy weights: a full state dict, or a Ray object ref to one."""
        from rollout.hf_engine import resolve_refs

        self.engine.update_weights(resolve_refs(state_dict_or_ref))
        self._stats["weight_updates"] += 1

    def load_checkpoint(self, path: str) -> None:
        """The weights of model folder `path` (the same architecture as the loaded one) into the running engine."""
        self.engine.load_checkpoint(path)
        self._stats["weight_updates"] += 1

    # Streamed weights: start, one call per bucket (a dict or a Ray object ref to one), finish. The engine loads
    # each bucket as it comes; one without these methods gets the buckets gathered into one update_weights call.
    def start_weight_update(self) -> None:
        self._buckets: dict[str, Any] = {}
        if hasattr(self.engine, "start_weight_update"):
            self.engine.start_weight_update()

    def load_weight_bucket(self, bucket_or_ref: Any) -> None:
        from rollout.hf_engine import resolve_refs

        bucket = resolve_refs(bucket_or_ref)
        if hasattr(self.engine, "load_weight_bucket"):
            self.engine.load_weight_bucket(bucket)
        else:
            self._buckets.update(bucket)

    def finish_weight_update(self) -> None:
        if hasattr(self.engine, "finish_weight_update"):
            self.engine.finish_weight_update()
        else:
            self.engine.update_weights(self._buckets)
        self._buckets = {}
        self._stats["weight_updates"] += 1

    def stats(self) -> dict[str, float]:
        """Counters since the worker started: records, trajectories, rollout_s, weight_updates, and the records
        that could not be prepared by kind (video_errors, sample_errors)."""
        return {**{f"{kind}s": 0 for kind in SAMPLE_ERRORS}, **self._stats}

    def tool_stats(self, reset: bool = True) -> dict[str, dict[str, int]]:
        """Per-tool counts since the last reset: calls, errors, timeouts, cache_hits (empty without a tool pool)."""
        stats = getattr(self.tools, "stats", None)
        return stats(reset=reset) if stats else {}


def engine_kwargs(cfg: RolloutConfig, seed: int) -> dict[str, Any]:
    """The engine's keyword arguments: `cfg.engine_kwargs` with the seed, and for vllm the image limit per prompt
    from `cfg.max_images` (the tool loop keeps every conversation within it).

    >>> engine_kwargs(RolloutConfig(engine="vllm", max_images=3, engine_kwargs={"dtype": "float32"}), seed=1)
    {'seed': 1, 'dtype': 'float32', 'max_images': 3}
    """
    kwargs = {"seed": seed, **cfg.engine_kwargs}
    if cfg.engine == "vllm":
        kwargs["max_images"] = cfg.max_images
    return kwargs


def make_tool_pool(cfg: RolloutConfig) -> Any:
    """The pool of tool actors for `cfg.tools`, run as `cfg.tool_pool` says."""
    from envs.pool import ToolPool

    pool = cfg.tool_pool
    return ToolPool(
        cfg.enabled_tools(),
        num_actors_per_tool=pool.actors_per_tool,
        actor_options={"num_cpus": pool.num_cpus, "num_gpus": pool.num_gpus},
        timeout_s=pool.timeout_s,
        cache_size=pool.cache_size,
        share_process=pool.share_process,
    )


def error_kind(err: BaseException) -> str:
    """The finish_reason for a record that failed with `err`: "video_error" for a video that does not decode,
    "sample_error" for anything else.

    >>> error_kind(KeyError("prompt"))
    'sample_error'
    """
    try:
        from envs.video import VideoDecodeError
    except ImportError:  # a worker with its own video reader may run without envs' dependencies
        return "sample_error"
    return "video_error" if isinstance(err, VideoDecodeError) else "sample_error"


def _sample_id(rec: Any, position: int) -> str:
    """The record's id, or its position in the worker's share when it has none (or is not even a dict)."""
    return str(rec.get("id", position)) if isinstance(rec, dict) else str(position)


def _with_seed(sampling: SamplingParams, seed: int) -> SamplingParams:
    import dataclasses

    return dataclasses.replace(sampling, seed=seed)
