"""The `action_explanation` tool: definitions of actions, decomposed into transitional phases, by retrieval.

The knowledge base is a JSONL file written by the builder named in common/action_kb.py (with its all-MiniLM-L6-v2
embeddings beside it); `kb="embedded"` builds the default one (template definitions of the HMDB-51, UCF-101 and
sample-data labels) once into the cache. A query is an action name or free text; its top-k definitions by cosine
similarity come back, an exact name match first:

    'ride bike':
      1. ride bike (1.00): ride bike: sit on or mount the bike, then keep balance while it moves forward, ...

No network: the embedder is a local model, and the KB is a local file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from envs.base import ToolArgumentError, ToolResult, Video

MAX_QUERIES = 5


def _norm(text: str) -> str:
    return " ".join(text.lower().replace("_", " ").split())


class ActionExplanationTool:
    name = "action_explanation"

    def __init__(self, kb: str = "embedded", top_k: int = 2, max_k: int = 5):
        from common.action_kb import build_default_kb, load_kb, search_text
        from common.embeddings import embed

        path = build_default_kb() if kb == "embedded" else Path(kb)
        if not path.is_file():
            raise FileNotFoundError(
                f"action knowledge base not found: {path} (build it with the builder named in common/action_kb.py)"
            )
        self.kb_path, self.entries = str(path), load_kb(path)
        vectors_path = path.with_suffix(".npy")
        vectors = np.load(vectors_path) if vectors_path.is_file() else None
        if vectors is None or vectors.shape[0] != len(self.entries):  # missing or stale: embed now
            vectors = embed([search_text(e) for e in self.entries])
        self.vectors = vectors.astype(np.float32)
        self._embed = embed
        self._by_name = {_norm(e["action"]): k for k, e in enumerate(self.entries)}
        self.top_k, self.max_k = top_k, max_k
        self.schema = {
            "type": "function",
            "function": {
                "name": self.name,
                "description": (
                    "Definitions of actions as phases of movement, for action names or a movement described in words."
                ),
                "parameters": {
                    "type": "object",
                    "properties": {
                        "actions": {
                            "type": "array",
                            "description": "action names to define",
                            "items": {"type": "string", "minLength": 1, "maxLength": 80},
                            "minItems": 1,
                            "maxItems": MAX_QUERIES,
                        },
                        "query": {
                            "type": "string",
                            "description": "a movement described in words",
                            "minLength": 1,
                            "maxLength": 300,
                        },
                        "top_k": {
                            "type": "integer",
                            "description": f"definitions per name or query (default {top_k})",
                            "minimum": 1,
                            "maximum": max_k,
                        },
                    },
                    "additionalProperties": False,
                },
            },
        }

    def _queries(self, args: dict[str, Any]) -> list[str]:
        queries = list(args.get("actions", [])) + ([args["query"]] if "query" in args else [])
        if not queries:
            raise ToolArgumentError("give 'actions' (a list of action names) or 'query' (a movement in words)")
        return queries

    def search(self, queries: list[str], k: int) -> list[list[tuple[int, float]]]:
        """Per query, the top-k (entry index, cosine similarity); an exact name match ranks first."""
        sims = self._embed(queries) @ self.vectors.T if queries else np.zeros((0, len(self.entries)))
        out = []
        for q, row in zip(queries, sims):
            exact = self._by_name.get(_norm(q))
            if exact is not None:
                row = row.copy()
                row[exact] = max(1.0, float(row[exact]))
            top = np.argsort(-row, kind="stable")[:k]
            out.append([(int(i), float(row[i])) for i in top])
        return out

    def _render(self, queries: list[str], hits: list[list[tuple[int, float]]]) -> ToolResult:
        lines, data = [], []
        for q, found in zip(queries, hits):
            lines.append(f"{q!r}:")
            for rank, (i, score) in enumerate(found, 1):
                e = self.entries[i]
                lines.append(f"  {rank}. {e['action']} ({score:.2f}): {e['definition']}")
            data.append({"query": q, "results": [{**self.entries[i], "score": s} for i, s in found]})
        return ToolResult(text="\n".join(lines), data={"queries": data, "kb": Path(self.kb_path).name})

    def call(self, args: dict[str, Any], video: Video | None = None) -> ToolResult:
        queries = self._queries(args)
        return self._render(queries, self.search(queries, int(args.get("top_k", self.top_k))))

    def call_batch(self, calls: list[tuple[dict[str, Any], Any]]) -> list[ToolResult | Exception]:
        """Many calls, one embedding pass over all their queries."""
        plans: list[list[str] | Exception] = []
        for args, _ in calls:
            try:
                plans.append(self._queries(args))
            except ToolArgumentError as exc:
                plans.append(exc)
        flat = [q for p in plans if not isinstance(p, Exception) for q in p]
        k_max = max((int(a.get("top_k", self.top_k)) for a, _ in calls), default=self.top_k)
        hits = iter(self.search(flat, k_max))
        out: list[ToolResult | Exception] = []
        for (args, _), plan in zip(calls, plans):
            if isinstance(plan, Exception):
                out.append(plan)
                continue
            k = int(args.get("top_k", self.top_k))
            out.append(self._render(plan, [next(hits)[:k] for _ in plan]))
        return out
