"""FineAgent, FineBench's inference-time helpers for `mcq` records: context put before the question.

An evaluation variant is a list of modules (`python -m eval.run --fineagent localizer:detector,descriptor`, the
flag repeatable, one variant each; every checkpoint is evaluated without FineAgent too):

  - `localizer:oracle`: the record's annotated box (`meta.box`, or the first of `meta.boxes`). Ground truth, so an
    upper bound for any localizer, not FineAgent's method; it is what FineBench's released evaluator calls
    spatial grounding (the annotated box in the prompt).
  - `localizer:detector`: a model picks the box. The `human_detection` tool looks at the keyframe (the sampled
    frame nearest `meta.keyframe_s`, else the middle of the clip) and the person the question's spatial descriptor
    points to is taken (`common.spatial.pick_person`: "the leftmost person" is the leftmost detected box, "the
    second person from the right" the second from the right, "the person in the center" the middle one, "the only
    person" or a question without a descriptor the largest). FineBench's Localizer is EVF-SAM, a referring
    segmentation model reading the question; this is a detector and a rule standing in for it. When it finds
    nobody, the localizer adds nothing (the paper's fallback to the whole frame).
  - `descriptor`: frame captions from the `video_description` tool (key frames by body motion, described by its
    describer: `{"kind": "local", "model": DIR}`, by default the embedded tiny model, or `{"kind": "endpoint",
    "base_url": URL, "model": NAME, "api_key_env": VAR}`, e.g. a vLLM server with Qwen2.5-VL-7B as in the paper).

The tools see the record's frames (as many as the policy, `rollout.num_frames`) at up to `MAX_SIDE` pixels on the
long side, whatever the policy's `max_side`: they are models of their own, at their own resolution.

Both localizers write the same line, so that their results differ only by the box:
"Localizer: the person asked about is in the box [x1, y1, x2, y2] (...)". The tools' options come from
`--fineagent-tools` ({tool name: options}, the format of `rollout.tools`).
"""

from __future__ import annotations

from typing import Any

LOCALIZERS = ("oracle", "detector")
MAX_SIDE = 640  # the long side of the frames the FineAgent tools see (YOLO resizes to its imgsz, 320, itself)
MODULES = tuple(f"localizer:{k}" for k in LOCALIZERS) + ("descriptor",)
MODULE_TOOLS = {"localizer:detector": "human_detection", "descriptor": "video_description"}
LOCALIZER_LINE = (
    "Localizer: the person asked about is in the box [{coords}] (x1, y1, x2, y2 as fractions of the frame width "
    "and height)."
)


class FineAgentError(RuntimeError):
    """A FineAgent setting that cannot run (an unknown module, a tool that is not registered, records without the
    box the oracle reads); raised before any actor starts."""


def parse_variant(text: str) -> list[str]:
    """The modules of one `--fineagent` value ("localizer:oracle,descriptor"), localizer first.

    >>> parse_variant("descriptor, localizer:detector")
    ['localizer:detector', 'descriptor']
    """
    modules = [m.strip() for m in text.split(",") if m.strip()]
    for m in modules:
        if m == "localizer":
            raise FineAgentError(
                "--fineagent: say which localizer: 'localizer:oracle' (the record's annotated box, ground truth) or "
                "'localizer:detector' (the human_detection tool picks the person the question describes)"
            )
        if m not in MODULES:
            raise FineAgentError(f"--fineagent: unknown module {m!r}; expected one of {', '.join(MODULES)}")
    if len(set(modules)) != len(modules) or sum(m.startswith("localizer:") for m in modules) > 1:
        raise FineAgentError(f"--fineagent {text!r}: each module once, and one localizer at most")
    if not modules:
        raise FineAgentError("--fineagent: no module given")
    return sorted(modules, key=MODULES.index)


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


def check_fineagent(modules: list[str], records: list[dict], tools: dict[str, Any] | None = None) -> None:
    """Refuse, before any actor starts, a variant whose tool is not registered or whose tool options are wrong,
    and the oracle localizer on records without a box."""
    from envs.base import available_tools, config_problems

    tools = tools or {}
    unknown = sorted(set(tools) - set(MODULE_TOOLS.values()))
    if unknown:
        raise FineAgentError(f"--fineagent-tools: {unknown} are no FineAgent tools ({sorted(MODULE_TOOLS.values())})")
    for module in modules:
        tool = MODULE_TOOLS.get(module)
        if tool and tool not in available_tools():
            raise FineAgentError(
                f"FineAgent {module} needs the {tool!r} tool, which is not registered; available tools: "
                f"{', '.join(available_tools())}"
            )
        if tool:
            problems = config_problems(tool, tools.get(tool) or {}, where="--fineagent-tools")
            if problems:
                raise FineAgentError("; ".join(problems))
    if "localizer:oracle" in modules:
        missing = [r.get("id", "?") for r in records if record_box(r) is None]
        if missing:
            raise FineAgentError(
                f"localizer:oracle reads each record's meta.box / meta.boxes; {len(missing)} record(s) have none "
                f"(e.g. {missing[0]}); use localizer:detector for them"
            )


def keyframe_index(record: dict, video: Any) -> int:
    """The sampled frame nearest the keyframe: `meta.keyframe_s`, else the middle of `clip`, else of the frames.

    >>> from types import SimpleNamespace
    >>> keyframe_index({"clip": [1.0, 4.0]}, SimpleNamespace(timestamps=[1.0, 2.0, 3.0, 4.0]))
    1
    """
    meta = record.get("meta") if isinstance(record.get("meta"), dict) else {}
    stamps = list(video.timestamps)
    t = meta.get("keyframe_s")
    if not isinstance(t, (int, float)):
        clip = record.get("clip")
        t = (clip[0] + clip[1]) / 2 if clip else (stamps[0] + stamps[-1]) / 2
    return min(range(len(stamps)), key=lambda i: (abs(stamps[i] - t), i))


def detect_box(record: dict, video: Any, detector: Any) -> list[float] | None:
    """The detector localizer's box (fractions of the frame) for a record, or None when nobody is detected."""
    from common.spatial import pick_person
    from envs.base import run_tool

    k = keyframe_index(record, video)
    result = run_tool(detector, {"frames": [k]}, video)
    frames = ((result.data or {}).get("frames") if result.ok else None) or [{}]
    boxes = [p["box"] for p in frames[0].get("people", [])]
    h, w = video.frames[k].shape[:2]
    i = pick_person(boxes, record.get("prompt", ""), frame_width=w)
    if i is None:
        return None
    x1, y1, x2, y2 = boxes[i]
    return [min(1.0, max(0.0, v)) for v in (x1 / w, y1 / h, x2 / w, y2 / h)]


def _tool_args(tool: Any, video: Any) -> dict:
    """Arguments for a FineAgent tool call: the first, middle and last frames when its schema takes `frames`."""
    props = tool.schema["function"]["parameters"].get("properties", {})
    n = len(video.frames)
    return {"frames": sorted({0, n // 2, n - 1})} if "frames" in props else {}


def fineagent_context(record: dict, video: Any, modules: list[str], tools: dict[str, Any]) -> tuple[str, dict]:
    """The text FineAgent puts before the question, for one record and its decoded video, and what it used
    ({"localizer_box": the box or None} with a localizer)."""
    from envs.base import run_tool

    lines, info = [], {}
    for module in modules:
        if module.startswith("localizer:"):
            kind = module.partition(":")[2]
            box = record_box(record) if kind == "oracle" else detect_box(record, video, tools["human_detection"])
            info["localizer_box"] = box
            if box is not None:
                lines.append(LOCALIZER_LINE.format(coords=", ".join(f"{x:.3f}" for x in box)))
        elif module == "descriptor":
            tool = tools["video_description"]
            lines.append("Descriptor (frame captions): " + run_tool(tool, _tool_args(tool, video), video).text)
    return "\n".join(lines), info
