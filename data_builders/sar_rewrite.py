"""An LLM rewrite of the prose of template SAR targets, as HieroAction polishes its chains: "we use large language
models (e.g., GPT) to paraphrase and polish the explanations without changing their meaning".

The model behind an OpenAI-compatible endpoint (`data_builders.endpoint.ChatEndpoint`) is given the `<look>`,
`<recognition>` and `<assessment>` blocks of a template target (`recipes/prompts/hieroaction_sar_rewrite.txt`) and
answers them rewritten. The `<answer>` block is never sent to be rewritten: the result is the rewritten blocks and
the template's `<answer>` block, byte for byte. A rewrite is refused, and the template target kept, when:

    endpoint_error   the endpoint failed: HTTP error, unreachable, timed out, or a reply without a message
    missing_block    the reply lacks one of the three blocks, leaves one empty, repeats one or changes their order
    extra_tags       the reply holds another tag anywhere (<answer>, <think>, ...)
    new_numbers      the prose states a number the template's prose does not (a time, score or count made up)
    too_long         the rewritten target is over the builder's token budget (`--max-tokens`)

Text the model writes outside the blocks ("Here is the rewrite:") is left out.

    rewriter = SarRewriter(rewriter_client("http://host:8000/v1", "Qwen2.5-72B-Instruct", api_key_env="KEY"))
    text, failure = rewriter.rewrite(sar_target(record))     # failure None: rewritten; else why it was not
"""

from __future__ import annotations

import re
from collections import Counter
from http.client import HTTPException
from pathlib import Path
from typing import Any

from data_builders.endpoint import ChatEndpoint, EndpointError, load_prompt, read_input

PROSE_TAGS = ("look", "recognition", "assessment")
PROMPT_FILE = "hieroaction_sar_rewrite.txt"
TEMPERATURE = 0.7  # a paraphrase should vary in wording from one target to the next
_TAG = re.compile(r"</?[A-Za-z_][\w-]*>")
_NUMBER = re.compile(r"\d+(?:\.\d+)?")
FAILURES = ("endpoint_error", "missing_block", "extra_tags", "new_numbers", "too_long")


def split_target(text: str) -> tuple[str, str]:
    """(the prose blocks, the `<answer>` block to the end) of an SAR target.

    >>> split_target("<look>a</look>\\n<answer>{}</answer>")
    ('<look>a</look>\\n', '<answer>{}</answer>')
    """
    at = text.rfind("<answer>")
    if at < 0:
        raise ValueError("an SAR target ends with an <answer> block")
    return text[:at], text[at:]


def numbers(text: str) -> set[float]:
    """The numbers written in `text`, as values (so "0.40" and "0.4" are one).

    >>> sorted(numbers("Phase 2: entry, 1.20-1.50 s; score 81.5 of 100"))
    [1.2, 1.5, 2.0, 81.5, 100.0]
    """
    return {float(x) for x in _NUMBER.findall(text)}


def check_rewrite(reply: str, prose: str) -> tuple[str | None, str | None]:
    """(the three blocks of `reply`, one per line, None) when it is a usable rewrite of the template `prose`; else
    (None, the failure reason). Text outside the blocks is left out; a tag anywhere but the six is refused.

    >>> check_rewrite("Sure:<look>A diver.</look><recognition>Take-off.</recognition><assessment>Clean.</assessment>",
    ...               "<look>a diver</look>")
    ('<look>A diver.</look>\\n<recognition>Take-off.</recognition>\\n<assessment>Clean.</assessment>\\n', None)
    >>> check_rewrite("<look>x</look><assessment>y</assessment>", "")
    (None, 'missing_block')
    """
    blocks, inner, pos = [], [], 0
    for tag in PROSE_TAGS:
        opening, closing = f"<{tag}>", f"</{tag}>"
        start, end = reply.find(opening), reply.find(closing)
        if reply.count(opening) != 1 or reply.count(closing) != 1 or start < pos or end < start:
            return None, "missing_block"
        inner.append(reply[start + len(opening) : end])
        blocks.append(reply[start : end + len(closing)])
        pos = end + len(closing)
    if not all(x.strip() for x in inner):
        return None, "missing_block"
    if len(_TAG.findall(reply)) != 2 * len(PROSE_TAGS):
        return None, "extra_tags"
    if not numbers("".join(inner)) <= numbers(prose):
        return None, "new_numbers"
    return "".join(b + "\n" for b in blocks), None


def rewriter_client(
    base_url: str, model: str, api_key_env: str, timeout_s: float = 120.0, max_tokens: int = 3072
) -> ChatEndpoint:
    """The endpoint client of a rewrite: the builders' `ChatEndpoint`, sampling at `TEMPERATURE`, answering at most
    `max_tokens` (the builder's target budget)."""
    return ChatEndpoint(
        base_url,
        model=model,
        api_key_env=api_key_env,
        timeout_s=timeout_s,
        temperature=TEMPERATURE,
        max_tokens=max_tokens,
    )


class SarRewriter:
    """Rewrites the prose blocks of SAR targets with `client`; thread-safe (one stateless request per target)."""

    def __init__(self, client: ChatEndpoint, prompt: str | None = None):
        self.client = client
        self.prompt = prompt if prompt is not None else load_prompt(PROMPT_FILE)

    def check(self) -> None:
        """One request, so that a wrong URL, model or key stops the build before any target falls back to its
        template. Raises EndpointError (or ValueError on a reply without a message)."""
        self.client.chat([{"role": "user", "content": "Reply with the word ready."}])

    def rewrite(self, target: str) -> tuple[str, str | None]:
        """(the rewritten target, None), or (`target` unchanged, the failure reason) when the rewrite is refused."""
        prose, answer = split_target(target)
        try:
            reply = self.client.chat([{"role": "user", "content": self.prompt.replace("{blocks}", prose.strip())}])
        except (EndpointError, ValueError, OSError, HTTPException):  # also a connection dropped mid-reply
            return target, "endpoint_error"
        blocks, failure = check_rewrite(reply, prose)
        return (target, failure) if blocks is None else (blocks + answer, None)


def rewrite_summary(out: str | Path) -> dict[str, Any]:
    """Of the records in the builder's output `out` (this run's and any resumed run's): how many carry a rewritten
    target, and how many kept their template, by failure reason (`meta.sar_rewritten`, `meta.sar_rewrite_failure`).
    """
    metas = [row.get("meta", {}) for _, row in read_input(out) if isinstance(row, dict)]
    metas = [m for m in metas if "sar_rewritten" in m]
    kept = Counter(m.get("sar_rewrite_failure", "unknown") for m in metas if not m["sar_rewritten"])
    return {"rewritten": len(metas) - sum(kept.values()), "template": dict(sorted(kept.items()))}


def print_rewrite(counts: dict[str, Any], name: str) -> None:
    """The rewrite counts, one line (after the builder's summary)."""
    kept = ", ".join(f"{k}: {v}" for k, v in counts["template"].items()) or "none"
    total = counts["rewritten"] + sum(counts["template"].values())
    print(f"[hieroaction_sar] rewritten by {name}: {counts['rewritten']} of {total}; template kept: {kept}")
