"""A reward plugin that lives outside the library and is named by dotted path (`tests.recipes.token_reward:...`).

`embedding_side_share` rewards the share of the model's own tokens whose *initial* embedding has a positive first
coordinate: about half the vocabulary, so under the untrained tiny model the share is about one half and varies
from completion to completion (GRPO has a signal from step one), and the set is linearly separable in the
(tied) output layer, so a few policy-gradient steps can move it.
"""

import numpy as np

_SETS: dict[str, np.ndarray] = {}


def _token_set(model_dir: str) -> np.ndarray:
    if model_dir not in _SETS:
        from safetensors.numpy import load_file

        weights = load_file(f"{model_dir}/model.safetensors")
        _SETS[model_dir] = weights["model.embed_tokens.weight"][:, 0] > 0
    return _SETS[model_dir]


def embedding_side_share(traj, record, model_dir: str):
    tokens = [t for t, m in zip(traj.response_ids, traj.response_mask) if m]
    if not tokens:
        return None
    return float(_token_set(model_dir)[tokens].mean())
