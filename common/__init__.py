"""Runtime pieces every layer may import: the record schema, the sentence embeddings, the OpenAI-compatible
client, the embedded default (the tiny model, the sample data and the stick figures it renders, the class lists)
and the action knowledge base.

Imports run one way: `envs/`, `rewards/`, `rollout/`, `rl/`, `eval/`, `recipes/` and the offline builders of
`data_builders/` may import `common/`, while `common/` imports none of those packages.
"""
