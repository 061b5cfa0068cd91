"""The `vllm` engine: vLLM's offline `LLM` API on GPUs (install the `gpu` extra).

Prompts go in as token ids with *unexpanded* vision placeholders plus the raw frames / images in
`multi_modal_data`; vLLM's Qwen2.5-VL input processing expands the placeholders itself. Log-probs are the sampled
tokens' log-probs as vLLM reports them (`logprobs=0`), by default computed from the raw logits (vLLM's
`logprobs_mode="raw_logprobs"`), the same quantity the `hf` engine returns and the trainer recomputes.

New weights are loaded through a worker extension (`worker_extension_cls`) and `LLM.collective_rpc`, the way vLLM's
RLHF examples do it; the model's own `load_weights` maps Hugging Face parameter names to vLLM's.
"""

from __future__ import annotations

import inspect
from typing import Any

from rollout.engine import Completion, GenerationRequest, SamplingParams
from rollout.multimodal import VISION_TOKEN_IDS


def _import_vllm():
    try:
        import vllm
    except ImportError as err:
        raise ImportError(
            "the 'vllm' engine needs vLLM, which runs on CUDA GPUs only: install the gpu extra "
            "(pip install -e '.[gpu]'), or use engine='hf'"
        ) from err
    return vllm


class WeightLoadExtension:
    """Mixed into each vLLM GPU worker (by `worker_extension_cls`); `collective_rpc` calls its methods by name."""

    def load_full_state_dict(self, named_tensors: dict[str, Any]) -> int:
        import torch

        model = self.model_runner.model  # type: ignore[attr-defined]
        weights = ((name, torch.as_tensor(t)) for name, t in named_tensors.items())
        loaded = model.load_weights(weights=weights)
        return len(loaded) if loaded is not None else len(named_tensors)


class VLLMEngine:
    """Sampling with `vllm.LLM.generate`; implements `rollout.engine.Engine`."""

    def __init__(
        self,
        model_path: str,
        tensor_parallel_size: int = 1,
        gpu_memory_utilization: float = 0.6,
        max_model_len: int = 16384,
        seed: int = 0,
        enforce_eager: bool = False,
        max_images: int = 8,
        dtype: str = "bfloat16",
        **llm_kwargs: Any,
    ):
        vllm = _import_vllm()
        self.seed = seed
        self._calls = 0
        self.llm = vllm.LLM(
            model=model_path,
            tensor_parallel_size=tensor_parallel_size,
            gpu_memory_utilization=gpu_memory_utilization,
            max_model_len=max_model_len,
            seed=seed,
            enforce_eager=enforce_eager,
            dtype=dtype,
            limit_mm_per_prompt={"video": 1, "image": max_images},
            worker_extension_cls=f"{__name__}.WeightLoadExtension",
            **llm_kwargs,
        )
        self._sampling_fields = set(inspect.signature(vllm.SamplingParams).parameters)

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
        # A sampled vision token would break the next turn's input processing: forbid them where vLLM allows it.
        if "logit_bias" in self._sampling_fields:
            kwargs["logit_bias"] = {t: -100.0 for t in VISION_TOKEN_IDS}
        return vllm.SamplingParams(**{k: v for k, v in kwargs.items() if k in self._sampling_fields})

    @staticmethod
    def _prompt(req: GenerationRequest) -> dict[str, Any]:
        media: dict[str, Any] = {}
        if req.videos:
            media["video"] = list(req.videos)
        if req.images:
            media["image"] = list(req.images)
        prompt: dict[str, Any] = {"prompt_token_ids": list(req.prompt_ids)}
        if media:
            prompt["multi_modal_data"] = media
        return prompt

    def generate(self, requests: list[GenerationRequest], sampling: SamplingParams) -> list[Completion]:
        """One completion per request, all submitted to vLLM at once (it batches and schedules them)."""
        base = sampling.seed if sampling.seed is not None else self.seed + 100_003 * self._calls
        self._calls += 1
        params = [self._sampling_params(sampling, base + i) for i in range(len(requests))]
        outputs = self.llm.generate([self._prompt(r) for r in requests], params, use_tqdm=False)
        completions = []
        for out in outputs:
            best = out.outputs[0]
            ids = list(best.token_ids)
            logprobs = [float(step[tok].logprob) for tok, step in zip(ids, best.logprobs or [])]
            if len(logprobs) != len(ids):
                raise RuntimeError(f"vLLM returned {len(logprobs)} log-probs for {len(ids)} tokens")
            reason = "length" if best.finish_reason == "length" else "stop"
            completions.append(Completion(token_ids=ids, logprobs=logprobs, text=best.text, finish_reason=reason))
        return completions

    def update_weights(self, named_tensors: Any) -> None:
        """Load a full state dict (Hugging Face names) into every worker of the engine."""
        from rollout.hf_engine import resolve_refs

        state = resolve_refs(named_tensors)
        if hasattr(self.llm, "collective_rpc"):
            self.llm.collective_rpc("load_full_state_dict", args=(state,))
            if hasattr(self.llm, "reset_prefix_cache"):
                self.llm.reset_prefix_cache()  # cached KV blocks were computed with the old weights
            return
        # Older vLLM without collective_rpc: a single in-process worker.
        import torch

        model = self.llm.llm_engine.model_executor.driver_worker.worker.model_runner.model
        model.load_weights(weights=((k, torch.as_tensor(v)) for k, v in state.items()))
