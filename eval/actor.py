"""EvalActor: a checkpoint in an engine, records in, scored per-sample results out. A plain class, made a Ray
actor where it is used:

    actor = ray.remote(num_cpus=1)(EvalActor).remote(eval_cfg.rollout_for_eval(cfg.rollout))
    rows = ray.get(actor.evaluate.remote(records, "ovar", "/runs/videostar/checkpoint-40"))

Generation is the rollout code itself (`rollout.worker.RolloutWorker`: the prompt, the video, the multi-turn tool
loop), with greedy decoding by default, so a checkpoint is evaluated exactly as it was trained to answer.

FineAgent (FineBench's inference-time helpers, for `mcq` records) puts extra context before the question:
the localizer the asked-about person's box (the record's `meta.box`, or the first of `meta.boxes`, else what the
`human_detection` tool finds), the descriptor frame captions from the `video_description` tool.
"""

from __future__ import annotations

import logging
from typing import Any

from rollout.config import RolloutConfig

log = logging.getLogger(__name__)

FINEAGENT_MODULES = ("localizer", "descriptor")
FINEAGENT_TOOLS = {"localizer": "human_detection", "descriptor": "video_description"}


class FineAgentError(RuntimeError):
    """A FineAgent module cannot run (its tool is not registered); raised before any actor starts."""


def record_box(record: dict) -> list[float] | None:
    """The asked-about person's box [x1, y1, x2, y2] from `meta.box` or the first of `meta.boxes` (a box, or an
    object with a `box` field), or None.

    >>> record_box({"meta": {"boxes": [{"box": [0.1, 0.2, 0.5, 0.9], "person_id": 3}]}})
    [0.1, 0.2, 0.5, 0.9]
    >>> record_box({"meta": {}}) is None
    True
    """
    meta = record.get("meta") if isinstance(record.get("meta"), dict) else {}
    box = meta.get("box")
    if box is None and isinstance(meta.get("boxes"), list) and meta["boxes"]:
        box = meta["boxes"][0]
    if isinstance(box, dict):
        box = box.get("box")
    if isinstance(box, list) and len(box) == 4 and all(isinstance(x, (int, float)) for x in box):
        return [float(x) for x in box]
    return None


def check_fineagent(modules: list[str], records: list[dict]) -> None:
    """Refuse, before any actor starts, modules that are unknown or whose tool is not registered (the localizer
    needs `human_detection` only for records without a box)."""
    from envs.base import available_tools

    for module in modules:
        if module not in FINEAGENT_MODULES:
            expected = ", ".join(FINEAGENT_MODULES)
            raise FineAgentError(f"unknown FineAgent module {module!r}; expected one of {expected}")
        tool = FINEAGENT_TOOLS[module]
        needed = module == "descriptor" or any(record_box(r) is None for r in records)
        if needed and tool not in available_tools():
            why = "" if module == "descriptor" else " (some records have no meta.box / meta.boxes)"
            raise FineAgentError(
                f"FineAgent {module} needs the {tool!r} tool{why}, which is not registered; available tools: "
                f"{', '.join(available_tools())}"
            )


def _tool_args(tool: Any, video: Any) -> dict:
    """Arguments for a FineAgent tool call: the first, middle and last frames when its schema takes `frames`."""
    props = tool.schema["function"]["parameters"].get("properties", {})
    n = len(video.frames)
    return {"frames": sorted({0, n // 2, n - 1})} if "frames" in props else {}


def fineagent_context(record: dict, video: Any, modules: list[str], tools: dict[str, Any]) -> str:
    """The text FineAgent puts before the question, for one record and its decoded video."""
    from envs.base import run_tool

    lines = []
    if "localizer" in modules:
        box = record_box(record)
        if box is not None:
            coords = ", ".join(f"{x:.3f}" for x in box)
            lines.append(
                f"Localizer: the person asked about is in the box [{coords}] (x1, y1, x2, y2 as fractions "
                "of the frame width and height)."
            )
        else:
            tool = tools["human_detection"]
            lines.append("Localizer (people detected): " + run_tool(tool, _tool_args(tool, video), video).text)
    if "descriptor" in modules:
        tool = tools["video_description"]
        lines.append("Descriptor (frame captions): " + run_tool(tool, _tool_args(tool, video), video).text)
    return "\n".join(lines)


class EvalActor:
    def __init__(self, rollout: RolloutConfig, seed: int = 0, torch_threads: int | None = None):
        """`rollout`: the training run's rollout config as evaluation uses it (`EvalConfig.rollout_for_eval`: the
        run's system prompt, tools, frames and budgets; one episode per record, greedy by default)."""
        if torch_threads:
            import torch

            torch.set_num_threads(torch_threads)
        self.rollout, self.seed = rollout, seed
        self._pool = None
        self._fineagent_tools: dict[str, Any] = {}
        self.worker = None
        self.checkpoint = ""

    def load(self, checkpoint: str) -> str:
        """Load a checkpoint directory into the engine (a fresh RolloutWorker; the tool pool is kept)."""
        from rollout.worker import RolloutWorker, make_tool_pool

        if checkpoint != self.checkpoint:
            self.worker, self.checkpoint = None, ""  # free the previous model; a failed load leaves none
            if self._pool is None and self.rollout.enabled_tools():
                self._pool = make_tool_pool(self.rollout)
            self.worker = RolloutWorker(self.rollout, checkpoint, seed=self.seed, tools=self._pool)
            self.checkpoint = checkpoint
        return checkpoint

    def _fineagent(self, records: list[dict], modules: list[str]) -> list[dict]:
        from envs.base import make
        from envs.video import VideoDecodeError, read_video

        out = []
        for rec in records:
            try:
                cfg = self.rollout
                video = read_video(
                    rec["video"], num_frames=cfg.num_frames, clip=rec.get("clip"), max_side=cfg.max_side
                )
            except VideoDecodeError:
                out.append(rec)  # the rollout reports this sample as failed
                continue
            for module in modules:
                name = FINEAGENT_TOOLS[module]
                needed = module == "descriptor" or record_box(rec) is None
                if needed and name not in self._fineagent_tools:
                    self._fineagent_tools[name] = make(name)
            context = fineagent_context(rec, video, modules, self._fineagent_tools)
            out.append({**rec, "prompt": f"{context}\n{rec['prompt']}" if context else rec["prompt"]})
        return out

    def evaluate(
        self,
        records: list[dict],
        task: str,
        checkpoint: str,
        indices: list[int] | None = None,
        fineagent: list[str] | None = None,
    ) -> list[dict]:
        """One scored row per record of `checkpoint` (loaded first if it is not the one in the engine), in order:
        index, id, prediction (the last turn's text), parsed answer, per-sample metric values, finish reason, tool
        calls, and `failed` when the video could not be decoded."""
        from eval.tasks import score_rows
        from rollout.engine import SamplingParams
        from rollout.worker import SAMPLE_ERRORS

        self.load(checkpoint)
        if not records:
            return []
        prompts = self._fineagent(records, fineagent) if fineagent else records
        cfg = self.rollout
        sampling = SamplingParams(
            max_new_tokens=cfg.max_new_tokens,
            temperature=cfg.temperature,
            top_p=cfg.top_p,
            top_k=cfg.top_k,
            seed=self.seed,
        )
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
                    "model_tokens": traj.num_model_tokens,
                    **({"prompt": prompts[i]["prompt"]} if fineagent else {}),
                }
            )
        score_rows(task, rows, records)
        return rows
