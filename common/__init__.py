"""Runtime pieces every layer may import: the record schema, the sentence embeddings, the OpenAI-compatible
client, the embedded default (the tiny model, the sample data and the stick figures it renders, the class lists),
the action knowledge base, the checkpoint completeness marker, the offline environment of a run, and the error of a
wait that timed out.

Imports run one way: `envs/`, `rewards/`, `rollout/`, `rl/`, `eval/`, `recipes/` and the offline builders of
`data_builders/` may import `common/`, while `common/` imports none of those packages.
"""
