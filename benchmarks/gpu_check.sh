#!/usr/bin/env bash
# The trainer's GPU check in one go, on one GPU (planned for an H200, under 8 minutes): the Qwen2.5-VL-7B shape,
# random-initialised (nothing downloaded), FSDP2 over NCCL on one rank, 8 rollouts of 16 frames at 448 px with
# 4k-token responses per step. It prints peak memory (torch.cuda.max_memory_allocated) with and without activation
# checkpointing, seconds per step, MFU, and the share of weights changed after one step at lr 1e-6 under
# bf16-mixed and bf16-pure, then the computed memory plan for 8 x 80 GB.
#
# fp32 master weights and AdamW state alone are 16 bytes per parameter, ~133 GB for the 8.3 B parameters: one
# card cannot hold the whole model and its activations, so `--layers auto` keeps the vision tower and the
# vocabulary whole and takes the most decoder layers whose planned peak, for every run, stays under 85% of the
# card; it prints the count it chose. Needs torch and transformers only (without verl the GRPO loss is the
# benchmark's torch transcription of it).
#
# First (under a minute) `benchmarks/engine_agreement.py` on CUDA in bf16: the shared rope positions against
# transformers' own, and the trainer's log-probs of what `generate` sampled.
#
#     bash benchmarks/gpu_check.sh                     # extra arguments go to benchmarks/trainer_scale.py
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTORCH_CUDA_ALLOC_CONF="${PYTORCH_CUDA_ALLOC_CONF:-expandable_segments:True}"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
timeout 60 "${PYTHON:-python3}" benchmarks/engine_agreement.py --device cuda --dtype bfloat16 || echo "engine_agreement failed"
exec timeout "${GPU_CHECK_TIMEOUT_S:-410}" "${PYTHON:-python3}" benchmarks/trainer_scale.py \
    --shape 7b --layers auto --world-size 1 --device cuda \
    --frames 16 --frame-size 448 --response-tokens 4096 --group 8 --steps 2 --lr 1e-6 \
    --options precision,activation_checkpointing --precisions bf16-mixed,bf16-pure "$@"
