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
    judge: {kind: "my_pkg.judges:make_judge", ...}               # any factory returning a Judge

A judge is a callable `judge(prompts: list[str]) -> list[str]` (one reply per prompt). Each gold point is
judged in its own prompt (the template `prompts/semantic_entailment.txt`, or `prompt_file`), with placeholders
`{description}` and `{gold_point}`, which is easier on small judges than labelling a whole list at once.
"""

from __future__ import annotations

import importlib
import json
import logging
import os
import re
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rewards.helpers import entailment_score
from rewards.registry import register
from rewards.videostar import extract_answer

if TYPE_CHECKING:
    from rollout.trajectory import Trajectory

logger = logging.getLogger(__name__)

PROMPT_FILE = Path(__file__).resolve().parent / "prompts" / "semantic_entailment.txt"
PLACEHOLDERS = ("{description}", "{gold_point}")
NEUTRAL = 1
_BRACKETED = re.compile(r"\[\s*([012])\s*\]")
_WORD = re.compile(r"entail|neutral|contradict", re.IGNORECASE)
_DIGIT = re.compile(r"(?<![\d.])([012])(?!\d|\.\d)")
_WORD_LABEL = {"entail": 2, "neutral": 1, "contradict": 0}
_PLACEHOLDER = re.compile(r"\{description\}|\{gold_point\}")
_judges: dict[str, Callable[[list[str]], list[str]]] = {}
_unparsed_logged = False


class JudgeError(RuntimeError):
    """The judge could not be built or did not answer; the message never contains the API key."""


def load_prompt(path: str | Path | None = None) -> str:
    """The prompt template (default `PROMPT_FILE`); ValueError naming the file when a placeholder is missing."""
    path = Path(path) if path else PROMPT_FILE
    if not path.is_file():
        raise FileNotFoundError(f"semantic_entailment: prompt file not found: {path}")
    template = path.read_text(encoding="utf-8")
    missing = [p for p in PLACEHOLDERS if p not in template]
    if missing:
        raise ValueError(f"semantic_entailment: prompt file {path} lacks the placeholder(s) {', '.join(missing)}")
    return template


def render_prompt(template: str, description: str, gold_point: str) -> str:
    """The template with `{description}` and `{gold_point}` filled in one pass (braces in either stay as they are).

    >>> render_prompt("D: {description} F: {gold_point}", "a {gold_point} b", "waves")
    'D: a {gold_point} b F: waves'
    """
    values = {"{description}": description, "{gold_point}": gold_point}
    return _PLACEHOLDER.sub(lambda m: values[m[0]], template)


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
        max_tokens: int = 64,
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

    def __init__(self, model: str, gguf_file: str | None = None, max_new_tokens: int = 16, device: str = "cpu"):
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


def make_judge(spec: Mapping[str, Any]) -> Callable[[list[str]], list[str]]:
    """Build a judge from a `judge` argument: `kind` is "openai" (EndpointJudge), "hf" (HFJudge) or a dotted path
    "module:factory"; the other keys are the constructor's keyword arguments."""
    if not isinstance(spec, Mapping) or not isinstance(spec.get("kind"), str):
        raise ValueError(
            "semantic_entailment needs args.judge, a mapping with 'kind': 'openai' (base_url, model, api_key_env), "
            f"'hf' (model, gguf_file) or 'module:factory'; got {spec!r}"
        )
    kwargs = {k: v for k, v in spec.items() if k != "kind"}
    kind = spec["kind"]
    if kind == "openai":
        return EndpointJudge(**kwargs)
    if kind == "hf":
        return HFJudge(**kwargs)
    module, _, attr = kind.partition(":")
    if not module or not attr:
        raise ValueError(f"semantic_entailment: judge kind {kind!r} is not 'openai', 'hf' or 'module:factory'")
    return getattr(importlib.import_module(module), attr)(**kwargs)


def get_judge(spec: Mapping[str, Any]) -> Callable[[list[str]], list[str]]:
    """The judge for `spec`, built on first use and cached for the life of the process."""
    key = json.dumps(spec, sort_keys=True, default=str)
    if key not in _judges:
        _judges[key] = make_judge(spec)
    return _judges[key]


def _description(traj: Any) -> str:
    text = getattr(traj, "final_text", None)
    text = text if isinstance(text, str) else ""
    answer = extract_answer(text)
    return answer if answer is not None else text.strip()


def _gold_points(record: Any, max_points: int) -> list[str] | None:
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


@register("semantic_entailment", batched=True)
def semantic_entailment(
    trajs: Sequence[Trajectory],
    records: Sequence[dict],
    judge: Mapping[str, Any] | None = None,
    prompt_file: str | None = None,
    max_points: int = 32,
) -> list[float | None]:
    """GPS's semantic entailment score of each trajectory's description against its record's `gold_points`.

    Reads: the description (see the module docstring) and `record["gold_points"]` (a non-empty list of
    strings; at most `max_points` are judged). One judge call per batch, one prompt per (sample, gold point).
    A reply without a readable label (see `parse_entailment_label`) counts as neutral (logged once). The value is
    `entailment_score` of the labels, in [0, 1]; None for a record without gold points. A judge that cannot be
    built or fails raises, which scores the whole batch 0.0 (counted as this reward's errors).
    """
    template = load_prompt(prompt_file)
    golds = [_gold_points(rec, max_points) for rec in records]
    prompts, owners = [], []
    for i, (traj, gold) in enumerate(zip(trajs, golds)):
        description = _description(traj)
        for point in gold or []:
            prompts.append(render_prompt(template, description, point))
            owners.append(i)
    if not prompts:
        return [None] * len(trajs)
    replies = get_judge(judge)(prompts)
    if len(replies) != len(prompts):
        raise JudgeError(f"semantic_entailment: the judge returned {len(replies)} replies for {len(prompts)} prompts")
    labels: list[list[int]] = [[] for _ in trajs]
    for owner, reply in zip(owners, replies):
        labels[owner].append(_label(reply))
    return [entailment_score(lab) if gold else None for lab, gold in zip(labels, golds)]
