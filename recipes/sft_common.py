"""The pieces the SFT recipes share: chain records, their replay into trajectories, evaluation, the loss plot.

An SFT record is a sample record (data_builders/schema.py) plus `chain`: the assistant turns a builder wrote
(`data_builders.videostar_cot`, `.hieroaction_sar`, `.gps_roles`). The recipe replays each chain on a rollout
worker (`RolloutWorker.replay`): the turns are tokenised exactly as a rollout's, and a turn that calls a tool is
followed by the real tool's reply. So SFT trains on the token layout GRPO samples, with the tool replies masked.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

from recipes.config import ConfigError

IM_END = "<|im_end|>"
TURN_ENDS = ("</answer>", "</tool_call>")  # a rollout stops a turn there; any other turn ends with <|im_end|>


def load_chain_records(path: str) -> list[dict]:
    """Schema-valid records that each carry a non-empty `chain` of strings (ConfigError naming the file, line
    and id of the first that does not)."""
    from data_builders.schema import load_records

    records = load_records(path)
    for i, rec in enumerate(records, 1):
        chain = rec.get("chain")
        if not (isinstance(chain, list) and chain and all(isinstance(t, str) and t.strip() for t in chain)):
            raise ConfigError(
                f"{path}: record {i} ({rec['id']!r}) has no 'chain' (a list of assistant turns): "
                "build SFT records with python -m data_builders.videostar_cot / hieroaction_sar / gps_roles"
            )
    if not records:
        raise ConfigError(f"data.train: no records in {path}")
    return records


def script_of(chain: list[str]) -> list[str]:
    """The turns as the model must write them: a turn that a stop string does not end gets <|im_end|>, so the
    model learns to end it (an answer or a tool call is stopped by the rollout's stop strings).

    >>> script_of(["<tool_call>{}</tool_call>", "a description"])
    ['<tool_call>{}</tool_call>', 'a description<|im_end|>']
    """
    return [t if t.rstrip().endswith(TURN_ENDS) or t.rstrip().endswith(IM_END) else t + IM_END for t in chain]


def replay_chains(workers: list, records: list[dict], max_new_tokens: int) -> tuple[list, dict[str, int]]:
    """Trajectories of the chains (real tools answering their calls), and the counts of what was dropped: a
    video that does not decode, or a conversation longer than the response budget ("length")."""
    import ray

    from rollout.engine import SamplingParams

    sampling = SamplingParams(max_new_tokens=max_new_tokens)
    scripts = [script_of(r["chain"]) for r in records]
    parts = [(records[i :: len(workers)], scripts[i :: len(workers)]) for i in range(len(workers))]
    futures = [w.replay.remote(recs, scr, sampling) for w, (recs, scr) in zip(workers, parts) if recs]
    trajs = [t for part in ray.get(futures) for t in part]
    ray.get([w.tool_stats.remote() for w in workers])  # replay's tool calls are not the evaluation's
    kept = [t for t in trajs if t.finish_reason in ("answer", "stop")]
    dropped = Counter(t.finish_reason for t in trajs if t.finish_reason not in ("answer", "stop"))
    return kept, dict(dropped)


def evaluate(workers: list, trainer: Any, records: list[dict], cfg: Any, seed: int) -> dict[str, float]:
    """Roll the current policy out on `records` (cfg.eval: n, sampling) and score cfg.eval.rewards: the reward
    means, the tool-call rate and the share of episodes that closed an answer."""
    from recipes import common
    from rewards.combine import score_batch, summarize

    trainer.sync_weights(workers)
    trajs, _, _ = common.rollout(workers, records, cfg.eval, seed=seed)
    if not trajs:
        return {}
    metrics = {f"eval/{k[len('reward/') :]}": v for k, v in summarize(score_batch(trajs, cfg.eval.rewards)).items()}
    metrics["eval/tool_call_rate"] = sum(1 for t in trajs if t.tool_calls) / len(trajs)
    metrics["eval/answer_rate"] = sum(1 for t in trajs if t.finish_reason == "answer") / len(trajs)
    metrics["eval/samples"] = float(len(trajs))
    return {k: v for k, v in metrics.items() if not k.endswith("_errors")}


def plot_sft(rows: list[dict], out: Path) -> Path:
    """Loss (and learning rate) per step."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in rows if "sft/loss" in r]
    fig, ax = plt.subplots(figsize=(7, 4))
    steps = [r["step"] for r in rows]
    ax.plot(steps, [r["sft/loss"] for r in rows], marker=".", label="loss (token mean)")
    ax.set_xlabel("step")
    ax.set_ylabel("cross-entropy")
    ax.grid(alpha=0.3)
    lr_ax = ax.twinx()
    lr_ax.plot(steps, [r["sft/lr"] for r in rows], color="tab:orange", alpha=0.6, label="lr")
    lr_ax.set_ylabel("learning rate")
    ax.set_title("SFT")
    fig.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out


def write_rows(path: Path, rows: list[dict]) -> None:
    with path.open("a") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")
