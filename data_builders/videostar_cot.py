"""Video-STAR chains of thought for the SFT cold start: real tool outputs, a teacher's dual-phase chain, a judge.

For each `ovar` training record: decode the frames the policy will see, let the teacher write the first assistant
turn (which tools to call, and the calls), run those calls on the real tools (`envs.make`), let the teacher write
the second turn given the real outputs and the ground-truth label (what the tools show, sub-motion
decomposition, 2-3 candidates, matching scores, `<answer>`), then a judge drops chains whose answer is wrong or
whose steps contradict the tool outputs. Each kept record is the input record plus `chain` (the assistant turns,
exactly the text the GRPO recipe samples; `recipes/videostar_sft.py` replays them through the real tools, so the
tool replies land between the turns as they do in a rollout) and `meta.cot` (teacher, judge, tool replies).

    python -m data_builders.videostar_cot --records train.jsonl --out cot/train_cot.jsonl          # template teacher
    OPENAI_API_KEY=... python -m data_builders.videostar_cot --records train.jsonl --out cot/train_cot.jsonl \\
        --teacher http://vllm-host:8000/v1 --teacher-model Qwen2.5-VL-72B-Instruct --judge http://vllm-host:8000/v1

Teacher and judge: an OpenAI-compatible endpoint (prompts in `recipes/prompts/videostar_*.txt`, the key from
`--api-key-env`), or `template`: the deterministic template teacher / judge (`data_builders.template_teacher`),
which write and check chains from the ground truth and the real tool outputs, offline. Bad input is dropped with a
counted reason (`bad_record`, `video_decode`, `teacher_unparsable`, `teacher_no_submotions`, `too_long`,
`judge_wrong_answer`, `judge_contradicts_tools`, `judge_rejected`, `judge_unparsable`); a rerun resumes after the
last record written.

Sub-motions: every kept chain lists them in the one format of common/submotions.py (a chain without a readable
list is dropped as `teacher_no_submotions`). A record's own `sub_motions` are given to the teacher as that line to
copy; a record without them gets the list an endpoint teacher wrote (`meta.cot.sub_motions: "teacher"`, else
`"record"`), so the sub-motion reward has a truth for it in GRPO. The template teacher's fallback (the template
knowledge base's phases) is not written back: the builders' `--sub-motions` already offers the knowledge base.
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path
from typing import Any

from common.schema import validate_record
from common.submotions import INSTRUCTION, format_submotions
from data_builders.endpoint import (
    ChatEndpoint,
    build_resumable,
    load_prompt,
    print_summary,
)
from data_builders.template_teacher import pose_counts, template_chain, template_reasoning

_TOOL_CALL = re.compile(r"<tool_call>(.*?)</tool_call>", re.DOTALL)
_ANSWER = re.compile(r"<answer>(.*?)</answer>", re.DOTALL)


class Dropped(Exception):
    """A record that does not become a chain; `reason` is its counted category."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}")
        self.reason, self.detail = reason, detail


def parse_calls(text: str) -> list[dict[str, Any]]:
    """The {"name", "arguments"} objects of every `<tool_call>` in `text`; Dropped("teacher_unparsable") if a
    call is not such a JSON object.

    >>> parse_calls('<think>x</think><tool_call>{"name": "pose_estimation", "arguments": {}}</tool_call>')
    [{'name': 'pose_estimation', 'arguments': {}}]
    """
    calls = []
    for body in _TOOL_CALL.findall(text):
        try:
            call = json.loads(body.strip())
        except json.JSONDecodeError as err:
            raise Dropped("teacher_unparsable", f"tool call is not JSON ({err.msg})") from None
        if not isinstance(call, dict) or not isinstance(call.get("name"), str):
            raise Dropped("teacher_unparsable", "tool call without a name")
        calls.append({"name": call["name"], "arguments": call.get("arguments") or {}})
    return calls


def final_answer(text: str) -> str | None:
    found = _ANSWER.findall(text)
    return found[-1].strip() if found else None


def submotion_line(record: dict) -> str:
    """The record's `sub_motions` as the sub-motion line the teacher is to copy, or a note that there are none.

    >>> submotion_line({"sub_motions": ["knees bend", "hips drop"]}), submotion_line({})
    ('Sub-motions: knees bend → hips drop', '(not given: decompose the motion yourself)')
    """
    subs = record.get("sub_motions")
    return format_submotions(subs) if subs else "(not given: decompose the motion yourself)"


# --------------------------------------------------------------------------------------------- teachers, judges
class TemplateTeacher:
    """The deterministic template teacher (see data_builders.template_teacher): it knows the label and reads
    the real pose reply; it does not look at the video."""

    name = "template"
    writes_sub_motions = False  # its fallback list is the template knowledge base's, not a decomposition

    def first_turn(self, record: dict, tools: list[dict], num_frames: int, frames: Any) -> str:
        return template_chain(record, num_frames)[0]

    def second_turn(self, record: dict, first: str, tool_texts: list[str], frames: Any) -> str:
        return template_reasoning(record, "\n".join(tool_texts))


class EndpointTeacher:
    """A teacher model behind an OpenAI-compatible endpoint; it sees a few of the frames."""

    writes_sub_motions = True  # its list becomes the sub_motions of a record that has none

    def __init__(self, client: ChatEndpoint, images: int = 4):
        self.client, self.images, self.name = client, images, client.name

    def _frames(self, frames: Any) -> list:
        if frames is None or not self.images:
            return []
        step = max(1, len(frames) // self.images)
        return list(frames[::step][: self.images])

    def first_turn(self, record: dict, tools: list[dict], num_frames: int, frames: Any) -> str:
        prompt = load_prompt("videostar_teacher_tools.txt").format(
            num_frames=num_frames,
            max_frame=num_frames - 1,
            question=record["prompt"],
            label=record["label"],
            sub_motions=submotion_line(record),
            tools=json.dumps(tools),
        )
        return self.client.chat([{"role": "user", "content": prompt}], self._frames(frames))

    def second_turn(self, record: dict, first: str, tool_texts: list[str], frames: Any) -> str:
        prompt = load_prompt("videostar_teacher_reason.txt").format(
            question=record["prompt"],
            label=record["label"],
            candidates=", ".join(record["candidates"]),
            sub_motions=submotion_line(record),
            sub_motion_instruction=INSTRUCTION,
            tool_outputs="\n\n".join(tool_texts),
        )
        return self.client.chat([{"role": "user", "content": prompt}], self._frames(frames))


def template_judge(record: dict, chain: list[str], tool_texts: list[str]) -> tuple[bool, str]:
    """The deterministic judge: every "frame i: n person/people" the chain states must match the pose replies.
    (The answer itself is checked for every judge, see `check_chain`.)"""
    truth = pose_counts("\n".join(tool_texts))
    for frame, n in re.findall(r"frame (\d+): (\d+) (?:person|people)", " ".join(chain)):
        if truth.get(int(frame)) != int(n):
            return False, f"the chain says frame {frame} has {n}, the tool reply says {truth.get(int(frame))}"
    return True, ""


class EndpointJudge:
    def __init__(self, client: ChatEndpoint):
        self.client, self.name = client, client.name

    def __call__(self, record: dict, chain: list[str], tool_texts: list[str]) -> tuple[bool, str]:
        prompt = load_prompt("videostar_judge.txt").format(
            label=record["label"], tool_outputs="\n\n".join(tool_texts), chain="\n\n".join(chain)
        )
        reply = self.client.chat([{"role": "user", "content": prompt}])
        start, end = reply.find("{"), reply.rfind("}")
        try:
            verdict = json.loads(reply[start : end + 1])
            keep = verdict["keep"]
        except (ValueError, KeyError, TypeError):
            raise Dropped("judge_unparsable", reply[:200]) from None
        return bool(keep), str(verdict.get("reason", ""))


def check_chain(record: dict, chain: list[str], tool_texts: list[str], judge: Any) -> list[str]:
    """The sub-motions the last turn lists; Dropped unless that turn answers the label, lists sub-motions (the
    reward's reader, `rewards.submotion.parse_submotions`) and the judge keeps the chain."""
    from rewards.submotion import parse_submotions

    answer = final_answer(chain[-1])
    if answer is None or "<think>" not in chain[-1]:
        raise Dropped("teacher_unparsable", "the last turn has no <think> or no <answer></answer>")
    if answer.strip().lower() != record["label"].strip().lower():
        raise Dropped("judge_wrong_answer", f"answer {answer!r}, label {record['label']!r}")
    listed = parse_submotions(chain[-1])
    if not listed:
        raise Dropped("teacher_no_submotions", "the last turn has no 'Sub-motions: a → b → ...' line")
    keep, reason = judge(record, chain, tool_texts)
    if not keep:
        category = "judge_contradicts_tools" if judge is template_judge else "judge_rejected"
        raise Dropped(category, reason)
    return listed


# ------------------------------------------------------------------------------------------------------- build
class ChainBuilder:
    """Builds one chain per record; tools are made once (`envs.make`) and reused."""

    def __init__(
        self,
        teacher: Any,
        judge: Any,
        tools: dict[str, dict],
        num_frames: int = 8,
        max_side: int = 112,
        max_response_tokens: int = 640,
    ):
        self.teacher, self.judge, self.tool_configs = teacher, judge, dict(tools)
        self.num_frames, self.max_side, self.max_response_tokens = num_frames, max_side, max_response_tokens
        self._tools: dict[str, Any] = {}
        self._tokenizer = None

    def tool(self, name: str):
        from envs.base import make

        if name not in self._tools:
            self._tools[name] = make(name, **self.tool_configs[name])
        return self._tools[name]

    def count_tokens(self, texts: list[str]) -> int:
        if self._tokenizer is None:
            from tokenizers import Tokenizer

            from common.tiny_model import qwen_tokenizer_dir

            self._tokenizer = Tokenizer.from_file(str(qwen_tokenizer_dir() / "tokenizer.json"))
        # each turn and tool reply also carries the chat format's few glue tokens
        return sum(len(self._tokenizer.encode(t).ids) + 4 for t in texts)

    def build(self, record: dict) -> dict:
        from envs.base import run_tool
        from envs.video import VideoDecodeError, read_video

        errors = validate_record(record)
        if errors or record.get("task") != "ovar":
            raise Dropped("bad_record", "; ".join(errors) or f"task {record.get('task')!r} is not ovar")
        try:
            video = read_video(record["video"], self.num_frames, record.get("clip"), self.max_side)
        except VideoDecodeError as err:
            raise Dropped("video_decode", str(err)) from None
        schemas = [self.tool(name).schema for name in self.tool_configs]
        first = self.teacher.first_turn(record, schemas, self.num_frames, video.frames)
        calls = parse_calls(first)
        if not calls:
            raise Dropped("teacher_unparsable", "the first turn calls no tool")
        tool_texts = []
        for call in calls:
            if call["name"] not in self.tool_configs:
                raise Dropped("teacher_unparsable", f"unknown tool {call['name']!r}")
            result = run_tool(self.tool(call["name"]), call["arguments"], video)
            if not result.ok:
                raise Dropped("teacher_unparsable", f"tool call failed: {result.text[:120]}")
            tool_texts.append(result.text)
        second = self.teacher.second_turn(record, first, tool_texts, video.frames)
        chain = [first.strip(), second.strip()]
        listed = check_chain(record, chain, tool_texts, self.judge)
        tokens = self.count_tokens(chain + tool_texts)
        if tokens > self.max_response_tokens:
            raise Dropped("too_long", f"{tokens} response tokens > {self.max_response_tokens}")
        judge_name = getattr(self.judge, "name", "template")
        cot = {"teacher": self.teacher.name, "judge": judge_name, "tool_calls": calls, "tool_responses": tool_texts}
        out = {**record, "chain": chain}
        if record.get("sub_motions"):
            cot["sub_motions"] = "record"
        elif getattr(self.teacher, "writes_sub_motions", False):
            out["sub_motions"], cot["sub_motions"] = listed, "teacher"
        return {**out, "meta": {**record.get("meta", {}), "cot": cot}}


def build(
    records_path: str | Path, out: str | Path, builder: ChainBuilder, resume: bool = True, progress: bool = True
) -> dict:
    """Run `builder` over every record of `records_path`, appending to `out`; returns the summary."""
    return build_resumable(
        records_path,
        out,
        lambda rec: [builder.build(rec)],
        "videostar chains",
        drop_on=(Dropped,),
        resume=resume,
        progress=progress,
    )


def _client(url: str, model: str, key_env: str) -> ChatEndpoint:
    return ChatEndpoint(url, model=model, api_key_env=key_env)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--records", required=True, help="input JSONL of ovar records")
    ap.add_argument("--out", required=True, help="output JSONL (records + chain); resumed when it exists")
    ap.add_argument("--teacher", default="template", help="'template' or an OpenAI-compatible base URL (.../v1)")
    ap.add_argument("--teacher-model", default="Qwen2.5-VL-72B-Instruct")
    ap.add_argument("--judge", default="template", help="'template' or an OpenAI-compatible base URL")
    ap.add_argument("--judge-model", default="Qwen2.5-VL-72B-Instruct")
    ap.add_argument("--api-key-env", default="OPENAI_API_KEY", help="environment variable holding the API key")
    ap.add_argument("--tools", default='{"pose_estimation": {}}', help="JSON {tool name: config}")
    ap.add_argument("--num-frames", type=int, default=8)
    ap.add_argument("--max-side", type=int, default=112)
    ap.add_argument("--max-response-tokens", type=int, default=640, help="rollout.max_response_tokens of the recipe")
    ap.add_argument("--no-resume", action="store_true", help="start over instead of resuming")
    args = ap.parse_args(argv)
    teacher = (
        TemplateTeacher()
        if args.teacher == "template"
        else EndpointTeacher(_client(args.teacher, args.teacher_model, args.api_key_env))
    )
    judge = (
        template_judge
        if args.judge == "template"
        else EndpointJudge(_client(args.judge, args.judge_model, args.api_key_env))
    )
    builder = ChainBuilder(
        teacher, judge, json.loads(args.tools), args.num_frames, args.max_side, args.max_response_tokens
    )
    summary = build(args.records, args.out, builder, resume=not args.no_resume)
    print_summary("videostar_cot", summary)
    return summary


if __name__ == "__main__":
    main()


def embedded_sft_records(records_path: str | Path, out_dir: Path, rollout: Any) -> Path:
    """The SFT recipes' embedded default: template-teacher chains through the real tools of `rollout` (a
    RolloutConfig: its tools, frames and response budget) for the records of `records_path`."""
    out = Path(out_dir) / "videostar_cot.jsonl"
    builder = ChainBuilder(
        TemplateTeacher(),
        template_judge,
        rollout.enabled_tools(),
        rollout.num_frames,
        rollout.max_side,
        rollout.max_response_tokens,
    )
    summary = build(records_path, out, builder, progress=False)
    print(f"[chains] {summary['kept_records']}/{summary['input_records']} kept, dropped {summary['dropped']}")
    return out
