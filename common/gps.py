"""Gold Points Sniper (GPS): the prompts of the four roles one VLM plays, and readers of their replies.

Shared by the SFT role records (`data_builders.gps_roles`, what the model is trained on), the gold points annotator
(`data_builders.gold_points`) and the staged inference of the evaluation (`eval.gps`), so that a fine-tuned model
is asked at inference exactly what it was trained to answer.

  gold_points   extract the key details                          reply: "Gold points:\\n1. ...\\n2. ..."
  validation    are these points accurate and sufficient?         reply: "yes" / "no"
  socratic      (after a "no") question yourself and answer       reply: "Q: ...\\nA: ..." pairs
  description   describe, given the points (and the Q&A pairs)    reply: one paragraph

`NO_POINTS_PROMPTS` are the inference-only forms of the last three for when there are no points.

`GENERIC_PROMPT` is the paper's baseline prompt (Table I), the one the "+Finetuning" row is evaluated with.
"""

from __future__ import annotations

import re

ROLE_PROMPTS = {
    "gold_points": "List the gold points of this video: the key details of the person's action, intention and "
    "context, one per line.",
    "validation": "Are these gold points accurate and sufficient to understand the person's action, intention and "
    "context? Answer yes or no.\n{points}",
    "socratic": "These gold points are not sufficient:\n{points}\nAsk yourself questions about what is missing or "
    "wrong, and answer them from the video.",
    "description": "Gold points:\n{points}\n{qa}Describe the person's action, intention and context in detail.",
}

# The role prompts when there are no gold points (GPS's Table III "w/o GPE" ablation, or an extraction nothing was
# read from): never trained on, as no SFT record lacks its points; each is its trained prompt without the list (and
# without the words that point at it), so that it reads naturally. The description's is its trained closing sentence.
NO_POINTS_PROMPTS = {
    "validation": "Is what the video shows sufficient to understand the person's action, intention and context? "
    "Answer yes or no.",
    "socratic": "Ask yourself questions about the person's action, intention and context, and answer them from the "
    "video.",
    "description": "{qa}Describe the person's action, intention and context in detail.",
}

# Table I of the GPS paper: the generic prompt of the baseline and "+Finetuning" rows.
GENERIC_PROMPT = (
    "Please offer a visually grounded summarizing description of the ongoing human action, as well as the "
    "associated intention and context. Reasoning supported by reliable external knowledge and visual details is "
    "permitted. Also be sure to leverage the temporal changes in the frames and state the recognized action "
    "(including the interacted objects if possible) with one sentence at last."
)

_QA = re.compile(r"^\s*Q:\s*(.+?)\s*\n\s*A:\s*(.+?)\s*$", re.MULTILINE)
_BULLET = re.compile(r"^\s*(?:\(?\d{1,3}[.):]|[-*\u2022])\s*")
_HEADER = re.compile(r"^\s*(?:\*\*)?(?:ground[- ]truth\s+)?gold points?(?:\*\*)?\s*:?\s*(?:\*\*)?\s*$", re.I)
_YES_NO = re.compile(r"\b(yes|no)\b", re.IGNORECASE)


def numbered(points: list[str]) -> str:
    """
    >>> numbered(["a person sits", "holds a cup"])
    '1. a person sits\\n2. holds a cup'
    """
    return "\n".join(f"{i}. {p}" for i, p in enumerate(points, 1))


def parse_qa(text: str) -> list[dict[str, str]]:
    """Q/A pairs from "Q: ...\\nA: ..." lines.

    >>> parse_qa("Q: What is held?\\nA: A cup.\\nnoise\\nQ: Where?\\nA: At a table.")
    [{'q': 'What is held?', 'a': 'A cup.'}, {'q': 'Where?', 'a': 'At a table.'}]
    """
    return [{"q": q, "a": a} for q, a in _QA.findall(text)]


def qa_text(pairs: list[dict[str, str]]) -> str:
    """Q/A pairs as the description prompt lists them: one "Q: ...\\nA: ...\\n" block each (empty for none).

    >>> qa_text([{"q": "Where?", "a": "At a desk."}])
    'Q: Where?\\nA: At a desk.\\n'
    """
    return "".join(f"Q: {p['q']}\nA: {p['a']}\n" for p in pairs)


def parse_points(text: str) -> list[str]:
    """The points of a gold points list: one per non-blank line, without a "Gold points:" header line, numbering
    ("1." "2)" "(3)") or bullets ("-" "*"); text that is not a list gives its lines as they are.

    >>> parse_points("Gold points:\\n1. A man sits.\\n2) He holds a cup.\\n\\n- The cup is red.")
    ['A man sits.', 'He holds a cup.', 'The cup is red.']
    >>> parse_points("  ")
    []
    """
    out = []
    for line in text.splitlines():
        if not line.strip() or _HEADER.match(line):
            continue
        point = _BULLET.sub("", line, count=1).strip().strip("*").strip()
        if point:
            out.append(point)
    return out


def parse_yes_no(text: str) -> bool | None:
    """A validation reply read as True ("yes"), False ("no") or None (neither word): the first of the two words.

    >>> parse_yes_no("Yes, they are."), parse_yes_no("No. Yes would be wrong."), parse_yes_no("unsure")
    (True, False, None)
    """
    m = _YES_NO.search(text or "")
    return None if m is None else m[1].lower() == "yes"
