"""TRL's side of `benchmarks/vs_trl.py`: TRL's GRPOTrainer on the benchmark's model, images and rewards, stepped one
optimizer step at a time by the parent, which interleaves it with our GRPO step.

The parent runs it with the interpreter of an environment that has TRL (`--trl-python`; how to make one is in
`benchmarks/vs_trl.py`), as `python benchmarks/_trl_side.py SPEC.json`. It imports nothing of this project: the
spec (written by the parent) names the model directory, the images, the prompts and the rewards file
(`benchmarks/vs_trl_rewards.py`, loaded by path). The settings are matched to our trainer's on CPU: fp32, no
gradient checkpointing, one optimizer step per generation batch of `batch_size` prompts x G, the token-mean loss
(TRL's "dapo"), KL to a reference model with the k3 estimator, a constant learning rate, the five vision special
tokens suppressed in sampling (as our hf engine does).

Protocol, one JSON object per line. stdout: {"event": "ready", ...} once the trainer is built, then
{"event": "step", "step": k, "seconds": ..., ...} after each step. stdin: the parent writes "step" to start each
step; anything else (or EOF) ends the run. A step's seconds run from reading "step" to TRL's `on_step_end` (batch
fetch, generation, rewards, reference and policy forwards, backward, optimizer step); TRL's logging is left out.
Everything else the libraries print goes to stderr.
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Any, TextIO

# The vision special tokens: <|vision_start|>, <|vision_end|>, <|vision_pad|>, <|image_pad|>, <|video_pad|>.
VISION_TOKEN_IDS = [151652, 151653, 151654, 151655, 151656]
SPEC_KEYS = (
    "model_dir",
    "rewards_file",
    "system_prompt",
    "rows",
    "batch_size",
    "num_generations",
    "max_new_tokens",
    "temperature",
    "beta",
    "lr",
    "clip_ratio",
    "steps",
    "seed",
    "threads",
    "output_dir",
)


def check_spec(spec: dict[str, Any], where: str = "spec") -> None:
    """Raise ValueError naming the spec file and each missing key or a row count that does not fill a batch."""
    missing = [key for key in SPEC_KEYS if key not in spec]
    if missing:
        raise ValueError(f"{where}: missing keys {', '.join(missing)}")
    if len(spec["rows"]) != spec["batch_size"]:
        raise ValueError(f"{where}: 'rows' has {len(spec['rows'])} prompts, 'batch_size' is {spec['batch_size']}")


def grpo_config_kwargs(spec: dict[str, Any]) -> dict[str, Any]:
    """GRPOConfig keyword arguments (TRL 1.16 field names) for the spec, each setting matched to our trainer's."""
    return {
        "output_dir": spec["output_dir"],
        "num_generations": spec["num_generations"],
        # one generation batch of batch_size prompts x G completions per optimizer step, in one forward
        "per_device_train_batch_size": spec["batch_size"] * spec["num_generations"],
        "gradient_accumulation_steps": 1,
        "max_completion_length": spec["max_new_tokens"],
        "temperature": spec["temperature"],
        "top_p": 1.0,
        "top_k": 0,
        "generation_kwargs": {"suppress_tokens": VISION_TOKEN_IDS},
        "beta": spec["beta"],
        "epsilon": spec["clip_ratio"],
        "loss_type": "dapo",  # token-mean over the batch's completion tokens, as our loss_agg_mode token-mean
        "learning_rate": spec["lr"],
        "lr_scheduler_type": "constant",
        "weight_decay": 0.0,
        "max_grad_norm": 1.0,
        "max_steps": spec["steps"],
        "seed": spec["seed"],
        "bf16": False,  # our trainer on CPU: fp32, no activation checkpointing
        "gradient_checkpointing": False,
        "use_cpu": True,
        "model_init_kwargs": {"dtype": "float32", "attn_implementation": "sdpa"},
        "shuffle_dataset": False,  # the rows are the parent's, in its order
        "dataloader_num_workers": 0,
        "logging_steps": 1,
        "report_to": "none",
        "save_strategy": "no",
        "disable_tqdm": True,
    }


def dataset_rows(spec: dict[str, Any]) -> list[dict[str, Any]]:
    """The spec's prompts once per step, as TRL's conversational rows: system and user messages (TRL puts the image
    before the user text), the image path and the answer (a column the accuracy reward reads)."""
    rows = []
    for _ in range(spec["steps"]):
        for row in spec["rows"]:
            prompt = [
                {"role": "system", "content": spec["system_prompt"]},
                {"role": "user", "content": row["prompt"]},
            ]
            rows.append({"prompt": prompt, "image": row["image"], "answer": row["answer"]})
    return rows


def completion_text(completion: Any) -> str:
    """The text of one TRL completion: a plain string, or conversational messages (the assistant's content).

    >>> completion_text([{"role": "assistant", "content": "<answer>wave</answer>"}])
    '<answer>wave</answer>'
    >>> completion_text("plain")
    'plain'
    """
    if isinstance(completion, str):
        return completion
    content = completion[-1]["content"]
    if isinstance(content, str):
        return content
    return "".join(part.get("text", "") for part in content)


def reward_functions(module: Any) -> list:
    """TRL reward functions (completions and dataset columns in, one float per completion out) around the rewards
    file's `format_score` and `accuracy_score`."""

    def format_reward(completions: list, **_: Any) -> list[float]:
        return [module.format_score(completion_text(c)) for c in completions]

    def accuracy_reward(completions: list, answer: list, **_: Any) -> list[float]:
        return [module.accuracy_score(completion_text(c), a) for c, a in zip(completions, answer, strict=True)]

    return [format_reward, accuracy_reward]


def load_rewards(path: str) -> Any:
    import importlib.util

    spec = importlib.util.spec_from_file_location("vs_trl_rewards", path)
    if spec is None or spec.loader is None:
        raise FileNotFoundError(f"rewards_file: cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def make_gate(out: TextIO, inp: TextIO) -> Any:
    """A TrainerCallback that waits for "step" on `inp` before each step and writes the step's record to `out`."""
    from transformers import TrainerCallback

    class StepGate(TrainerCallback):
        def __init__(self):
            self.t0 = 0.0
            self.seconds = None

        def wait(self) -> None:
            line = inp.readline().strip()
            if line != "step":
                emit(out, {"event": "stopped", "got": line})
                raise SystemExit(0)
            self.t0 = time.perf_counter()

        def on_train_begin(self, args, state, control, **kwargs):
            self.wait()

        def on_step_end(self, args, state, control, **kwargs):
            self.seconds = time.perf_counter() - self.t0

        def on_log(self, args, state, control, logs=None, **kwargs):
            if self.seconds is None:  # the summary log at the end of training
                return
            logs = logs or {}
            keep = ("completions/mean_length", "reward", "kl", "loss", "step_time")
            record = {"event": "step", "step": state.global_step, "seconds": self.seconds}
            record.update({key: logs[key] for key in keep if key in logs})
            emit(out, record)
            self.seconds = None
            if state.global_step < state.max_steps:
                self.wait()

    return StepGate()


def emit(out: TextIO, record: dict[str, Any]) -> None:
    out.write(json.dumps(record) + "\n")
    out.flush()


def describe_inputs(processor: Any, row: dict[str, Any]) -> dict[str, int]:
    """Prompt tokens (vision placeholders expanded) and visual tokens of one row, as TRL's processor makes them."""
    from PIL import Image
    from trl.data_utils import prepare_multimodal_messages

    image = Image.open(row["image"]).convert("RGB")
    messages = prepare_multimodal_messages(row["prompt"], images=[image])
    inputs = processor.apply_chat_template(
        conversation=[messages], add_generation_prompt=True, tokenize=True, return_dict=True
    )
    merge = processor.image_processor.merge_size
    grid = [int(x) for x in inputs["image_grid_thw"][0]]
    return {
        "prompt_tokens": len(inputs["input_ids"][0]),
        "visual_tokens": grid[0] * grid[1] * grid[2] // merge**2,
        "image_grid_thw": grid,
        "image_size": list(image.size),
    }


def main(spec_path: str) -> None:
    out = os.fdopen(os.dup(1), "w", buffering=1)  # the protocol's stdout; fd 1 itself goes to stderr
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    with open(spec_path) as f:
        spec = json.load(f)
    check_spec(spec, spec_path)

    import torch
    import transformers
    import trl
    from datasets import Dataset, Image

    if spec["threads"]:
        torch.set_num_threads(spec["threads"])
    rows = dataset_rows(spec)
    dataset = Dataset.from_list(rows).cast_column("image", Image())
    trainer = trl.GRPOTrainer(
        model=spec["model_dir"],
        reward_funcs=reward_functions(load_rewards(spec["rewards_file"])),
        args=trl.GRPOConfig(**grpo_config_kwargs(spec)),
        train_dataset=dataset,
        callbacks=[make_gate(out, sys.stdin)],
    )
    seen = describe_inputs(trainer.processing_class, rows[0])
    versions = {"trl": trl.__version__, "transformers": transformers.__version__, "torch": torch.__version__}
    emit(out, {"event": "ready", "torch_threads": torch.get_num_threads(), **versions, **seen})
    trainer.train()
    emit(out, {"event": "done"})


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit("usage: python benchmarks/_trl_side.py SPEC.json (written by benchmarks/vs_trl.py)")
    main(sys.argv[1])
