"""GRPO training: `rl.grpo` (advantages and loss on verl's core_algos), `rl.batch` (trajectories -> model inputs
and response log-probs), `rl.trainer` (FSDP2 rank actors, reference policy, weight sync, checkpoints) and
`rl.checkpoint` (pickle-free trainer state files). Nothing heavy is imported here."""
