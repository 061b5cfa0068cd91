"""Video-STAR SFT: the cold start. Supervised fine-tuning on tool-using chains of thought, before GRPO.

Each training record carries a `chain` (built by `python -m data_builders.videostar_cot`: a tool call, then what
the real tool output shows, sub-motions, 2-3 candidates, matching scores, the answer). The chains are replayed on
rollout workers through the real tools, so every conversation is tokenised exactly as GRPO samples it; the
trainer ranks (FSDP2 or DeepSpeed ZeRO-2/3) minimise cross-entropy on the assistant's tokens only. At the end the
policy is rolled out on a few records and the format / accuracy rewards and the tool-call rate are logged.
The last checkpoint starts GRPO: `python recipes/videostar_grpo.py init_from=<run_dir>/checkpoint-<N>`.

On one machine (CPU is fine: the embedded default builds chains for the bundled sample data with the template
teacher, then trains the tiny model):

    python recipes/videostar_sft.py                                    # about five minutes on 2 cores
    python recipes/videostar_sft.py --help
    python recipes/videostar_sft.py trainer.strategy=deepspeed trainer.zero_stage=2 run.steps=100

On a Ray cluster (the working directory is shipped to every node; run outputs go to an absolute run_dir):

    ray start --head
    ray job submit --working-dir . -- python recipes/videostar_sft.py \\
        config=recipes/configs/videostar_sft_paper.yaml model.path=/models/Qwen2.5-VL-7B-Instruct \\
        data.train=/data/hmdb51/train_cot.jsonl trainer.world_size=8 trainer.num_gpus=1 \\
        rollout.tools.action_explanation.kb=/data/kb.jsonl run.run_dir=/shared/runs/vstar_sft

`recipes/configs/videostar_sft_paper.yaml` holds the paper's SFT settings (lr 5e-7, batch 8, one pass over the
chains), each value citing the paper or the authors' release; the embedded default's rate is tuned for the tiny
random model, never for a real one.

Config: recipes/sft.py's SftConfig, then `recipes/configs/videostar_sft.yaml`, then `key=value` overrides; the
system prompt is `recipes/prompts/videostar_system.txt` (the GRPO recipe's). The resolved config is
`<run_dir>/config.yaml`.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from a checkout or a Ray job

from recipes import sft  # noqa: E402
from recipes.config import cli  # noqa: E402

DEFAULT_YAML = Path(__file__).with_name("configs") / "videostar_sft.yaml"


def main(argv: list[str]) -> dict[str, Any]:
    return sft.main(argv, DEFAULT_YAML, "videostar_sft", __doc__)


if __name__ == "__main__":
    cli(main)
