"""The action knowledge base behind the `action_explanation` tool: one definition per action, decomposed into
transitional phases ("stand: transit from sitting or lying to standing"), stored as JSONL with its embeddings.

Labels come from dataset class lists (HMDB-51, UCF-101, Kinetics-400/700, SSv2, read from gluoncv's files), from
records (their `label`, and their `sub_motions` as phases when given) and from plain text files (one label a line).
Definitions are written by one of two writers, and every entry says which:
  - "template" (default, offline, deterministic): phase templates for common movement verbs, a generic
    get-ready / main movement / finish decomposition otherwise. It is a template writer, not a knowledgeable one.
  - "llm": a model behind an OpenAI-compatible endpoint writes each definition once; a reply that is not the JSON
    asked for falls back to the template for that label, and the count is printed.

    python -m data_builders.action_kb --out kb.jsonl --lists hmdb51 ucf101
    python -m data_builders.action_kb --out kb.jsonl --lists kinetics400 --writer llm \\
        --endpoint http://localhost:8000/v1 --model Qwen2.5-7B-Instruct --api-key-env VLLM_API_KEY

Next to `kb.jsonl` it writes `kb.npy` (all-MiniLM-L6-v2 embeddings of each entry's search text) unless
`--no-embed`; the tool embeds at load time when the file is missing or stale.
"""

from __future__ import annotations

import argparse
import functools
import json
import re
import sys
from typing import Any

from common.action_kb import build_kb, collect_labels
from common.class_lists import GLUONCV_DATASETS, readable

LLM_PROMPT = (
    "Define the human action '{action}' for someone watching a video. Decompose it into 2-5 transitional phases, "
    'each a short clause describing body movement. Reply with JSON only: {{"definition": "<one sentence>", '
    '"phases": ["<phase>", ...]}}'
)


def llm_entry(client: Any, label: str) -> dict[str, Any] | None:
    """One definition written by the endpoint's model, or None when its reply is not the JSON asked for."""
    action = readable(label)
    text = client.chat([{"role": "user", "content": LLM_PROMPT.format(action=action)}], max_tokens=300)
    match = re.search(r"\{.*\}", text, re.DOTALL)
    try:
        obj = json.loads(match.group(0)) if match else None
    except json.JSONDecodeError:
        obj = None
    if not isinstance(obj, dict) or not isinstance(obj.get("definition"), str):
        return None
    phases = obj.get("phases")
    if not isinstance(phases, list) or not phases or not all(isinstance(p, str) for p in phases):
        return None
    definition = obj["definition"].strip()
    if not definition.lower().startswith(action):
        definition = f"{action}: {definition}"
    return {
        "action": action,
        "label": label,
        "definition": definition,
        "phases": [p.strip() for p in phases[:8]],
        "writer": f"llm:{client.model}",
    }


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--out", required=True, help="the knowledge-base JSONL to write (embeddings go beside it)")
    p.add_argument("--lists", nargs="*", default=[], choices=sorted(GLUONCV_DATASETS), help="gluoncv class lists")
    p.add_argument("--records", nargs="*", default=[], help="record JSONL files (labels and sub_motions)")
    p.add_argument("--labels", nargs="*", default=[], help="text files, one label a line")
    p.add_argument("--writer", default="template", choices=("template", "llm"))
    p.add_argument("--endpoint", default="", help="OpenAI-compatible base URL (for --writer llm), e.g. .../v1")
    p.add_argument("--model", default="", help="model name at the endpoint")
    p.add_argument("--api-key-env", default="", help="environment variable holding the endpoint key (if any)")
    p.add_argument("--no-embed", action="store_true", help="do not write the embeddings file")
    a = p.parse_args(argv)
    labels = collect_labels(a.lists, a.records, a.labels)
    if not labels:
        p.error("no labels: give --lists, --records or --labels")
    llm_writer = None
    if a.writer == "llm":
        if not a.endpoint or not a.model:
            p.error("--writer llm needs --endpoint and --model")
        from common.openai_compat import ChatClient

        llm_writer = functools.partial(llm_entry, ChatClient(a.endpoint, a.model, api_key_env=a.api_key_env))
    build_kb(labels, a.out, writer=a.writer, llm_writer=llm_writer, embed=not a.no_embed)


if __name__ == "__main__":
    main(sys.argv[1:])
