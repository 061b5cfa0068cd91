"""EvalActor: a checkpoint in an engine, records in, scored per-sample results out. A plain class, made a Ray
actor where it is used:

    actor = ray.remote(num_cpus=1)(EvalActor).remote(eval_cfg.rollout_for_eval(cfg.rollout))
    rows = ray.get(actor.evaluate.remote(records, "ovar", "/runs/videostar/checkpoint-40"))

Generation is the rollout code itself (`rollout.worker.RolloutWorker`: the prompt, the video, the multi-turn tool
loop), with greedy decoding by default, so a checkpoint is evaluated exactly as it was trained to answer.

FineAgent (FineBench's inference-time helpers, for `mcq` records; `eval.fineagent`) puts a localizer's box and a
descriptor's frame captions before the question, for the variants the evaluation asks for. GPS's staged inference
(`describe` records; `eval.gps`) asks the model for gold points, their validation, Socratic questions and the
description in turn.
"""

from __future__ import annotations

import logging
from typing import Any

from eval.fineagent import MAX_SIDE, MODULE_TOOLS, fineagent_context
from rollout.config import RolloutConfig

log = logging.getLogger(__name__)


class EvalActor:
    def __init__(
        self,
        rollout: RolloutConfig,
        seed: int = 0,
        torch_threads: int | None = None,
        fineagent_tools: dict[str, dict] | None = None,
    ):
        """`rollout`: the training run's rollout config as evaluation uses it (`EvalConfig.rollout_for_eval`: the
        run's system prompt, tools, frames and budgets; one episode per record, greedy by default).
        `fineagent_tools`: options of the FineAgent tools ({tool name: options}, as `rollout.tools`)."""
        if torch_threads:
            import torch

            torch.set_num_threads(torch_threads)
        self.rollout, self.seed = rollout, seed
        self.fineagent_options = dict(fineagent_tools or {})
        self._pool = None
        self._fineagent_tools: dict[str, Any] = {}
        self.worker = None
        self.checkpoint = ""
        self.reloads = 0  # checkpoints loaded into a running engine

    def load(self, checkpoint: str) -> str:
        """Load a checkpoint directory into the engine: its weights into the running engine when the model is the
        same architecture as the loaded one (`same_model`: a new checkpoint of the run), else a fresh RolloutWorker
        (the tool pool is kept)."""
        from rollout.worker import RolloutWorker, make_tool_pool

        if checkpoint == self.checkpoint:
            return checkpoint
        if self.worker is not None and same_model(self.checkpoint, checkpoint):
            loaded, self.checkpoint = self.checkpoint, ""  # a failed load leaves no checkpoint named as loaded
            self.worker.load_checkpoint(checkpoint)
            self.checkpoint, self.reloads = checkpoint, self.reloads + 1
            log.info("loaded %s into the engine that held %s", checkpoint, loaded)
            return checkpoint
        self.worker, self.checkpoint = None, ""  # free the previous model; a failed load leaves none
        if self._pool is None and self.rollout.enabled_tools():
            self._pool = make_tool_pool(self.rollout)
        self.worker = RolloutWorker(self.rollout, checkpoint, seed=self.seed, tools=self._pool)
        self.checkpoint = checkpoint
        return checkpoint

    def _fineagent(self, records: list[dict], modules: list[str]) -> tuple[list[dict], list[dict]]:
        """The records with FineAgent's context before their prompts, and what each context used."""
        from envs.base import make
        from envs.video import VideoDecodeError, read_video

        for name in {MODULE_TOOLS[m] for m in modules if m in MODULE_TOOLS} - set(self._fineagent_tools):
            self._fineagent_tools[name] = make(name, **(self.fineagent_options.get(name) or {}))
        out, infos = [], []
        for rec in records:
            try:
                video = read_video(
                    rec["video"], num_frames=self.rollout.num_frames, clip=rec.get("clip"), max_side=MAX_SIDE
                )
            except VideoDecodeError:
                out.append(rec)  # the rollout reports this sample as failed
                infos.append({})
                continue
            context, info = fineagent_context(rec, video, modules, self._fineagent_tools)
            out.append({**rec, "prompt": f"{context}\n{rec['prompt']}" if context else rec["prompt"]})
            infos.append(info)
        return out, infos

    def evaluate(
        self,
        records: list[dict],
        task: str,
        checkpoint: str,
        indices: list[int] | None = None,
        modules: list[str] | None = None,
    ) -> list[dict]:
        """One scored row per record of `checkpoint` (loaded first if it is not the one in the engine), in order:
        index, id, prediction (the last turn's text), parsed answer, per-sample metric values, finish reason, tool
        calls, and `failed` when the video could not be decoded. `modules`: the evaluation variant's, FineAgent's
        (`eval.fineagent`) or GPS's staged inference (`eval.gps.STAGED`, or a variant of it without some stages;
        what the stages wrote goes into the row's `gps`)."""
        from eval.gps import run_staged, staged_without
        from eval.tasks import score_rows
        from rollout.engine import SamplingParams
        from rollout.worker import SAMPLE_ERRORS

        self.load(checkpoint)
        if not records:
            return []
        without = staged_without("+".join(modules or []))
        staged = without is not None
        fineagent = None if staged else modules
        prompts, infos = self._fineagent(records, fineagent) if fineagent else (records, [{}] * len(records))
        cfg = self.rollout
        sampling = SamplingParams(
            max_new_tokens=cfg.max_new_tokens,
            temperature=cfg.temperature,
            top_p=cfg.top_p,
            top_k=cfg.top_k,
            seed=self.seed,
        )
        if staged:
            trajs, infos = run_staged(self.worker, records, sampling, without)
        else:
            trajs = self.worker.rollout(prompts, 1, sampling)
        rows = []
        for i, (rec, traj) in enumerate(zip(records, trajs, strict=True)):
            failed = traj.finish_reason in SAMPLE_ERRORS  # the video did not decode, or the record was unusable
            rows.append(
                {
                    "index": indices[i] if indices else i,
                    "id": rec["id"],
                    "prediction": traj.final_text,
                    "finish_reason": traj.finish_reason,
                    "failed": failed,
                    "error": (traj.record or {}).get("rollout_error", traj.finish_reason) if failed else None,
                    "turns": len(traj.turns),
                    "tool_calls": [{"name": c.name, "ok": c.ok} for c in traj.tool_calls],
                    "model_tokens": infos[i].get("model_tokens", traj.num_model_tokens),
                    **({"prompt": prompts[i]["prompt"], "fineagent": infos[i]} if fineagent else {}),
                    **({"gps": infos[i]} if staged else {}),
                }
            )
        score_rows(task, rows, records)
        return rows


def same_model(a: str, b: str) -> bool:
    """Whether model folders `a` and `b` hold the same architecture (config.json equal but for names, versions and
    dtype), so that `b`'s weights can go into an engine built for `a`."""
    import json
    from pathlib import Path

    def strip(value):  # without the keys that name or date a save, at every level (sub-configs have dtype too)
        if isinstance(value, dict):
            volatile = ("_name_or_path", "transformers_version", "torch_dtype", "dtype")
            return {k: strip(v) for k, v in value.items() if k not in volatile}
        return value

    def config(folder: str) -> dict | None:
        try:
            return strip(json.loads((Path(folder) / "config.json").read_text()))
        except (OSError, ValueError):
            return None

    first = config(a)
    return first is not None and first == config(b)
