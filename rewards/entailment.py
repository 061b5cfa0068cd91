"""GPS's semantic entailment reward: a judge model labels each ground-truth gold point as entailed (2), neutral (1)
or contradicted (0) by the model's description; the reward is ((Ne - Nc)/K + 1)/2 (`rewards.entailment_score`).

The description is the text inside the last `<answer>...</answer>` of the reply, or the whole reply when it
has no closed answer tag:

    <think>gold points: seated person; green bottle; lid turned clockwise</think>
    <answer>A seated person screws the lid onto a green bottle.</answer>

The judge is pluggable, chosen by the reward's `judge` argument (a dict; the judge is built once per process,
so once per reward worker, and reused for every batch):

    judge: {kind: openai, base_url: "http://judge:8000/v1", model: "Llama-3.3-70B-Instruct", api_key_env: JUDGE_KEY}
    judge: {kind: hf, model: /models/judge}                       # a local Hugging Face causal LM
    judge: {kind: hf, model: /models/smol, gguf_file: smol.gguf}  # ... or a GGUF file (needs gguf + accelerate)
    judge: {kind: lexical}                                        # word overlap, no model (embedded default only)
    judge: {kind: "my_pkg.judges:make_judge", ...}               # any factory returning a Judge

A judge is a callable `judge(prompts: list[str]) -> list[str]` (one reply per prompt). `mode` says how the gold
points are put to it:

  - "all" (the default, as the paper's evaluator): one prompt per description listing all its points (the template
    `prompts/semantic_entailment_all.txt`, placeholders `{description}` and `{gold_points}`, the points numbered),
    answered with one line per point, "N. [label] reason" (`parse_verdicts`). A reply that does not give one
    verdict for each listed point is malformed: every point of that description scores as failing (the value is
    0.0) and the sample counts as an error of this reward (see `semantic_entailment`); never a crash.
  - "each": one prompt per gold point (`prompts/semantic_entailment.txt`, placeholders `{description}` and
    `{gold_point}`), easier on small judges; a reply without a readable label counts as neutral (logged once).
"""

from __future__ import annotations

import importlib
import json
import logging
import os
import re
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from common.gps import numbered, parse_points
from rewards.helpers import entailment_score
from rewards.registry import register
from rewards.videostar import extract_answer

if TYPE_CHECKING:
    from rollout.trajectory import Trajectory

logger = logging.getLogger(__name__)

PROMPTS_DIR = Path(__file__).resolve().parent / "prompts"
MODES = ("all", "each")
PROMPT_FILES = {"all": PROMPTS_DIR / "semantic_entailment_all.txt", "each": PROMPTS_DIR / "semantic_entailment.txt"}
PROMPT_FILE = PROMPT_FILES["each"]
PLACEHOLDERS = {"all": ("{description}", "{gold_points}"), "each": ("{description}", "{gold_point}")}
NEUTRAL = 1
_BRACKETED = re.compile(r"\[\s*([012])\s*\]")
_WORD = re.compile(r"entail|neutral|contradict", re.IGNORECASE)
_DIGIT = re.compile(r"(?<![\d.])([012])(?!\d|\.\d)")
_WORD_LABEL = {"entail": 2, "neutral": 1, "contradict": 0}
_PLACEHOLDER = re.compile(r"\{description\}|\{gold_points?\}")
# a verdict line of a one-pass reply: "1. [2] reason", "**2)** contradiction: ...", "Point 3: [1]"
_VERDICT_LINE = re.compile(r"^\W*(?:(?:gold\s+)?(?:point|fact)\s*)?(\d{1,3})\s*[.):\]]\s*(.*)$", re.IGNORECASE)
_judges: dict[str, Callable[[list[str]], list[str]]] = {}
_unparsed_logged = False
_malformed_logged = False


class JudgeError(RuntimeError):
    """The judge could not be built or did not answer; the message never contains the API key."""


class MalformedJudgeReply(ValueError):
    """A one-pass judge reply without one verdict for each listed gold point (the sample scores 0, counted)."""


@dataclass
class Verdicts:
    """The judge's labels of one description's gold points, one per point; a malformed reply's are all 0."""

    labels: list[int]
    malformed: bool = False
    reply: str = ""


def load_prompt(path: str | Path | None = None, mode: str = "all") -> str:
    """The prompt template of `mode` (default `PROMPT_FILES[mode]`); ValueError naming the file when a placeholder
    of the mode is missing."""
    if mode not in MODES:
        raise ValueError(f"semantic_entailment: mode {mode!r} is not one of {', '.join(MODES)}")
    path = Path(path) if path else PROMPT_FILES[mode]
    if not path.is_file():
        raise FileNotFoundError(f"semantic_entailment: prompt file not found: {path}")
    template = path.read_text(encoding="utf-8")
    missing = [p for p in PLACEHOLDERS[mode] if p not in template]
    if missing:
        raise ValueError(f"semantic_entailment: prompt file {path} lacks the placeholder(s) {', '.join(missing)}")
    return template


def render_prompt(template: str, description: str, gold_point: str) -> str:
    """The template with `{description}` and `{gold_point}` filled in one pass (braces in either stay as they are).

    >>> render_prompt("D: {description} F: {gold_point}", "a {gold_point} b", "waves")
    'D: a {gold_point} b F: waves'
    """
    values = {"{description}": description, "{gold_point}": gold_point}
    return _PLACEHOLDER.sub(lambda m: values.get(m[0], m[0]), template)


def render_all(template: str, description: str, gold_points: Sequence[str]) -> str:
    """The one-pass template with `{description}` and `{gold_points}` (numbered, one per line) filled in one pass.

    >>> render_all("D: {description}\\nP:\\n{gold_points}", "a man sits", ["he sits", "he holds a cup"])
    'D: a man sits\\nP:\\n1. he sits\\n2. he holds a cup'
    """
    values = {"{description}": description, "{gold_points}": numbered(list(gold_points))}
    return _PLACEHOLDER.sub(lambda m: values.get(m[0], m[0]), template)


def parse_entailment_label(reply: Any) -> int | None:
    """The label of a judge's reply: the first bracketed `[0]`/`[1]`/`[2]`; else the first of the words
    entail(ment/s)/neutral/contradict(ion/s); else the first standalone digit 0-2; else None.

    >>> parse_entailment_label("[2] The description says so."), parse_entailment_label("Contradiction.")
    (2, 0)
    >>> parse_entailment_label("1"), parse_entailment_label("no idea") is None
    (1, True)
    """
    if not isinstance(reply, str):
        return None
    for pattern, read in ((_BRACKETED, int), (_WORD, lambda w: _WORD_LABEL[w.lower()]), (_DIGIT, int)):
        m = pattern.search(reply)
        if m is not None:
            return read(m[1] if m.groups() else m[0])
    return None


def _line_label(text: str) -> int | None:
    """The label of a verdict line's text: its first `[0]`/`[1]`/`[2]`, else its first label word (no bare digits:
    a reason may hold numbers)."""
    for pattern, read in ((_BRACKETED, int), (_WORD, lambda w: _WORD_LABEL[w.lower()])):
        m = pattern.search(text)
        if m is not None:
            return read(m[1] if m.groups() else m[0])
    return None


def parse_verdicts(reply: Any, k: int) -> list[int] | None:
    """The labels of points 1..k from a one-pass reply ("N. [label] reason" lines; numbered lines without a label,
    and numbers outside 1..k, are skipped), or None when a point has no verdict or two different ones.

    >>> parse_verdicts("1. [2] The man sits.\\n2. [0] He holds no cup.", 2)
    [2, 0]
    >>> parse_verdicts("**2)** Neutral: not said\\nPoint 1: entailment", 2)
    [2, 1]
    >>> parse_verdicts("1. [2] yes", 2) is None, parse_verdicts("1. [2]\\n1. [0]", 1) is None
    (True, True)
    """
    if not isinstance(reply, str):
        return None
    found: dict[int, int] = {}
    for line in reply.splitlines():
        m = _VERDICT_LINE.match(line)
        label = _line_label(m[2]) if m else None
        if label is None or not 1 <= int(m[1]) <= k:
            continue
        if found.setdefault(int(m[1]), label) != label:
            return None
    return [found[i] for i in range(1, k + 1)] if len(found) == k else None


class EndpointJudge:
    """A judge behind an OpenAI-compatible chat-completions endpoint (vLLM, SGLang, TGI, OpenAI, ...).

    POSTs `{base_url}/chat/completions` once per prompt (up to `max_concurrency` at a time), greedy. The API key
    is read from the environment variable named `api_key_env` at each call (never stored, logged or put in an
    error message); without one, no Authorization header is sent.
    """

    def __init__(
        self,
        base_url: str,
        model: str,
        api_key_env: str | None = None,
        timeout_s: float = 60.0,
        max_tokens: int = 512,
        max_concurrency: int = 8,
    ):
        if not isinstance(base_url, str) or not base_url.startswith(("http://", "https://")):
            raise ValueError(f"EndpointJudge: base_url must be an http(s) URL, got {base_url!r}")
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.model, self.api_key_env = model, api_key_env
        self.timeout_s, self.max_tokens, self.max_concurrency = timeout_s, max_tokens, max(1, int(max_concurrency))

    def _headers(self) -> dict[str, str]:
        if not self.api_key_env:
            return {}
        key = os.environ.get(self.api_key_env)
        if not key:
            raise JudgeError(f"EndpointJudge: environment variable {self.api_key_env!r} (the API key) is not set")
        return {"Authorization": f"Bearer {key}"}

    def _ask(self, client: Any, prompt: str) -> str:
        import httpx

        body = {
            "model": self.model,
            "messages": [{"role": "user", "content": prompt}],
            "temperature": 0.0,
            "max_tokens": self.max_tokens,
        }
        try:
            response = client.post(self.url, json=body, headers=self._headers())
        except httpx.HTTPError as e:
            raise JudgeError(f"judge endpoint {self.url}: {type(e).__name__}: {e}") from None
        if response.status_code != 200:
            raise JudgeError(f"judge endpoint {self.url} answered HTTP {response.status_code}: {response.text[:200]}")
        try:
            content = response.json()["choices"][0]["message"]["content"]
        except (ValueError, KeyError, IndexError, TypeError):
            raise JudgeError(f"judge endpoint {self.url}: not a chat completion: {response.text[:200]}") from None
        return content if isinstance(content, str) else ""

    def __call__(self, prompts: list[str]) -> list[str]:
        import httpx

        with httpx.Client(timeout=self.timeout_s) as client:
            if len(prompts) <= 1 or self.max_concurrency == 1:
                return [self._ask(client, p) for p in prompts]
            with ThreadPoolExecutor(max_workers=min(self.max_concurrency, len(prompts))) as pool:
                return list(pool.map(lambda p: self._ask(client, p), prompts))


class HFJudge:
    """A local Hugging Face causal LM with a chat template as the judge, greedy, on CPU unless `device` says.

    `model` is a folder (or anything `from_pretrained` takes offline); `gguf_file` names a GGUF file in it
    (transformers de-quantises it; needs the `gguf` package). Loaded once, when the judge is built.
    """

    def __init__(self, model: str, gguf_file: str | None = None, max_new_tokens: int = 256, device: str = "cpu"):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        extra = {"gguf_file": gguf_file} if gguf_file else {}
        self.tokenizer = AutoTokenizer.from_pretrained(model, **extra)
        self.model = AutoModelForCausalLM.from_pretrained(model, dtype=torch.float32, **extra).to(device).eval()
        self.device, self.max_new_tokens = device, int(max_new_tokens)

    def __call__(self, prompts: list[str]) -> list[str]:
        import torch

        replies = []
        for prompt in prompts:  # one at a time: no padding side to get right, and judges here are small
            enc = self.tokenizer.apply_chat_template(
                [{"role": "user", "content": prompt}],
                add_generation_prompt=True,
                return_tensors="pt",
                return_dict=True,
            ).to(self.device)
            with torch.no_grad():
                out = self.model.generate(
                    **enc,
                    max_new_tokens=self.max_new_tokens,
                    do_sample=False,
                    pad_token_id=self.tokenizer.eos_token_id,
                )
            replies.append(self.tokenizer.decode(out[0, enc["input_ids"].shape[1] :], skip_special_tokens=True))
        return replies


class LexicalJudge:
    """Word overlap standing in for a judge model: no model, no network, deterministic. NOT an entailment model: it
    is what the embedded default (a tiny random policy on a laptop) and smoke tests score with. It reads the
    description and the points back out of the default prompts of either mode; a point is [2] when at least
    `threshold` of its content words (3+ letters, not a stop word) are words of the description, else [1]; it never
    says [0], since overlap cannot tell a contradiction. A prompt it cannot read gets a reply without a label."""

    STOP = frozenset(
        "the and with his her him its their they them from into onto that this are was were has have "
        "for of person".split()
    )

    def __init__(self, threshold: float = 0.5):
        if not 0.0 < threshold <= 1.0:
            raise ValueError(f"LexicalJudge: threshold must be in (0, 1], got {threshold}")
        self.threshold = float(threshold)

    def _words(self, text: str) -> set[str]:
        return {w for w in re.findall(r"[a-z0-9]+", text.lower()) if len(w) >= 3 and w not in self.STOP}

    def _label(self, description: str, point: str) -> int:
        words = self._words(point)
        shared = len(words & self._words(description)) / len(words) if words else 0.0
        return 2 if shared >= self.threshold else NEUTRAL

    def __call__(self, prompts: list[str]) -> list[str]:
        return [self._reply(p) for p in prompts]

    def _reply(self, prompt: str) -> str:
        _, has_description, after = prompt.partition("Description:\n")
        if has_description and "\n\nGold points:\n" in after:  # the one-pass prompt
            description, _, rest = after.rpartition("\n\nGold points:\n")
            points = parse_points(rest.split("\n\n", 1)[0])
            return "\n".join(f"{i}. [{self._label(description, p)}] word overlap" for i, p in enumerate(points, 1))
        if has_description and "\n\nFact:\n" in after:  # the per-point prompt
            description, _, rest = after.rpartition("\n\nFact:\n")
            return f"[{self._label(description, rest.split(chr(10) + chr(10), 1)[0])}] word overlap"
        return "cannot read this prompt (LexicalJudge reads the default prompts only)"


def make_judge(spec: Mapping[str, Any]) -> Callable[[list[str]], list[str]]:
    """Build a judge from a `judge` argument: `kind` is "openai" (EndpointJudge), "hf" (HFJudge), "lexical"
    (LexicalJudge) or a dotted path "module:factory"; the other keys are the constructor's keyword arguments."""
    if not isinstance(spec, Mapping) or not isinstance(spec.get("kind"), str):
        raise ValueError(
            "semantic_entailment needs args.judge, a mapping with 'kind': 'openai' (base_url, model, api_key_env), "
            f"'hf' (model, gguf_file), 'lexical' or 'module:factory'; got {spec!r}"
        )
    kwargs = {k: v for k, v in spec.items() if k != "kind"}
    kind = spec["kind"]
    if kind == "openai":
        return EndpointJudge(**kwargs)
    if kind == "hf":
        return HFJudge(**kwargs)
    if kind == "lexical":
        return LexicalJudge(**kwargs)
    module, _, attr = kind.partition(":")
    if not module or not attr:
        raise ValueError(
            f"semantic_entailment: judge kind {kind!r} is not 'openai', 'hf', 'lexical' or 'module:factory'"
        )
    return getattr(importlib.import_module(module), attr)(**kwargs)


def get_judge(spec: Mapping[str, Any]) -> Callable[[list[str]], list[str]]:
    """The judge for `spec`, built on first use and cached for the life of the process."""
    key = json.dumps(spec, sort_keys=True, default=str)
    if key not in _judges:
        _judges[key] = make_judge(spec)
    return _judges[key]


def description_of(text: Any) -> str:
    """The description a reply gives: the last closed `<answer>` block, else the whole reply (stripped)."""
    text = text if isinstance(text, str) else ""
    answer = extract_answer(text)
    return answer if answer is not None else text.strip()


def gold_points_of(record: Any, max_points: int = 32) -> list[str] | None:
    """A record's gold points (the first `max_points`), or None when it has no non-empty list of strings."""
    gold = record.get("gold_points") if isinstance(record, dict) else None
    if not isinstance(gold, list) or not gold or not all(isinstance(g, str) for g in gold):
        return None
    return gold[:max_points]


def _label(reply: str) -> int:
    global _unparsed_logged
    label = parse_entailment_label(reply)
    if label is None:
        if not _unparsed_logged:  # a judge that does not follow the prompt is worth one line, not one per point
            _unparsed_logged = True
            logger.warning("semantic_entailment: judge reply without a label, counted neutral: %.200r", reply)
        return NEUTRAL
    return label


def _one_pass(reply: str, k: int) -> Verdicts:
    global _malformed_logged
    labels = parse_verdicts(reply, k)
    if labels is not None:
        return Verdicts(labels)
    if not _malformed_logged:
        _malformed_logged = True
        logger.warning("semantic_entailment: judge reply without a verdict for each of %d points: %.300r", k, reply)
    return Verdicts([0] * k, malformed=True, reply=str(reply)[:300])


def judge_points(
    descriptions: Sequence[str],
    golds: Sequence[list[str] | None],
    judge: Mapping[str, Any] | None,
    mode: str = "all",
    prompt_file: str | None = None,
) -> list[Verdicts | None]:
    """The judge's verdicts on each description's gold points (None where a sample has none), in one judge call:
    one prompt per description ("all") or per point ("each"). See the module docstring for malformed replies."""
    template = load_prompt(prompt_file, mode)
    prompts, owners = [], []
    for i, (description, gold) in enumerate(zip(descriptions, golds, strict=True)):
        if not gold:
            continue
        if mode == "all":
            prompts.append(render_all(template, description, gold))
        else:
            prompts.extend(render_prompt(template, description, point) for point in gold)
        owners.extend([i] if mode == "all" else [i] * len(gold))
    out: list[Verdicts | None] = [Verdicts([]) if gold else None for gold in golds]
    if not prompts:
        return out
    replies = get_judge(judge)(prompts)
    if len(replies) != len(prompts):
        raise JudgeError(f"semantic_entailment: the judge returned {len(replies)} replies for {len(prompts)} prompts")
    for owner, reply in zip(owners, replies):
        if mode == "all":
            out[owner] = _one_pass(reply, len(golds[owner]))
        else:
            out[owner].labels.append(_label(reply))
    return out


@register("semantic_entailment", batched=True)
def semantic_entailment(
    trajs: Sequence[Trajectory],
    records: Sequence[dict],
    judge: Mapping[str, Any] | None = None,
    prompt_file: str | None = None,
    max_points: int = 32,
    mode: str = "all",
) -> list[float | MalformedJudgeReply | None]:
    """GPS's semantic entailment score of each trajectory's description against its record's `gold_points`.

    Reads: the description (see the module docstring) and `record["gold_points"]` (a non-empty list of
    strings; at most `max_points` are judged). One judge call per batch: one prompt per sample (`mode` "all", the
    paper's evaluator) or per (sample, gold point) ("each"). The value is `entailment_score` of the labels, in
    [0, 1]; None for a record without gold points. A sample whose one-pass reply is malformed gets a
    `MalformedJudgeReply` in place of its value, which the reward combiner scores 0.0 (every point failing) and
    counts as this reward's error for that sample alone. A judge that cannot be built or fails raises, which scores
    the whole batch 0.0 (counted as this reward's errors).
    """
    golds = [gold_points_of(rec, max_points) for rec in records]
    verdicts = judge_points(
        [description_of(getattr(t, "final_text", "")) for t in trajs], golds, judge, mode, prompt_file
    )
    return [
        None
        if v is None
        else MalformedJudgeReply(f"no verdict for each of {len(v.labels)} gold points: {v.reply[:200]!r}")
        if v.malformed
        else entailment_score(v.labels)
        for v in verdicts
    ]
