"""A reward plugin that lives outside the library and is named by dotted path (`tests.recipes.token_reward:...`).

It rewards the share of even token ids among the model's own tokens: under the untrained tiny model that share
is about one half and varies from completion to completion, so GRPO has a signal to climb from step one.
"""


def even_token_share(traj, record, **_):
    tokens = [t for t, m in zip(traj.response_ids, traj.response_mask) if m]
    return sum(1 for t in tokens if t % 2 == 0) / len(tokens) if tokens else None
